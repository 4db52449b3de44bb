"""Optimisers and learning-rate schedules shared by the papers' training regimes.

Model files build their optimiser here (they do not import the engine): the papers train with
SGD + momentum and the DeepLab "poly" decay; the tiny from-scratch presets use Adam.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["PolyLambda", "poly_schedule", "build_optimizer"]


class PolyLambda:
    """lr factor ``(1 - step / total_steps) ** power`` (the papers' "poly" policy)."""

    def __init__(self, total_steps: int, power: float = 0.9):
        self.total_steps, self.power = int(total_steps), float(power)

    def __call__(self, step: int) -> float:
        return (1.0 - min(step, self.total_steps) / self.total_steps) ** self.power


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly learning-rate decay over ``total_steps`` scheduler steps (call ``.step()`` per step)."""
    if total_steps <= 0:
        raise ValueError(f"poly_schedule: total_steps must be positive, got {total_steps}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PolyLambda(total_steps, power))


def build_optimizer(params: Iterable[Any], train: Mapping[str, Any]
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """-> (optimizer, poly scheduler) from a preset's ``train`` section.

    Keys: ``optimizer`` ("sgd" | "adam", default "adam"), ``lr``, ``momentum`` (sgd, 0.9),
    ``weight_decay`` (0), ``steps`` (the schedule length) and ``poly_power`` (0.9). ``params`` may be
    parameters or parameter groups (each group may carry its own ``lr``).
    """
    name = str(train.get("optimizer", "adam")).lower()
    lr, decay = float(train.get("lr", 1e-3)), float(train.get("weight_decay", 0.0))
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=float(train.get("momentum", 0.9)), weight_decay=decay)
    elif name == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=decay)
    else:
        raise ValueError(f"unknown optimizer {name!r} in the preset's train section; use 'sgd' or 'adam'")
    steps = max(int(train.get("steps", 1000)), 1)
    return optimizer, poly_schedule(optimizer, steps, float(train.get("poly_power", 0.9)))
