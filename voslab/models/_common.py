"""What every paper file shares, so that a paper file holds only what is that paper's.

A paper's zoo functions (``build_model``, ``train_dataset``, ``training_step``, ``predict_sequence``)
take one config type: a **preset dict** with the sections ``data`` (synthetic splits), ``model``
(fields of the paper's config dataclass), ``train`` (regime) and ``eval`` (inference options).
The model class itself takes the paper's config dataclass, built here strictly:

    cfg = model_config(ADNetConfig, preset)          # unknown "model" keys raise
    opts = inference_config(model.cfg, preset)       # "eval" keys override inference fields

:func:`with_base_presets` fills each paper's preset differences with :data:`BASE_PRESETS` (the
synthetic data and evaluation split every paper shares at smoke / cpu / gpu scale).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from voslab.data.davis import DAVIS

__all__ = ["Preset", "BASE_PRESETS", "EVAL_KEYS", "section", "check_choice", "model_config", "inference_config",
           "with_base_presets", "data_config", "davis_split", "batch_iou", "resize", "hflip_if"]

Preset = dict  # {"data": {"train": {...}, "val": {...}}, "model": {...}, "train": {...}, "eval": {...}}
Config = TypeVar("Config")

#: "eval" keys read by the harness (CLI, notebooks), not by a model's inference protocol.
EVAL_KEYS = frozenset({"split"})


# ------------------------------------------------------------------------------- config sections
def section(cfg: Mapping[str, Any] | None, name: str) -> dict:
    """A copy of ``cfg[name]`` ({} when the preset has no such section)."""
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a preset dict with sections data/model/train/eval, got {type(cfg).__name__}; "
                        "use voslab.presets.get(model, preset) or {'model': {...}}")
    part = cfg.get(name, {})
    if not isinstance(part, Mapping):
        raise TypeError(f"preset section {name!r} must be a dict, got {type(part).__name__}")
    return dict(part)


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name}={value!r} is not one of {choices}")


def _fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def model_config(config_cls: type[Config], cfg: Mapping[str, Any] | None) -> Config:
    """``config_cls(**cfg["model"])``; unknown keys raise, naming the valid ones."""
    options = section(cfg, "model")
    unknown = set(options) - _fields(config_cls)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} option(s) {sorted(unknown)} in the preset's 'model' "
                         f"section; valid: {sorted(_fields(config_cls))}")
    return config_cls(**options)


def inference_config(model_cfg: Config, cfg: Mapping[str, Any] | None) -> Config:
    """``model_cfg`` with the preset's ``eval`` options applied; unknown keys raise."""
    overrides = {k: v for k, v in section(cfg, "eval").items() if k not in EVAL_KEYS}
    unknown = set(overrides) - _fields(type(model_cfg))
    if unknown:
        raise ValueError(f"unknown inference option(s) {sorted(unknown)} in the preset's 'eval' section; valid: "
                         f"{sorted(_fields(type(model_cfg)) | EVAL_KEYS)}")
    return dataclasses.replace(model_cfg, **overrides)


# ------------------------------------------------------------------------------- presets
def _split(n_videos: int, n_frames: int, size: tuple[int, int], difficulty: float, seed: int) -> dict:
    return {"n_videos": n_videos, "n_frames": n_frames, "size": size, "difficulty": difficulty, "seed": seed}


#: What every paper's presets share: the synthetic train/val splits and the evaluation split.
BASE_PRESETS: dict[str, Preset] = {
    # CI: seconds on 2 cores (a check that everything runs, not a result).
    "smoke": {"data": {"train": _split(8, 6, (64, 112), 0.5, seed=0), "val": _split(2, 6, (64, 112), 0.5, seed=1)},
              "eval": {"split": "val"}},
    # A learner's 2-core laptop: a few minutes, a result worth looking at.
    "cpu": {"data": {"train": _split(300, 12, (72, 128), 1.0, seed=0), "val": _split(24, 12, (72, 128), 1.0, seed=1)},
            "eval": {"split": "val"}},
    # The papers' frame size (DAVIS 480p).
    "gpu": {"data": {"train": _split(60, 30, (480, 854), 1.0, seed=0), "val": _split(20, 30, (480, 854), 1.0, seed=1)},
            "eval": {"split": "val"}},
}


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_base_presets(differences: Mapping[str, Preset]) -> dict[str, Preset]:
    """Each preset of ``differences`` merged (recursively) over :data:`BASE_PRESETS`."""
    unknown = set(differences) - set(BASE_PRESETS)
    if unknown:
        raise KeyError(f"presets {sorted(unknown)} have no base; known: {sorted(BASE_PRESETS)}")
    return {name: _merged(BASE_PRESETS[name], changes) for name, changes in differences.items()}


# ------------------------------------------------------------------------------- data
def data_config(cfg: Mapping[str, Any] | None, split: str) -> dict:
    """The synthetic-data config of ``split`` (``cfg["data"][split]``, or ``cfg["data"]`` when the
    preset gives one config for every split)."""
    data = section(cfg, "data")
    return dict(data[split]) if isinstance(data.get(split), Mapping) else data


def davis_split(cfg: Mapping[str, Any] | None, split: str, root: str | Path | None = None,
                task: str = "unsupervised") -> DAVIS:
    """The sequences of ``split``: from ``root`` (a DAVIS-layout folder, real or synthetic) or,
    when ``root`` is None, from the preset's synthetic split (generated once into the cache).

    Unsupervised models read DAVIS-2016 binary masks (``Annotations_binary`` on synthetic data,
    whose ``Annotations`` also hold the static distractors); semi-supervised ones DAVIS-2017 ids.
    """
    if root is None:
        from voslab.data.synthetic import ensure

        root = ensure(split, data_config(cfg, split))
    root = Path(root)
    if task == "unsupervised":
        binary = (root / "Annotations_binary").is_dir()
        return DAVIS(root, split, year=2016, annotations="Annotations_binary" if binary else "Annotations")
    return DAVIS(root, split, year=2017)


# ------------------------------------------------------------------------------- tensors
def batch_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean IoU over a batch of boolean (B, 1, H, W) masks (an empty union counts as 1)."""
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean().item()


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` (no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def hflip_if(x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Mirror (B, C, H, W) left-right when ``flip``."""
    return x.flip(-1) if flip else x
