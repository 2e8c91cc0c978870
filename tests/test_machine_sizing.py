"""run-local sizes the quick start to the machine: the profile's fp32_cpu_parameters apply on a
CPU without native bf16 and no GPU, never over what the user gave, and always said aloud."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.compiler import load_profile
from pipelines.machine_sizing import PROFILE_KEY, size_for_machine

TINY = "pipelines/profiles/tiny.yaml"


def test_fp32_cpu_takes_the_profiles_smaller_parameters_and_says_so():
    profile = load_profile(TINY)
    printed = []
    chosen = size_for_machine(profile, {}, printed.append, fp32_cpu=True)
    assert chosen == profile[PROFILE_KEY]
    assert chosen["pretrain_epochs"] < profile["parameters"]["pretrain_epochs"]
    (line,) = printed
    assert "bf16 only by emulation" in line and "pretrain_epochs=1" in line
    # How to get the full run back, with the profile's own values.
    full = profile["parameters"]["pretrain_epochs"]
    assert f"--param pretrain_epochs={full}" in line


def test_parameters_the_user_gave_win_and_are_not_announced():
    profile = load_profile(TINY)
    printed = []
    given = {"pretrain_epochs": 5, "label_fraction": 0.1}
    chosen = size_for_machine(profile, given, printed.append, fp32_cpu=True)
    assert chosen["pretrain_epochs"] == 5 and chosen["label_fraction"] == 0.1
    assert chosen["pretrain_batch_size"] == profile[PROFILE_KEY]["pretrain_batch_size"]
    assert "pretrain_epochs" not in printed[0] and "pretrain_batch_size=" in printed[0]
    # Every sized parameter given: nothing chosen, nothing said.
    everything = {name: 1 for name in profile[PROFILE_KEY]}
    printed.clear()
    assert size_for_machine(profile, everything, printed.append, fp32_cpu=True) == everything
    assert printed == []


def test_a_machine_with_bf16_or_a_profile_without_sizing_runs_as_given():
    profile = load_profile(TINY)
    printed = []
    assert size_for_machine(profile, {"seed": 3}, printed.append, fp32_cpu=False) == {"seed": 3}
    del profile[PROFILE_KEY]
    assert size_for_machine(profile, {}, printed.append, fp32_cpu=True) == {}
    assert printed == []


def test_a_profile_naming_an_unknown_parameter_is_refused(tmp_path):
    profile = yaml.safe_load(Path(TINY).read_text())
    profile[PROFILE_KEY] = {"pretrain_epoch": 1}  # a typo
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(ValueError, match=r"fp32_cpu_parameters names \['pretrain_epoch'\]"):
        load_profile(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine is never fp32-CPU-sized")
def test_the_detection_sees_a_cpu_limited_to_avx2_as_fp32():
    # oneDNN limited to AVX2 is what a laptop without AVX-512 BF16 / AMX computes with.
    code = "from pipelines.machine_sizing import machine_is_fp32_cpu as f; print(f())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
