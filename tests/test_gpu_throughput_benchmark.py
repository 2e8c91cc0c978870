"""benchmarks/gpu_throughput.py runs end to end on the CPU at small sizes (a smoke test: the
GPU figures come from running it on a GPU machine, see benchmarks/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_throughput_benchmark_runs_on_cpu(tmp_path):
    output = tmp_path / "result.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", "cpu",
               "--depth", "18", "--image-size", "32", "--batch-size", "8", "--images", "64",
               "--steps", "2", "--warmup-steps", "1", "--workers", "1", "--no-compile",
               "--no-bf16", "--output", str(output)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    measures = [row["measure"] for row in json.loads(output.read_text())["rows"]]
    assert measures == [
        "data pipeline alone, cpu",
        "data pipeline alone, gpu",
        "SimCLR step alone, eager",
        "end to end (gpu data path, eager)",
        "supervised torchvision ResNet-18 step",
    ]
    assert "end-to-end SimCLR views/s vs supervised images/s" in done.stdout
    for row in json.loads(output.read_text())["rows"]:
        assert row["seconds_per_step"] > 0
