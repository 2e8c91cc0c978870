"""Every pipeline step survives SIGKILL: the restarted step ends exactly as an uninterrupted one.

For each step (shard, pretrain, finetune, the supervised baseline, pseudolabel, distill,
evaluate) on a tiny Fashion-MNIST dataset on a real S3 server (SeaweedFS):
1. an uninterrupted run gives the reference outputs (and its duration);
2. the step then lives the life of a job on a preemptible node: it is started as a real
   process and killed with SIGKILL, restarted on the same output and killed again, and so
   on, then runs to the end. The first kills come at exact points (half-way through writing
   a checkpoint, a data shard or the model; right after a sidecar shard is published and
   before its record; after the shard step's part file and the pseudolabel step's config,
   before the manifest; after a training step's history, before its model), then at moments
   drawn uniformly from the reference's duration by a seeded generator (printed);
3. after every kill, nothing the attempt left under a final name differs from the reference
   (no partial file ever appears; every sealed checkpoint passes its content check); at the
   end every output file equals the reference's byte for byte: weights, checkpoints and
   their digests, data and sidecar shards, histories, metrics, plots, reports and
   manifests. Text files are compared after replacing the output's own URI (manifests and
   records name their location) and dropping the manifest's `created_at` (the wall-clock
   time of publishing).

Steps start in a fork server (tests/fork_server.py) that imported torch once, so an attempt
costs the step's work, not an interpreter start. By default each step is killed at its exact
points and at SIMCLRV2_FAULT_KILLS=1 random moment from SIMCLRV2_FAULT_SEED (default 15). A
step's life ends at the first attempt that finishes before its kill (a resumed attempt has
less left to do), so a longer soak, by hand, runs many seeds with a few kills each (about a
minute per seed on a 2-core machine):

    for seed in $(seq 1 20); do SIMCLRV2_FAULT_SEED=$seed SIMCLRV2_FAULT_KILLS=5 \
        .venv/bin/pytest tests/test_preemption.py -s -q || break; done
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from simclrv2.storage.object_store import ObjectStore
from simclrv2.training.checkpoint import CheckpointStore
from tests.fork_server import ForkServer

pytestmark = [pytest.mark.s3, pytest.mark.faults, pytest.mark.slow]

SEED = int(os.environ.get("SIMCLRV2_FAULT_SEED", "15"))
KILLS = int(os.environ.get("SIMCLRV2_FAULT_KILLS", "1"))  # random moments per step

SETTINGS = {
    # 16 px and the ImageNet stem (stride 4): the least ResNet compute there is.
    "data": {"image_size": 16, "image_mode": "gray", "num_workers": 2, "shuffle_buffer": 16},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125, "cifar_stem": False}},
    "pretrain": {
        "optimizer": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0.5},
        "temperature": 0.5, "color_jitter_strength": 0.5,
    },
    "finetune": {"optimizer": {"epochs": 3, "batch_size": 4, "warmup_epochs": 0.0}},
    "supervised": {"optimizer": {"epochs": 3, "batch_size": 4, "warmup_epochs": 0.0,
                                 "min_steps": 0}},
    "distill": {"optimizer": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0.0}},
    # Every checkpoint kept, so that whatever a killed run leaves has its twin in the reference.
    "runtime": {"checkpoint_every_steps": 2, "keep_checkpoints": 100, "log_every_steps": 2,
                "bf16": False, "channels_last": False},
}  # fmt: skip

# Exact points: (what the file being written is called, when the process dies).
CHECKPOINT_MID_WRITE = ("step-000000004.pt", "mid-write")
# In the order they happen: each attempt resumes and runs on to the next one.
EXACT_POINTS = {
    "shard": [("unlabeled-000-00001.tar", "mid-write"),
              ("part-000-of-001.json", "after-publish")],  # shards done, manifest not written
    "pretrain": [CHECKPOINT_MID_WRITE],
    "finetune": [("model.pt", "mid-write")],
    "supervised": [("history.json", "after-publish")],  # outputs written, model.pt not yet
    "pseudolabel": [("pseudo-00001.tar", "after-publish"),  # its _done record not yet
                    ("config.yaml", "after-publish")],  # every sidecar done, manifest not
    "distill": [CHECKPOINT_MID_WRITE, ("model.pt", "mid-write")],
    "evaluate": [("metrics.json", "mid-write")],
}  # fmt: skip
STEPS = list(EXACT_POINTS)
NEEDS = {"shard": [], "pretrain": ["shard"], "finetune": ["pretrain"], "supervised": ["shard"],
         "pseudolabel": ["finetune"], "distill": ["finetune", "pseudolabel"],
         "evaluate": ["distill"]}  # fmt: skip


ATTEMPT_LIMIT_S = 300


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Reference:
    output: str
    seconds: float


class Chain:
    """The steps' reference outputs, computed once each, in pipeline order, on S3."""

    def __init__(self, server: ForkServer, store: ObjectStore, base: str, logs: Path):
        self.server, self.store, self.base, self.logs = server, store, base, logs
        self.references: dict[str, Reference] = {}

    def job(self, step: str, output: str) -> dict:
        refs = {name: ref.output for name, ref in self.references.items()}
        settings = json.loads(json.dumps(SETTINGS))
        inputs: dict = {}
        if step == "shard":
            inputs = {"shard_samples": 8, "sample_limit": 32, "num_parts": 1, "per_class": 1}
        else:
            settings["data"]["dataset"] = refs["shard"]
        if step == "finetune":
            inputs = {"pretrained": f"{refs['pretrain']}/model.pt"}
        if step == "supervised":
            settings["finetune"]["from_scratch"] = True
        if step == "pseudolabel":
            inputs = {"teacher": f"{refs['finetune']}/model.pt", "batch_size": 8}
        if step == "distill":
            inputs = {
                "teacher": f"{refs['finetune']}/model.pt",
                "pseudo_labels": refs["pseudolabel"],
            }
        if step == "evaluate":
            inputs = {"models": {"student": f"{refs['distill']}/model.pt"}, "batch_size": 16}
        return {"step": step, "settings": settings, "output": output, **inputs}

    def run(self, step: str, output: str, name: str, kill_after: float | None = None,
            die_at: tuple[str, str] | None = None) -> int:  # fmt: skip
        """One attempt; its return code (-9: killed). kill_after: SIGKILL after this many
        seconds (if still running); die_at: (file name pattern, when) it kills itself."""
        job = self.job(step, output)
        if die_at is not None:
            job["die_at"] = {"pattern": die_at[0], "when": die_at[1]}
        log = self.logs / f"{step}-{name}.log"
        pid = self.server.start(job, log)
        # A hung attempt would hang the test: it gets ATTEMPT_LIMIT_S, then it is killed too.
        hung = threading.Event()
        watchdog = threading.Timer(ATTEMPT_LIMIT_S, lambda: (hung.set(), _kill_quietly(pid)))
        watchdog.start()
        try:
            if kill_after is not None:
                time.sleep(kill_after)
                _kill_quietly(pid)
            code = self.server.wait(pid)
        finally:
            watchdog.cancel()
        assert not hung.is_set(), f"{step} {name} hung for {ATTEMPT_LIMIT_S} s: {log.read_text()}"
        assert code in (0, -signal.SIGKILL), log.read_text()
        return code

    def reference(self, step: str) -> Reference:
        if step not in self.references:
            for upstream in NEEDS[step]:
                self.reference(upstream)
            output = f"{self.base}/reference/{step}"
            started = time.monotonic()
            assert self.run(step, output, "reference") == 0
            self.references[step] = Reference(output, time.monotonic() - started)
        return self.references[step]


@pytest.fixture(scope="module")
def chain(s3_server, tmp_path_factory):
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    settings = s3_server.settings
    env = {"AWS_ENDPOINT_URL": settings.endpoint_url,
           "AWS_ACCESS_KEY_ID": settings.access_key_id,
           "AWS_SECRET_ACCESS_KEY": settings.secret_access_key,
           "PUSHGATEWAY_URL": ""}  # fmt: skip
    server = ForkServer(env)
    try:
        yield Chain(
            server, ObjectStore(settings), f"s3://{bucket}", tmp_path_factory.mktemp("logs")
        )
    finally:
        server.close()
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=item["Key"])
            client.delete_bucket(Bucket=bucket)


def _files(store: ObjectStore, output: str) -> dict[str, bytes]:
    """Relative name -> content of every file under `output`, URIs of `output` replaced by
    <output> and manifests' created_at dropped in text files."""
    files = {}
    for uri, _ in store.list_files(output):
        name = uri[len(output) + 1 :]
        content = store.read_bytes(uri)
        if name.endswith((".json", ".yaml", ".html")):
            text = content.decode().replace(output, "<output>")
            text = re.sub(r'\n\s*"created_at": "[^"]*",?', "", text)
            content = text.encode()
        files[name] = content
    return files


def _check_left_behind(chain: Chain, step: str, output: str, reference: dict[str, bytes]) -> None:
    """What a killed attempt left: only files the reference also has, each identical; every
    sealed checkpoint passes its content check."""
    left = _files(chain.store, output)
    extra = sorted(set(left) - set(reference))
    assert not extra, (
        f"{step}: a killed attempt left files an uninterrupted run never writes: {extra}"
    )
    differing = sorted(name for name in left if left[name] != reference[name])
    assert not differing, f"{step}: a killed attempt published files that differ: {differing}"
    checkpoints = CheckpointStore(f"{output}/checkpoints", chain.store)
    for step_number in checkpoints.steps():
        checkpoints.load(checkpoints.uri_for_step(step_number))


def _resume_point(log: Path) -> str:
    """Where an attempt started: a training step's checkpoint, the pseudolabel step's shards
    already done, else the start (or nothing said, when it was killed before saying it)."""
    text = log.read_text()
    if not text.strip():
        return "? (killed before its first message)"
    found = re.findall(r"resuming from \S+/(step-\d+)\.pt", text)
    done = re.findall(r"shard\(s\), (\d+) already done", text)
    if found:
        return found[-1]
    return f"{done[-1]} sidecar shard(s) done" if done and done[-1] != "0" else "the start"


@pytest.mark.parametrize("step", STEPS)
def test_a_step_killed_again_and_again_ends_with_the_uninterrupted_result(chain, step):
    reference = chain.reference(step)
    expected = _files(chain.store, reference.output)
    rng = random.Random(f"{SEED}:{step}")
    moments = [round(rng.uniform(0.0, reference.seconds), 3) for _ in range(KILLS)]
    print(f"\n[faults] {step}: reference {reference.seconds:.1f} s, {len(expected)} files; "
          f"SIMCLRV2_FAULT_SEED={SEED}: kill moments (s) {moments}")  # fmt: skip
    faults = [{"die_at": point} for point in EXACT_POINTS[step]]
    faults += [{"kill_after": moment} for moment in moments]
    output = f"{chain.base}/trials/{step}"
    finished = False
    for number, fault in enumerate(faults):
        name = f"attempt-{number}"
        finished = chain.run(step, output, name, **fault) == 0
        what = fault.get("die_at") or f"SIGKILL at {fault['kill_after']} s"
        if "die_at" in fault:
            assert not finished, f"{step}: the attempt never reached {what}"
        _check_left_behind(chain, step, output, expected)
        print(f"[faults] {step} {name}: from {_resume_point(chain.logs / f'{step}-{name}.log')}, "
              f"{'finished before the kill' if finished else 'killed'} ({what})")  # fmt: skip
        if finished:
            break
    if not finished:
        assert chain.run(step, output, "last") == 0
        print(f"[faults] {step} last: from {_resume_point(chain.logs / f'{step}-last.log')}")
    got = _files(chain.store, output)
    assert sorted(got) == sorted(expected), f"{step}: other files than an uninterrupted run"
    differing = sorted(name for name in got if got[name] != expected[name])
    assert not differing, (
        f"{step}: the restarted run differs from an uninterrupted one in {differing}"
    )
