"""What every paper file shares, so that a paper file holds only what is that paper's.

A paper's zoo functions (``build_model``, ``train_dataset``, ``training_step``, ``predict_sequence``)
take one config type: a **preset dict** with the sections ``data`` (synthetic splits), ``model``
(fields of the paper's config dataclass), ``train`` (regime) and ``eval`` (inference options).
The model class itself takes the paper's config dataclass, built here strictly:

    cfg = model_config(ADNetConfig, preset)          # unknown "model" keys raise
    opts = inference_config(model.cfg, preset)       # "eval" keys override inference fields

:func:`with_base_presets` fills each paper's preset differences with :data:`BASE_PRESETS` (the
synthetic data and evaluation split every paper shares at smoke / cpu / gpu scale, and the real
DAVIS-2016 data of the ``real`` preset: see :data:`REAL_VAL` and :func:`davis_split`).
"""
from __future__ import annotations

import copy
import warnings
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from voslab.data.davis import DAVIS
from voslab.data.sequence import SequenceList
from voslab.utils import shared_data_dir

__all__ = ["Preset", "BASE_PRESETS", "EVAL_KEYS", "REAL_VAL", "REAL_DATA", "REAL_SIZE", "section", "check_choice",
           "model_config", "inference_config", "with_base_presets", "data_config", "davis_split", "evaluation_split",
           "sampler_options", "real_data_name", "real_data_root", "canonical_root", "scenario_splits", "paper_backbone",
           "batch_iou", "resize", "hflip_if"]

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


#: The ``real`` preset's held-out validation sequences: every sixth of the 30 DAVIS-2016 train sequences in
#: alphabetical order (bear, bmx-bumps, ...), starting at the first. Fixed by that rule before any score was
#: seen; the other 25 train. Named explicitly, so ``--split val`` works on a folder whose ImageSets/ only
#: has train.txt (the shared 240p copy) as on the official layout.
REAL_VAL = ("bear", "dance-jump", "hockey", "motocross-bumps", "soccerball")
#: The folder under ``voslab.utils.shared_data_dir()`` that a ``real`` preset reads when given no data
#: root: the 30 DAVIS-2016 train sequences at 427x240 (flat DAVIS layout).
REAL_DATA = "davis2016-train-240p"
#: The ``real`` presets' network input (H, W): DAVIS 854x480 halved. Predictions are scored at the
#: annotations' size (480p on the official layout), upsampled by each paper's inference protocol.
REAL_SIZE = (240, 427)

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
    # Real video on a laptop: DAVIS-2016 frames (a data root, or the shared 240p copy), the ImageNet
    # MobileNetV2 frozen except its last ``finetune.trainable_blocks`` blocks (voslab.models._real),
    # <= 30 minutes on 2 CPU cores. Splits name sequences: "train" = the folder's train split minus
    # REAL_VAL, "val" = REAL_VAL; default_root = where they are when no data root is given.
    "real": {"data": {"train": {"default_root": REAL_DATA, "split": "train", "exclude": REAL_VAL},
                      "val": {"default_root": REAL_DATA, "sequences": REAL_VAL}},
             "train": {"size": REAL_SIZE, "augment": False, "finetune": {"trainable_blocks": 0, "cache_mb": 2048}},
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


# ------------------------------------------------------------------------------- backbone
def paper_backbone(cfg: Any, paper: str) -> torch.nn.Module:
    """The backbone a paper's config names (fields ``backbone``, ``output_stride``, ``pretrained``,
    ``backbone_kwargs``). The papers' DeepLabv3-ResNet needs torchvision: without it, MobileNetV2
    (with its ImageNet weights when fetched), with a warning that says so."""
    from voslab.nn.backbones import build_backbone
    from voslab.pretrained import is_available

    try:
        return build_backbone(cfg.backbone, output_stride=cfg.output_stride, pretrained=cfg.pretrained,
                              **cfg.backbone_kwargs)
    except ImportError as err:
        if not cfg.backbone.startswith("deeplabv3"):
            raise
        imagenet = is_available("mobilenet_v2")
        warnings.warn(f"{paper}: {err}. Falling back to backbone='mobilenet_v2' "
                      + ("with its ImageNet weights." if imagenet else
                         "WITHOUT ImageNet weights (run `python data_scripts/fetch_weights.py`)."), stacklevel=3)
        return build_backbone("mobilenet_v2", output_stride=cfg.output_stride, pretrained=imagenet)


# ------------------------------------------------------------------------------- data
def data_config(cfg: Mapping[str, Any] | None, split: str) -> dict:
    """The synthetic-data config of ``split`` (``cfg["data"][split]``, or ``cfg["data"]`` when the
    preset gives one config for every split)."""
    data = section(cfg, "data")
    return dict(data[split]) if isinstance(data.get(split), Mapping) else data


def real_data_name(cfg: Mapping[str, Any] | None) -> str | None:
    """The folder (under ``voslab.utils.shared_data_dir()``) a real preset reads when given no data
    root: its splits' ``default_root``; None for a synthetic preset."""
    for spec in section(cfg, "data").values():
        if isinstance(spec, Mapping) and spec.get("default_root"):
            return str(spec["default_root"])
    return None


def real_data_root(cfg: Mapping[str, Any] | None) -> Path:
    """The folder a real preset reads when given no data root (:func:`real_data_name` under
    ``voslab.utils.shared_data_dir()``); FileNotFoundError with the fix when it is absent."""
    name = real_data_name(cfg)
    if not name:
        raise ValueError("this preset has no data default_root (not a real preset): pass a data root (a DAVIS-layout "
                         "folder)")
    path = shared_data_dir() / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"the real preset trains on DAVIS-2016 frames and {path} does not exist: pass a DAVIS-layout folder "
            "(`--data-root DIR` on the command line, `root=DIR` / DATA_ROOT in Python; get DAVIS with "
            "`python data_scripts/download_davis.py --year 2016 --root DIR`), or point VOSLAB_SHARED_DATA at a "
            f"folder holding {name}/")
    return path


def canonical_root(cfg: Mapping[str, Any] | None, root: str | Path | None) -> Path | None:
    """``root`` as a cache key wants it: None for the preset's own data (none given, or a real
    preset's default folder), else the absolute path, so that the command line and a notebook that
    name one folder differently share the trained weights."""
    if root is None:
        return None
    path = Path(root).expanduser().resolve()
    if real_data_name(cfg):
        default = shared_data_dir() / real_data_name(cfg)
        if default.is_dir() and default.resolve() == path:
            return None
    return path


def _split_spec(cfg: Mapping[str, Any] | None, split: str) -> Mapping[str, Any] | None:
    """A real preset's description of ``split`` (``{"sequences": [...]}`` or ``{"split": name,
    "exclude": [...]}``); None for synthetic presets and for splits the preset does not name."""
    spec = section(cfg, "data").get(split)
    return spec if isinstance(spec, Mapping) and ({"sequences", "split"} & set(spec)) else None


def davis_split(cfg: Mapping[str, Any] | None, split: str, root: str | Path | None = None,
                task: str = "unsupervised") -> DAVIS:
    """The sequences of ``split``: from ``root`` (a DAVIS-layout folder, real or synthetic) or,
    when ``root`` is None, from the preset's data: its synthetic split (generated once into the
    cache), or for a real preset the shared DAVIS copy (:func:`real_data_root`).

    A real preset names its splits' sequences (``data.val = {"sequences": [...], "default_root": ...}``,
    ``data.train = {"split": "train", "exclude": [...], "default_root": ...}``), on any DAVIS layout
    (official 480p or flat); a split it does not name is the folder's ``ImageSets`` split.
    Unsupervised models read DAVIS-2016 binary masks (``Annotations_binary`` on synthetic data,
    whose ``Annotations`` also hold the static distractors); semi-supervised ones DAVIS-2017 ids.
    """
    spec = _split_spec(cfg, split)
    if root is None and real_data_name(cfg):
        root = real_data_root(cfg)
    elif root is None:
        from voslab.data.synthetic import ensure

        root = ensure(split, data_config(cfg, split))
    root = Path(root)
    if task == "unsupervised":
        binary = (root / "Annotations_binary").is_dir()
        kwargs = {"year": 2016, "annotations": "Annotations_binary" if binary else "Annotations"}
    else:  # instance ids; DAVIS-2016's binary {0, 255} masks become one object (id 1), not void
        kwargs = {"year": 2016 if _binary_annotations(root) else 2017}
    names: Any = split
    if spec is not None and "sequences" in spec:
        names = [str(n) for n in spec["sequences"]]
    elif spec is not None:
        exclude = {str(n) for n in spec.get("exclude", ())}
        names = [n for n in DAVIS(root, spec["split"], **kwargs).names if n not in exclude]
    return DAVIS(root, names, **kwargs)


def _binary_annotations(root: Path) -> bool:
    """Whether the folder's ``Annotations`` are DAVIS-2016 style grey {0, 255} masks (not palette ids)."""
    from PIL import Image

    folder = root / "Annotations"
    first = next(folder.rglob("*.png"), None) if folder.is_dir() else None  # any one: a dataset has one format
    if first is None:
        return False
    with Image.open(first) as image:
        return image.mode != "P"


def scenario_splits(cfg: Mapping[str, Any] | None, split: str, root: str | Path | None = None,
                    task: str = "unsupervised") -> dict[str, DAVIS]:
    """The sequences of ``split`` by scenario: ``{scenario: DAVIS}``.

    A preset whose ``train`` section lists ``scenarios`` (e.g. LVO's camouflage, stop_and_go and
    static_start) divides its synthetic ``data[split]`` videos evenly over them (``n_videos`` in all;
    each scenario a split of its own, so every video is of one known scenario). Otherwise (a data
    root, a real preset, or no list): ``{scenario or "data": the split}``.
    """
    scenarios = list(section(cfg, "train").get("scenarios") or [])
    data = section(cfg, "data")
    spec = data.get(split)
    if root is not None or not scenarios or not isinstance(spec, Mapping):
        name = spec.get("scenario", "data") if isinstance(spec, Mapping) and root is None else "data"
        return {str(name): davis_split(cfg, split, root, task)}
    per = max(1, int(spec.get("n_videos", 3 * len(scenarios))) // len(scenarios))
    out = {}
    for scenario in scenarios:
        sub = copy.deepcopy(dict(cfg))
        sub["data"] = {split: {**spec, "scenario": scenario, "n_videos": per}}
        out[scenario] = davis_split(sub, split, None, task)
    return out


def sampler_options(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments every paper's training sampler (``voslab.data.samplers``) takes from the preset's
    ``train`` section: ``size`` (H, W), ``augment`` with its zoom range ``scale`` ((1, 1): flips only,
    which keeps a real preset's feature cache useful), ``length`` = steps x batch size, ``seed``."""
    train = section(cfg, "train")
    return {"size": tuple(train.get("size", (96, 160))), "augment": bool(train.get("augment", True)),
            "scale": tuple(float(z) for z in train.get("scale", (0.8, 1.25))),
            "length": int(train.get("steps", 1000)) * int(train.get("batch_size", 1)),
            "seed": int(train.get("seed", 0))}


def evaluation_split(cfg: Mapping[str, Any] | None, split: str, root: str | Path | None = None,
                     task: str = "unsupervised") -> DAVIS | SequenceList:
    """The sequences of ``split`` to score, all scenarios together: :func:`davis_split` when the
    preset has one data source; with a ``train.scenarios`` list, the videos of every scenario's
    split (:func:`scenario_splits`, the data the model trained on), each named
    ``"<scenario>-<video>"`` (every scenario's split numbers its videos from 1)."""
    parts = scenario_splits(cfg, split, root, task)
    if len(parts) == 1:
        return next(iter(parts.values()))
    videos = []
    for scenario, part in parts.items():
        for seq in part:
            renamed = copy.copy(seq)
            renamed.name = f"{scenario}-{seq.name}"
            videos.append(renamed)
    return SequenceList(videos, source=f"{split} split of the scenarios {', '.join(parts)}")


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
