"""Size a local run to the machine it finds: a CPU without native bf16 trains in fp32 at
about half the speed, so a profile may name smaller parameters for it (`fp32_cpu_parameters`).

Only run-local applies them (on a cluster the profile's nodes are known), only when no GPU is
present and the CPU lacks AVX-512 BF16 / AMX, and never over a parameter the user gave.
Every choice is printed with its reason, so a run's figures can be read against it.
"""

from collections.abc import Callable

PROFILE_KEY = "fp32_cpu_parameters"


def check_fp32_cpu_parameters(profile: dict, path: str) -> None:
    """A profile's fp32_cpu_parameters must name pipeline parameters the profile has."""
    sized = profile.get(PROFILE_KEY)
    if sized is None:
        return
    if not isinstance(sized, dict):
        raise ValueError(f"profile {path}: {PROFILE_KEY} must be a mapping of parameters")
    unknown = sorted(set(sized) - set(profile.get("parameters", {})))
    if unknown:
        raise ValueError(
            f"profile {path}: {PROFILE_KEY} names {unknown}, which are not among its "
            f"parameters {sorted(profile.get('parameters', {}))}"
        )


def machine_is_fp32_cpu() -> bool:
    import torch

    from simclrv2.performance import cpu_computes_bf16

    return not torch.cuda.is_available() and not cpu_computes_bf16()


def size_for_machine(
    profile: dict,
    given: dict,
    print_fn: Callable[[str], None] = print,
    fp32_cpu: bool | None = None,
) -> dict:
    """The parameters to run with: `given` plus, on an fp32-only CPU, the profile's
    fp32_cpu_parameters that `given` does not set."""
    sized = profile.get(PROFILE_KEY) or {}
    if not sized:
        return dict(given)
    if fp32_cpu is None:
        fp32_cpu = machine_is_fp32_cpu()
    if not fp32_cpu:
        return dict(given)
    chosen = {name: value for name, value in sized.items() if name not in given}
    if chosen:
        settings = " ".join(f"{name}={value}" for name, value in chosen.items())
        restore = " ".join(f"--param {name}={profile['parameters'][name]}" for name in chosen)
        print_fn(
            f"[pipeline] this CPU computes bf16 only by emulation (no AVX-512 BF16 / AMX) and "
            f"no GPU is present: the steps run in fp32, about half as fast, so this run uses "
            f"the profile's {PROFILE_KEY}: {settings}. The full run: {restore}"
        )
    return {**chosen, **given}
