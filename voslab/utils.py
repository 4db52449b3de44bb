"""Small helpers used everywhere: seeding, devices, the cache folder, timing, BatchNorm calibration."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def cache_dir(*parts: str) -> Path:
    """The voslab cache (``$VOSLAB_CACHE``, default ``~/.cache/voslab``), created on demand."""
    root = Path(os.environ.get("VOSLAB_CACHE", Path.home() / ".cache" / "voslab")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def calibrate_batchnorm(model: torch.nn.Module, inputs: Any,
                        forward: Callable[[Any], Any] | None = None) -> torch.nn.Module:
    """Measure the BatchNorm running statistics of ``model`` on ``inputs``; no weight changes.

    Runs ``forward(inputs)`` (default: ``model(inputs)``) once in train mode without gradients,
    with every BatchNorm's statistics reset and averaged cumulatively, then returns ``model`` in eval
    mode. A fresh network in eval mode normalises with the initial statistics (mean 0, variance 1),
    which shrink the activations of a deep stack towards 0 and make every pixel embedding alike.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calls
    model.train()
    with torch.no_grad():
        (forward or model)(inputs)
    return model.eval()


class Timer:
    """Context manager measuring wall time: ``with Timer() as t: ...; t.seconds``.

    Use this in notebooks instead of ``%%time`` (which hides errors from papermill).
    """

    def __init__(self, label: str | None = None, verbose: bool = False):
        self.label, self.verbose, self.seconds = label, verbose, float("nan")

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        if self.verbose:
            print(f"{self.label or 'elapsed'}: {self.seconds:.2f} s")


def to_jsonable(x: Any) -> Any:
    """JSON fallback for tuples' friends: paths, numpy scalars/arrays, dataclasses, torch dtypes."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    if hasattr(x, "tolist"):  # numpy scalar/array, torch tensor
        return x.tolist()
    if isinstance(x, (torch.dtype, torch.device)):
        return str(x)
    raise TypeError(
        f"config value {x!r} of type {type(x).__name__} is not JSON-able; use numbers, strings, "
        "lists and dicts in configs"
    )


def canonical_json(cfg: Any) -> str:
    """Canonical JSON of a config: sorted keys, no spaces, tuples as lists."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=to_jsonable)


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short SHA-1 of the canonical JSON of ``cfg`` (same config -> same hash, any run)."""
    return hashlib.sha1(canonical_json(cfg).encode()).hexdigest()[:length]


def shared_data_dir() -> Path:
    """The development copy of real DAVIS frames: ``$VOSLAB_SHARED_DATA``, else ``shared/data`` beside
    the repository. It is not part of voslab (a fresh clone has none): callers check ``.is_dir()``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("VOSLAB_SHARED_DATA", default)).expanduser()
