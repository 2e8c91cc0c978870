"""Per-step training values kept where they were computed until they are read, in one go.

Reading a GPU scalar (`loss.item()`) makes the CPU wait until the GPU has finished the step;
the CPU then cannot queue the next step's work while the GPU runs this one, and the GPU idles
at every step. The training loop keeps each step's loss and metrics as tensors here and reads
them all with a single transfer every `runtime.log_every_steps` steps (and before every
checkpoint), so the host waits on the device once per N steps instead of several times a step.
"""

import torch


class DeferredRecords:
    """Step records whose tensor values are read lazily: add() each step, read() when due."""

    def __init__(self) -> None:
        self._pending: list[tuple[dict, int]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: dict, images: int) -> None:
        """`record` maps names to floats or 0-d tensors (read later); `images` goes with it."""
        detached = {
            key: value.detach() if isinstance(value, torch.Tensor) else value
            for key, value in record.items()
        }
        self._pending.append((detached, images))

    def read(self) -> list[tuple[dict, int]]:
        """Every pending (record with plain floats, images), oldest first; empties the queue."""
        pending, self._pending = self._pending, []
        tensors = [v for record, _ in pending for v in record.values() if torch.is_tensor(v)]
        if not tensors:
            return pending
        values = iter(torch.stack([t.float().reshape(()) for t in tensors]).tolist())
        return [
            ({k: next(values) if torch.is_tensor(v) else v for k, v in record.items()}, images)
            for record, images in pending
        ]
