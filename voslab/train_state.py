"""Everything a training run needs to stop and resume bit-exactly.

:class:`TrainState` gathers the model, optimiser, scheduler, AMP scaler, the position in the data
(:class:`BatchStream`), every process's random-number state and the loss :class:`History`, with
``state_dict``/``load_state_dict`` like any PyTorch object, and :meth:`TrainState.save` /
:meth:`TrainState.restore` for the ``last.pt`` file the engine writes atomically.

Exact resume (bit-identical weights) holds with ``num_workers=0`` (the default).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from voslab.checkpoints import load_state, save_atomic
from voslab.distributed import Context, gather
from voslab.utils import seed_everything

__all__ = ["History", "BatchStream", "TrainState", "rng_state", "set_rng_state", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "voslab-train-checkpoint-v1"


# ----------------------------------------------------------------------------- history
@dataclass
class History:
    """Per-step training record: ``losses`` and ``metrics`` (other scalars, incl. ``"lr"``).

    Draw it with ``voslab.viz.plot_curves(history)``.
    """

    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    seconds: float = 0.0  # training wall time, summed over resumed runs

    def record(self, step: int, logs: Mapping[str, float]) -> None:
        """Append one step; keys that appear late are padded with NaN to stay aligned."""
        self.steps.append(step)
        self.losses.append(float(logs["loss"]))
        for key, value in logs.items():
            if key != "loss":
                self.metrics.setdefault(key, [math.nan] * (len(self.steps) - 1)).append(float(value))
        for values in self.metrics.values():
            values.extend([math.nan] * (len(self.steps) - len(values)))

    def as_dict(self) -> dict[str, list[float]]:
        """``{"loss": [...], "<metric>": [...], ...}`` (what ``viz.plot_curves`` draws)."""
        return {"loss": list(self.losses), **{k: list(v) for k, v in self.metrics.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "metrics": {k: list(v) for k, v in self.metrics.items()},
                "steps": list(self.steps), "seconds": self.seconds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.losses = list(state["losses"])
        self.metrics = {k: list(v) for k, v in state["metrics"].items()}
        self.steps = list(state["steps"])
        self.seconds = float(state["seconds"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "History":
        """A History rebuilt from :meth:`state_dict` (e.g. stored with cached weights)."""
        history = cls()
        history.load_state_dict(state)
        return history

    def __len__(self) -> int:
        return len(self.losses)

    def __repr__(self) -> str:
        last = f", last loss {self.losses[-1]:.4g}" if self.losses else ""
        return f"History({len(self)} steps{last}, metrics={sorted(self.metrics)})"


# ----------------------------------------------------------------------------- data stream
class _ResumableSampler(DistributedSampler):
    """DistributedSampler (also used with one process) that can start mid-epoch.

    Epoch ``e`` shuffles with a generator seeded ``seed + e``, so the order is reproducible.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0  # samples of this epoch already consumed

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class BatchStream:
    """An endless, resumable iterator of batches (epoch after epoch).

    Built from a map-style Dataset (``batch_size``, ``shuffle``, ``num_workers`` apply) or from a
    DataLoader, whose dataset, batch size, collate_fn, worker count, drop_last and shuffling are
    reused with the stream's own seeded sampler.
    """

    def __init__(self, data: Dataset | DataLoader, *, batch_size: int = 8, shuffle: bool = True,
                 num_workers: int = 0, seed: int = 0, ctx: Context | None = None):
        ctx = ctx or Context()
        kwargs: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, drop_last=False)
        if isinstance(data, DataLoader):
            if data.batch_size is None:
                raise ValueError("fit(data=...): a DataLoader with a custom batch_sampler cannot be "
                                 "resumed exactly; pass the Dataset and batch_size= instead")
            shuffle = isinstance(data.sampler, RandomSampler) or bool(getattr(data.sampler, "shuffle", False))
            kwargs.update(batch_size=data.batch_size, num_workers=data.num_workers, drop_last=data.drop_last,
                          collate_fn=data.collate_fn, pin_memory=data.pin_memory)
            data = data.dataset
        if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
            raise ValueError("fit(data=...): pass a map-style Dataset (with __len__ and __getitem__) "
                             "or a DataLoader over one")
        if len(data) == 0:
            raise ValueError("fit(data=...): the dataset is empty; check the data root and split")
        self.seed, self.batch_size = seed, kwargs["batch_size"]
        self.sampler = _ResumableSampler(data, ctx.world_size, ctx.rank, shuffle, seed)
        self.generator = torch.Generator()  # worker seeds come from here, never from the global RNG
        self.loader = DataLoader(data, sampler=self.sampler, generator=self.generator, **kwargs)
        self.epoch, self.position = 0, 0  # position = batches of this epoch already yielded
        self._iterator: Iterator | None = None

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Any:
        for _ in range(2):  # at most one epoch boundary per call
            if self._iterator is None:
                self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
                continue
            self.position += 1
            return batch
        raise RuntimeError("fit: the data loader yields no batch (drop_last with a dataset smaller than a batch?)")

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.position * self.batch_size
        self.generator.manual_seed(self.seed + self.epoch)
        self._iterator = iter(self.loader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position, self._iterator = int(state["epoch"]), int(state["position"]), None


# ----------------------------------------------------------------------------- random state
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as ``weights_only``-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the state
@dataclass
class TrainState:
    """The objects a training run changes, saved and restored together."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    stream: BatchStream
    history: History = field(default_factory=History)
    step: int = 0
    seed: int = 0

    def state_dict(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything as plain values; ``rng``: every process's RNG state (default: this one's)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "loader": self.stream.state_dict(),
            "rng": rng if rng is not None else [rng_state()],
            "history": self.history.state_dict(),
            "seed": self.seed,
            "world_size": len(rng) if rng is not None else 1,
        }

    def load_state_dict(self, state: Mapping[str, Any], rank: int = 0, world_size: int = 1) -> None:
        """Load :meth:`state_dict` into every object (RNG state of ``rank`` included)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(state["loader"])
        self.history.load_state_dict(state["history"])
        self.step = int(state["step"])
        if len(state["rng"]) == world_size:
            set_rng_state(state["rng"][rank])
        else:  # resumed with another process count: still deterministic, no longer bit-identical
            seed_everything(int(state["seed"]) + rank + self.step)

    def save(self, path: Path, ctx: Context) -> None:
        """Write ``path`` atomically (rank 0); every process contributes its RNG state."""
        rng = gather(rng_state(), ctx)
        if ctx.is_main:
            save_atomic(self.state_dict(rng), path)

    def restore(self, path: Path, ctx: Context) -> None:
        """Continue from a file written by :meth:`save`."""
        state = load_state(path)
        if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a voslab training checkpoint; delete it or pass resume=False")
        try:
            self.load_state_dict(state, ctx.rank, ctx.world_size)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {path} does not match this model/optimiser ({e}); it was written by another "
                f"configuration: delete {path.parent} or pass resume=False"
            ) from e
