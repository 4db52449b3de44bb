"""Blocks shared by the papers: backbones, attention, ConvGRU, decoder modules, FEELVOS matching.

Submodules are imported lazily so ``import voslab.nn`` stays cheap; use e.g.
``from voslab.nn.backbones import build_backbone`` or ``voslab.nn.attention.diffusion``.
"""
from __future__ import annotations

import importlib

__all__ = ["attention", "backbones", "convgru", "matching", "modules"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"voslab.nn.{name}")
    raise AttributeError(f"module 'voslab.nn' has no attribute {name!r}")
