"""Console progress for long loops: step, throughput and ETA on one line per report."""

import time


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Reports every `every` steps: `[name] step 40/300 loss 4.12 | 812 img/s | ETA 00:31`."""

    def __init__(
        self, name: str, total_steps: int, every: int = 10, print_fn=print, start_step: int = 0
    ):
        self.name = name
        self.total_steps = total_steps
        self.start_step = start_step  # a resumed run measures from where it started
        self.every = max(1, every)
        self.print_fn = print_fn
        self.start = time.perf_counter()
        self.images = 0

    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self, step: int) -> float:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.start
        return elapsed / done * (self.total_steps - step) if done > 0 else 0.0

    def update(self, step: int, images: int, **metrics: float) -> None:
        """Call after finishing `step` (1-based) that processed `images` images."""
        self.images += images
        if step % self.every and step != self.total_steps:
            return
        eta = self.eta_seconds(step)
        values = " ".join(f"{key} {value:.4g}" for key, value in metrics.items())
        self.print_fn(
            f"[{self.name}] step {step}/{self.total_steps} {values} | "
            f"{self.images_per_second():.0f} img/s | ETA {format_duration(eta)}",
        )
