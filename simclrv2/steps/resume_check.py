"""Refuse to resume from a checkpoint that another run wrote.

A step resumes from the newest checkpoint in its checkpoint folder. When that folder is
shared by mistake (a reused --output or --checkpoint-dir), the checkpoint belongs to another
run: a different model fails to load with a wall of tensor shapes, and a same-shaped one
would silently continue someone else's training on other data. The checkpoint holds the
config it was written under, so the settings that make a run what it is are compared first.
"""

from simclrv2.errors import UsageError

# What makes a checkpoint another run's: its data, its architecture, its seed.
IDENTITY = (
    "data.dataset",
    "data.image_size",
    "data.image_mode",
    "model",
    "finetune.from_scratch",
    "finetune.proj_layers",
    "distill.student",
    "runtime.seed",
)
_FIX = "use a new --checkpoint-dir (or --output), or delete that checkpoint folder"


def _get(config: dict, path: str):
    for part in path.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _first_difference(then, now, path: str) -> tuple[str, object, object] | None:
    """(key path, old value, new value) of the first leaf that differs, or None."""
    if isinstance(then, dict) and isinstance(now, dict):
        for key in sorted(set(then) | set(now)):
            found = _first_difference(then.get(key), now.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    return None if then == now else (path, then, now)


def check_same_run(saved: dict | None, current: dict, checkpoint: str) -> None:
    """UsageError when the checkpoint's config differs from this run's in IDENTITY."""
    if saved is None:  # written before checkpoints held their config: nothing to compare
        return
    for path in IDENTITY:
        found = _first_difference(_get(saved, path), _get(current, path), path)
        if found:
            where, then, now = found
            raise UsageError(
                f"the checkpoint {checkpoint} is from another run ({where} was {then!r}, "
                f"this run has {now!r}): {_FIX}"
            )


def load_error(checkpoint: str, error: Exception) -> UsageError:
    """A checkpoint whose tensors do not fit this model: the same advice, no shape dump."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UsageError(
        f"the checkpoint {checkpoint} does not fit this model ({reason[:200]}): it was "
        f"written by another run or step; {_FIX}"
    )
