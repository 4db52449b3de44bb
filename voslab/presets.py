"""Presets: named settings per paper, so one notebook serves CI, a laptop and a GPU.

- ``smoke``: CI. Seconds on 2 CPU cores; tiny data and model; checks that everything runs.
- ``cpu``: a learner's laptop. A few minutes; a result worth looking at.
- ``gpu``: the paper's setting (backbone, input size, schedule) on one GPU.

Each paper module (``voslab.models.<paper>``) owns its ``PRESETS`` dict with the sections
``data`` (synthetic-data config, see :func:`voslab.data.synthetic.ensure`), ``model``, ``train`` and
``eval``; it writes only its differences from ``voslab.models._common.BASE_PRESETS``.
:func:`get` returns a deep copy, so a notebook may change it freely.
"""
from __future__ import annotations

import copy
from typing import Any

PRESET_NAMES = ("smoke", "cpu", "gpu", "real")

#: Synthetic-dataset configs for the data tour (notebook 00): keys are the kwargs of
#: ``voslab.data.synthetic.generate`` (n_videos, n_frames, size, difficulty, seed, scenario;
#: ``synthetic(preset, scenario="camouflage")`` picks one of ``voslab.data.synthetic.SCENARIOS``).
SYNTHETIC: dict[str, dict[str, Any]] = {
    "smoke": {"n_videos": 2, "n_frames": 8, "size": (64, 96), "difficulty": 1.0, "seed": 0, "scenario": "classic"},
    "cpu": {"n_videos": 6, "n_frames": 16, "size": (96, 160), "difficulty": 1.0, "seed": 0, "scenario": "classic"},
    "gpu": {"n_videos": 24, "n_frames": 24, "size": (240, 432), "difficulty": 1.0, "seed": 0, "scenario": "classic"},
}


def _check_name(preset: str, available) -> None:
    if preset not in available:
        raise KeyError(
            f"unknown preset {preset!r}; choose one of {sorted(available)} "
            "(set PRESET in the notebook's parameters cell, `-p PRESET smoke` with papermill, "
            "or the VOSLAB_PRESET environment variable)"
        )


def synthetic(preset: str, **overrides: Any) -> dict[str, Any]:
    """The synthetic-dataset config of ``preset`` (a copy), with ``overrides`` applied."""
    _check_name(preset, SYNTHETIC)
    config = copy.deepcopy(SYNTHETIC[preset])
    unknown = set(overrides) - set(config)
    if unknown:
        raise KeyError(f"synthetic(): unknown config keys {sorted(unknown)}; known: {sorted(config)}")
    config.update(overrides)
    return config


def table(model: str) -> dict[str, dict[str, Any]]:
    """The ``PRESETS`` dict of a registered model (not a copy: use :func:`get` to change values)."""
    from voslab import zoo  # the registry (same layer; resolved at call time so tests can swap it)

    return zoo.get(model).presets


def get(model: str, preset: str) -> dict[str, Any]:
    """A deep copy of ``PRESETS[preset]`` of ``model`` (e.g. ``get("adnet", "cpu")``)."""
    presets = table(model)
    _check_name(preset, presets)
    return copy.deepcopy(presets[preset])
