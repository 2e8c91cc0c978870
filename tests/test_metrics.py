"""TrainingMetrics against a real Pushgateway, in serve mode, disabled, and with a dead gateway."""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simclrv2.training.metrics import TrainingMetrics
from tests.pushgateway import Pushgateway, free_loopback_port


def unique_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def samples_of_group(metrics_text: str, run_id: str) -> dict[str, tuple[float, dict[str, str]]]:
    """Sample name -> (value, labels) for every sample the gateway holds for ``run_id``."""
    found: dict[str, tuple[float, dict[str, str]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("run") == run_id:
                found[sample.name] = (sample.value, dict(sample.labels))
    return found


def values_of_group(gateway: Pushgateway, run_id: str) -> dict[str, float]:
    samples = samples_of_group(gateway.get("/metrics"), run_id)
    return {name: value for name, (value, _labels) in samples.items()}


def feed_three_steps(metrics: TrainingMetrics) -> None:
    """Three steps of 256 images; the last one sets the values the tests check."""
    metrics.update(1, 0, images=256, loss=9.5, learning_rate=0.1, total_steps=30)
    metrics.update(2, 0, images=256, loss=9.0, contrastive_accuracy=0.1)
    metrics.update(
        3,
        1,
        images=256,
        loss=8.25,
        learning_rate=0.3,
        contrastive_accuracy=0.25,
        accuracy=0.5,
        images_per_second=812.5,
        eta_seconds=42.0,
    )


@pytest.mark.pushgateway
def test_pushed_values_and_labels_read_back_from_the_gateway(pushgateway: Pushgateway) -> None:
    run_id = unique_run_id()
    metrics = TrainingMetrics(
        "pretrain", run_id, pushgateway_url=pushgateway.url, push_interval_s=0
    )
    before = time.time()
    feed_three_steps(metrics)
    assert metrics.mode == "push"
    assert metrics.push_count == 3 and metrics.push_failure_count == 0

    samples = samples_of_group(pushgateway.get("/metrics"), run_id)
    values = {name: value for name, (value, _labels) in samples.items()}
    assert values["simclrv2_train_loss"] == 8.25
    assert values["simclrv2_learning_rate"] == 0.3
    assert values["simclrv2_contrastive_accuracy_ratio"] == 0.25
    assert values["simclrv2_train_accuracy_ratio"] == 0.5
    assert values["simclrv2_images_per_second"] == 812.5
    assert values["simclrv2_eta_seconds"] == 42.0
    assert values["simclrv2_train_step"] == 3
    assert values["simclrv2_train_planned_steps"] == 30  # set once, kept
    assert values["simclrv2_epoch"] == 1
    assert values["simclrv2_train_images_total"] == 3 * 256
    assert before - 1 <= values["simclrv2_last_update_timestamp_seconds"] <= time.time() + 1
    assert "push_time_seconds" in values  # the gateway's own record of our push
    _value, labels = samples["simclrv2_train_loss"]
    assert labels["job"] == "simclrv2"
    assert labels["run"] == run_id
    assert labels["step"] == "pretrain"

    metrics.close(delete_on_close=True)
    assert values_of_group(pushgateway, run_id) == {}


@pytest.mark.pushgateway
def test_two_runs_are_separate_groups_and_delete_removes_only_its_own(
    pushgateway: Pushgateway,
) -> None:
    first_id, second_id = unique_run_id(), unique_run_id()
    first = TrainingMetrics("finetune", first_id, pushgateway_url=pushgateway.url)
    second = TrainingMetrics("finetune", second_id, pushgateway_url=pushgateway.url)
    first.update(5, 0, images=10, loss=1.5)
    second.update(7, 2, images=20, loss=0.5)

    first_values = values_of_group(pushgateway, first_id)
    second_values = values_of_group(pushgateway, second_id)
    assert (first_values["simclrv2_train_loss"], first_values["simclrv2_train_step"]) == (1.5, 5)
    assert (second_values["simclrv2_train_loss"], second_values["simclrv2_train_step"]) == (0.5, 7)
    assert second_values["simclrv2_train_images_total"] == 20
    assert math.isnan(second_values["simclrv2_contrastive_accuracy_ratio"])  # never given

    first.close(delete_on_close=True)
    assert values_of_group(pushgateway, first_id) == {}
    assert values_of_group(pushgateway, second_id)["simclrv2_train_loss"] == 0.5
    second.close(delete_on_close=True)
    assert values_of_group(pushgateway, second_id) == {}


@pytest.mark.pushgateway
def test_url_from_environment_and_final_push_on_leaving_the_context(
    pushgateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    run_id = unique_run_id()
    with TrainingMetrics("distill", run_id, push_interval_s=3600) as metrics:
        metrics.update(1, 0, images=8, loss=2.0)
        metrics.update(2, 0, images=8, loss=1.0)  # not pushed yet: the interval has not passed
        assert values_of_group(pushgateway, run_id)["simclrv2_train_loss"] == 2.0
    # Leaving the context pushed the last values (and kept the group).
    values = values_of_group(pushgateway, run_id)
    assert values["simclrv2_train_loss"] == 1.0
    assert values["simclrv2_train_images_total"] == 16
    TrainingMetrics("distill", run_id, pushgateway_url=pushgateway.url).close(
        final=False, delete_on_close=True
    )
    assert values_of_group(pushgateway, run_id) == {}

    # An explicit empty URL turns pushing off even with the variable set.
    assert TrainingMetrics("distill", run_id, pushgateway_url="").mode == "off"


@pytest.mark.pushgateway
def test_push_interval_limits_the_pushes(pushgateway: Pushgateway) -> None:
    run_id = unique_run_id()
    metrics = TrainingMetrics(
        "pseudolabel", run_id, pushgateway_url=pushgateway.url, push_interval_s=3600
    )
    for step in range(1, 21):
        metrics.update(step, 0, images=4)
    assert metrics.push_count == 1  # the first update only
    assert values_of_group(pushgateway, run_id)["simclrv2_train_step"] == 1
    assert metrics.push() is True
    assert metrics.push_count == 2
    assert values_of_group(pushgateway, run_id)["simclrv2_train_step"] == 20
    metrics.close(delete_on_close=True)
    assert metrics.push_count == 3  # the final push


def test_serve_mode_serves_metrics_on_the_port() -> None:
    port = free_loopback_port()
    metrics = TrainingMetrics(
        "evaluate",
        unique_run_id(),
        pushgateway_url="",
        serve_port=port,
        serve_address="127.0.0.1",
    )
    try:
        assert metrics.mode == "serve" and metrics.server_port == port
        metrics.update(4, 1, images=100, loss=0.75, accuracy=0.875, total_steps=10)
        metrics.update(5, 1, images=50)
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode("utf-8")
    finally:
        metrics.close()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values["simclrv2_train_loss"] == 0.75
    assert values["simclrv2_train_accuracy_ratio"] == 0.875
    assert values["simclrv2_train_step"] == 5
    assert values["simclrv2_train_planned_steps"] == 10
    assert values["simclrv2_epoch"] == 1
    assert values["simclrv2_train_images_total"] == 150
    assert metrics.push_count == 0
    # close() stopped the server.
    assert metrics.server_port is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.pushgateway
def test_disabled_rank_neither_pushes_nor_serves(pushgateway: Pushgateway) -> None:
    run_id = unique_run_id()
    port = free_loopback_port()
    metrics = TrainingMetrics(
        "pretrain",
        run_id,
        pushgateway_url=pushgateway.url,
        serve_port=port,
        serve_address="127.0.0.1",
        push_interval_s=0,
        enabled=False,
    )
    with metrics:
        metrics.update(1, 0, images=32, loss=3.0)
        assert metrics.push() is False
    metrics.close(delete_on_close=True)
    assert metrics.mode == "off" and metrics.server_port is None
    assert metrics.push_count == 0 and metrics.push_failure_count == 0
    assert values_of_group(pushgateway, run_id) == {}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_unreachable_gateway_never_raises_counts_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed_port = free_loopback_port()  # nothing listens there
    metrics = TrainingMetrics(
        "pretrain",
        unique_run_id(),
        pushgateway_url=f"http://127.0.0.1:{closed_port}",
        push_interval_s=0,
        push_timeout_s=2,
    )
    with caplog.at_level(logging.WARNING, logger="simclrv2.training.metrics"):
        for step in range(1, 4):
            metrics.update(step, 0, images=16, loss=1.0)
        assert metrics.push() is False
        metrics.close(delete_on_close=True)
    # Three updates, one explicit push, the final push and the delete: all failed.
    assert metrics.push_failure_count == 6
    assert metrics.push_count == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate-limited: one per minute
    assert f"127.0.0.1:{closed_port}" in warnings[0].getMessage()
    assert "failed" in warnings[0].getMessage()


def test_taken_serve_port_warns_and_does_not_serve(caplog: pytest.LogCaptureFixture) -> None:
    port = free_loopback_port()
    first = TrainingMetrics(
        "evaluate", unique_run_id(), pushgateway_url="", serve_port=port, serve_address="127.0.0.1"
    )
    try:
        with caplog.at_level(logging.WARNING, logger="simclrv2.training.metrics"):
            second = TrainingMetrics(
                "evaluate",
                unique_run_id(),
                pushgateway_url="",
                serve_port=port,
                serve_address="127.0.0.1",
            )
        assert second.mode == "off"
        second.update(1, 0, images=1)
        second.close()
        assert any("cannot serve" in r.getMessage() for r in caplog.records)
    finally:
        first.close()


def test_empty_run_id_is_refused() -> None:
    with pytest.raises(ValueError, match="run_id"):
        TrainingMetrics("pretrain", "")
