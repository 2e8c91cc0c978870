"""benchmarks/label_efficiency.py runs end to end at toy size, resumes from its results.json,
and prints the table with the goal (a smoke test: the table's figures come from running it at
full size, see benchmarks/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHRINK = [  # seconds of training per stage on two CPU cores
    "data.num_workers=0", "data.shuffle_buffer=32", "model.encoder.width_multiplier=0.125",
    "pretrain.optimizer.batch_size=32", "pretrain.knn.every_epochs=0",
    "finetune.optimizer.epochs=1", "finetune.optimizer.batch_size=8",
    "distill.optimizer.batch_size=32", "runtime.bf16=false",
]  # fmt: skip


@pytest.mark.slow
def test_label_efficiency_runs_resumes_and_prints_the_table(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "label_efficiency.py"),
               "--datasets", "fashion-mnist", "--fractions", "0.05", "0.5", "--seeds", "0",
               "--pretrain-epochs", "1", "--sample-limit", "200", "--supervised-steps", "3",
               "--grid-steps", "2", "--learning-rates", "0.1", "0.4", "--weight-decays", "5e-4",
               "--no-ceiling", "--output", str(tmp_path)]  # fmt: skip
    for setting in SHRINK:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    cell = results["fashion-mnist/0.05/s0/simclr-e1"]
    for field in ("teacher", "student", "student_stored", "student_online", "linear", "knn"):
        assert 0.0 <= cell[field] <= 1.0, field
    assert cell["student"] == cell["student_online"]  # the first mode (the default) is "student"
    baseline = results["fashion-mnist/0.5/s0/supervised"]
    assert set(baseline["grid"]) == {"0.1/0.0005", "0.4/0.0005"} and baseline["grid_steps"] == 2
    assert f"{baseline['lr']:g}/{baseline['weight_decay']:g}" in baseline["grid"]
    assert len(baseline["commit"]) >= 7 and baseline["machine"]
    assert "student online e1" in done.stdout and "goal (e1): student at 0.05" in done.stdout
    table = (tmp_path / "table.md").read_text()  # the README's table, from results.json
    row = next(line for line in table.splitlines() if line.startswith("| fashion-mnist | 5 % |"))
    assert f"| {100 * cell['student_online']:.2f} |" in row and "| 1 epochs |" in row
    assert baseline["commit"] in table and baseline["machine"] in table
    pretrained = results["fashion-mnist/s0/pretrain-e1"]  # the pretraining's time is recorded
    assert pretrained["steps"] >= 1 and pretrained["seconds"] > 0
    assert f"fashion-mnist/s0/pretrain-e1: {pretrained['steps']:,} steps in" in table

    # A rerun finds every result and trains nothing.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[label-efficiency] fashion-mnist/" not in again.stdout  # no new result
    assert "] budget:" not in again.stdout
    assert json.loads((tmp_path / "results.json").read_text()) == results

    # A results.json alone (as kept in benchmarks/measured/, without the models) is enough too:
    # the cells it holds need no pretraining.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "results.json").write_text(json.dumps(results))
    command[command.index("--output") + 1] = str(kept)
    alone = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-4000:]
    assert "] budget:" not in alone.stdout
    assert "[label-efficiency] fashion-mnist/" not in alone.stdout
    assert (kept / "table.md").read_text() == table
