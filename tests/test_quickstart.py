"""The `make run` job end to end on real Fashion-MNIST, shrunk to seconds."""

import json

import pytest

from simclrv2.cli import main
from simclrv2.datasets.fashion_mnist import CLASSES


@pytest.mark.slow
def test_quickstart_cli_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "quickstart",
            "--output-dir", str(out),
            "--unlabeled-images", "512",
            "--pretrain-epochs", "1",
            "--pretrain-batch-size", "128",
            "--label-fraction", "0.002",
            "--finetune-epochs", "2",
            "--test-images", "300",
            "--width-multiplier", "0.125",
            "--num-workers", "0",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labeled_images"] == 120  # 0.2% of 60,000, 12 per class
    for model in ("simclrv2_finetuned", "supervised_baseline"):
        metrics = results[model]
        assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
        matrix = metrics["confusion_matrix"]
        assert sum(map(sum, matrix)) == 300
        assert list(metrics["per_class_accuracy"]) == list(CLASSES)
    for png in (
        "pretrain_curves.png",
        "finetune_curves.png",
        "simclrv2_confusion_matrix.png",
        "supervised_confusion_matrix.png",
    ):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "[pretrain] step 4/4" in printed and "img/s" in printed and "ETA" in printed
    assert "SimCLRv2 pretrain + fine-tune" in printed and "supervised baseline" in printed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--proj-layers", "3"], "--proj-layers 3: fine-tuning starts from projection layer"),
        (["--unlabeled-images", "0"], "--unlabeled-images must be at least 1"),
        (["--label-fraction", "1.5"], "--label-fraction must be in (0, 1]"),
        (["--temperature", "0"], "--temperature must be > 0"),
    ],
)
def test_bad_arguments_fail_before_any_work_with_a_clear_error(flags, message, tmp_path, capsys):
    out = tmp_path / "never-created"
    assert main(["quickstart", "--output-dir", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_params_command_prints_the_reference_size(capsys):
    assert main(["params", "--depth", "50"]) == 0
    assert "23,508,032" in capsys.readouterr().out
