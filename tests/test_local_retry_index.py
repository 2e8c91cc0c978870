"""kfp.local retries a task (set_retry) and, inside argo_retry_index(), tells each attempt its
number as KFP_RETRY_INDEX, the way Argo's {{retries}} does on a cluster. Real kfp.local runs
of a real component in subprocesses; these tests also fail if a kfp release changes how
kfp.local runs attempts (the contract pipelines/local_retry_index.py relies on)."""

import os

import pytest
from kfp import dsl, local

from pipelines.local_retry_index import argo_retry_index
from simclrv2.training.fault_injection import InjectedFailureError, fail_on_first_attempt


@dsl.component(base_image="python:3.11")
def flaky(log_path: str, name: str) -> str:
    """Fails on attempt 0; records every attempt's KFP_RETRY_INDEX."""
    import os

    index = os.environ.get("KFP_RETRY_INDEX", "unset")
    with open(log_path, "a") as file:
        file.write(f"{name}:{index}\n")
    if index in ("0", "unset"):
        raise RuntimeError(f"attempt {index} fails")
    return index


@dsl.pipeline
def two_flaky_tasks(log_path: str) -> str:
    first = flaky(log_path=log_path, name="a").set_retry(2, backoff_duration="0s")
    second = flaky(log_path=log_path, name="b").set_retry(2, backoff_duration="0s")
    second.after(first)
    return second.output


def _run(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "r"))
    log = tmp_path / "attempts.txt"
    return two_flaky_tasks(log_path=str(log)), log


def test_each_attempt_gets_its_argo_retry_index(tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_RETRY_INDEX", raising=False)
    with argo_retry_index():
        result, log = _run(tmp_path)
    assert result.output == "1"
    assert log.read_text().split() == ["a:0", "a:1", "b:0", "b:1"]  # counted per task
    assert "KFP_RETRY_INDEX" not in os.environ  # restored afterwards


def test_kfp_local_alone_does_not_number_attempts(tmp_path, monkeypatch):
    """Why the wrapper exists: if this starts failing, kfp.local numbers attempts itself."""
    monkeypatch.delenv("KFP_RETRY_INDEX", raising=False)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "r"),
        raise_on_error=False,
    )
    log = tmp_path / "attempts.txt"
    two_flaky_tasks(log_path=str(log))
    assert log.read_text().split() == ["a:unset", "a:unset", "a:unset"]


def test_injected_failure_only_on_the_first_attempt_and_only_once(monkeypatch):
    monkeypatch.delenv("KFP_RETRY_INDEX", raising=False)
    fail_on_first_attempt("pretrain", step=2, started_at=0, inject_at=0)  # off
    fail_on_first_attempt("pretrain", step=1, started_at=0, inject_at=2)  # not yet
    with pytest.raises(InjectedFailureError, match=r"\[pretrain\] .* step 4 .*=2"):
        fail_on_first_attempt("pretrain", step=4, started_at=0, inject_at=2)  # next checkpoint
    fail_on_first_attempt("pretrain", step=6, started_at=4, inject_at=2)  # resumed past it
    monkeypatch.setenv("KFP_RETRY_INDEX", "1")
    fail_on_first_attempt("pretrain", step=2, started_at=0, inject_at=2)  # a retry
    monkeypatch.setenv("KFP_RETRY_INDEX", "0")
    with pytest.raises(InjectedFailureError):
        fail_on_first_attempt("pretrain", step=2, started_at=0, inject_at=2)
