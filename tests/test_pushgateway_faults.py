"""A Pushgateway that hangs or goes down never slows or stops training (issue 15).

Both against real endpoints: a loopback socket that accepts and never answers (a hung
gateway) and a real Pushgateway process stopped and started again on its port. The
"training loop" is a loop of updates with a fixed step time; the time spent inside
``TrainingMetrics.update`` is what training would lose.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from simclrv2.training.metrics import TrainingMetrics
from tests.pushgateway import find_pushgateway_binary, start_pushgateway
from tests.silent_server import SilentServer

STEP_S = 0.01  # the pretend optimizer step


def _train(metrics: TrainingMetrics, steps: int, first_step: int = 1) -> list[float]:
    """Run ``steps`` updates ``STEP_S`` apart; the seconds each update call took."""
    spent = []
    for step in range(first_step, first_step + steps):
        time.sleep(STEP_S)
        started = time.perf_counter()
        metrics.update(step, 0, images=32, loss=1.0 / step)
        spent.append(time.perf_counter() - started)
    return spent


def test_a_hanging_gateway_costs_the_loop_one_short_wait_and_is_counted() -> None:
    with SilentServer() as gateway:
        metrics = TrainingMetrics(
            "pretrain",
            f"hang-{uuid.uuid4().hex[:8]}",
            pushgateway_url=gateway.url,
            push_interval_s=0.2,
            push_timeout_s=1.0,
            push_wait_s=0.2,
        )
        started = time.monotonic()
        spent = _train(metrics, steps=250)  # about 3 s: three pushes time out meanwhile
        loop_s = time.monotonic() - started
        closing = time.monotonic()
        metrics.close()
        close_s = time.monotonic() - closing

    # One wait of push_wait_s when the gateway first stalls; every other update is free.
    assert max(spent) < 0.2 + 0.15, max(spent)
    assert sum(spent) < 0.2 + 0.25, sum(spent)
    assert sorted(spent)[len(spent) // 2] < 0.005  # the median update: no network at all
    assert gateway.connections >= 3  # it kept trying, in the background
    assert metrics.push_failure_count >= 3  # every timed-out push is counted
    assert metrics.push_skipped_count >= 3  # pushes due while one hung were not queued
    assert metrics.push_count == 0
    # Closing waits for the push in flight, then the final push: each bounded by the timeout.
    assert close_s < 2 * (1.0 + 1.0) + 0.5, close_s
    print(
        f"\nhanging gateway: loop {loop_s:.2f} s for 250 x {STEP_S} s steps, "
        f"updates {sum(spent):.3f} s in all (max {max(spent):.3f} s), "
        f"{metrics.push_failure_count} failed, {metrics.push_skipped_count} skipped, "
        f"close {close_s:.2f} s"
    )


@pytest.mark.pushgateway
def test_a_gateway_that_goes_down_and_comes_back_gets_the_latest_values(
    tmp_path: Path,
) -> None:
    if find_pushgateway_binary() is None:
        pytest.skip("no Prometheus Pushgateway binary (apt-get install prometheus-pushgateway)")
    gateway = start_pushgateway(tmp_path)
    run_id = f"down-{uuid.uuid4().hex[:8]}"
    try:
        metrics = TrainingMetrics(
            "finetune", run_id, pushgateway_url=gateway.url, push_interval_s=0.05
        )
        _train(metrics, steps=5)
        assert metrics.push_count >= 1 and metrics.push_failure_count == 0

        gateway.stop()
        spent = _train(metrics, steps=30, first_step=6)  # down: connections refused
        assert metrics.push_failure_count >= 3
        assert max(spent) < 0.25, max(spent)  # a refused connection: milliseconds, no wait

        gateway.start()
        pushed_before = metrics.push_count
        _train(metrics, steps=10, first_step=36)
        assert metrics.push_count > pushed_before
        metrics.close()
        samples = gateway.get("/metrics")
        step_line = next(
            line
            for line in samples.splitlines()
            if line.startswith("simclrv2_train_step{") and f'run="{run_id}"' in line
        )
        assert float(step_line.rsplit(" ", 1)[1]) == 45  # the last step, after the outage
    finally:
        gateway.stop()
