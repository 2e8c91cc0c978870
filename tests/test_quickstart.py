"""The command line's own behaviour (the quick start itself runs in test_pipeline_chain.py)."""

import pytest

from simclrv2.cli import main


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "finetune.proj_layers=4"], "finetune.proj_layers 4 is more than"),
        (["--set", "pretrain.temprature=0.5"], "unknown setting pretrain.temprature"),
        (["--config", "nowhere.yaml"], "config file nowhere.yaml does not exist"),
        (["--label-fraction", "1.5"], "fraction"),
    ],
)
def test_bad_quickstart_arguments_fail_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "never-created"
    assert main(["quickstart", "--output", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_params_command_prints_the_reference_size(capsys):
    assert main(["params", "--depth", "50"]) == 0
    assert "23,508,032" in capsys.readouterr().out


def test_help_lists_every_step(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("quickstart", "shard", "verify", "pretrain", "finetune", "distill",
                    "evaluate", "params"):  # fmt: skip
        assert command in text
