"""Small helpers used everywhere: seeding, devices, the cache folder, timing, BatchNorm calibration,
atomic file writes, file hashes, JSON conversion and version facts."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable

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


def jsonable(obj: Any, strict: bool = True) -> Any:
    """``obj`` as JSON types: dicts (str keys), lists, numbers, strings, None.

    Tuples and sets become lists, dataclasses dicts, paths strings, numpy/torch values lists or
    numbers, torch dtypes/devices strings, objects with ``to_dict()`` their dict. ``strict``: an
    unknown type raises TypeError (configs must be plain); otherwise it becomes its ``repr`` and
    NaN/inf become None (results files, which must stay valid JSON).
    """
    if isinstance(obj, float):
        return obj if strict or math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, strict) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v, strict) for v in sorted(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj), strict)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar/array, torch tensor
        return jsonable(obj.tolist(), strict)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict(), strict)
    if hasattr(obj, "items") and callable(obj.items):  # other mappings
        return {str(k): jsonable(v, strict) for k, v in obj.items()}
    if strict:
        raise TypeError(f"config value {obj!r} of type {type(obj).__name__} is not JSON-able; use numbers, "
                        "strings, lists and dicts in configs")
    return repr(obj)


def canonical_json(cfg: Any) -> str:
    """Canonical JSON of a config: sorted keys, no spaces, tuples as lists."""
    return json.dumps(jsonable(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short SHA-1 of the canonical JSON of ``cfg`` (same config -> same hash, any run)."""
    return hashlib.sha1(canonical_json(cfg).encode()).hexdigest()[:length]


def shared_data_dir() -> Path:
    """The development copy of real DAVIS frames: ``$VOSLAB_SHARED_DATA``, else ``shared/data`` beside
    the repository. It is not part of voslab (a fresh clone has none): callers check ``.is_dir()``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("VOSLAB_SHARED_DATA", default)).expanduser()


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = True) -> Path:
    """Write ``path`` through ``write(file)`` on a temporary file beside it, then ``os.replace`` it.

    A crash mid-write leaves the previous file intact (never a truncated file). The file gets the
    permissions a plain ``open`` would give. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON (converted by :func:`jsonable`, non-strict), written atomically."""
    text = json.dumps(jsonable(data, strict=False), indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text), binary=False)


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def environment_info() -> dict[str, str]:
    """Versions that make a results file, a checkpoint or a bug report reproducible."""
    import voslab

    return {"voslab": voslab.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cuda": torch.version.cuda or "none"}
