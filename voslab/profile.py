"""What running a model costs: wall time per frame and peak memory, on the CPU or a GPU.

    >>> with profile.measure(device) as cost:
    ...     masks = inference.predict(model, seq, predict_fn)
    >>> cost.per_frame_ms(len(seq)), cost.peak_mib

Peak memory is the growth above the level at entry: on CUDA ``torch.cuda.max_memory_allocated``;
on the CPU the process's resident set size, sampled every millisecond by a background thread (PyTorch
releases the GIL inside its kernels, so the sampler sees the large intermediate tensors). The CPU
figure is read from ``/proc/self/statm`` (Linux); elsewhere it is None. A fresh process gives the
cleanest CPU figure (``benchmarks/bench_all.py`` measures each model in its own process).
"""
from __future__ import annotations

import resource
import threading
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["Cost", "measure", "rss_bytes"]

_STATM = Path("/proc/self/statm")


def rss_bytes() -> int | None:
    """The process's resident set size now, in bytes (None where ``/proc`` is absent)."""
    try:
        return int(_STATM.read_text().split()[1]) * resource.getpagesize()
    except OSError:
        return None


class Cost:
    """Wall seconds and peak memory growth (MiB, or None where it cannot be read) of a ``with`` block."""

    def __init__(self, device: Any = "cpu", interval: float = 1e-3):
        self.device = torch.device(device)
        self.interval = float(interval)
        self.seconds = 0.0
        self.peak_mib: float | None = None
        self._base = self._peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def per_frame_ms(self, n_frames: int) -> float:
        """Milliseconds per frame, for a block that processed ``n_frames`` frames."""
        return 1000.0 * self.seconds / max(int(n_frames), 1)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __enter__(self) -> "Cost":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = rss_bytes()
            if self._base is not None:
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes() or 0)
        else:
            return
        self.peak_mib = max(peak - self._base, 0) / 2**20


def measure(device: Any = "cpu", interval: float = 1e-3) -> Cost:
    """A :class:`Cost` to use as ``with profile.measure(device) as cost: ...``."""
    return Cost(device, interval)
