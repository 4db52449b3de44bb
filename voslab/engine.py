"""One training loop for every paper, driven by a per-model training-step function.

``fit(model, training_step, loader, optimizer=..., steps=...)`` runs ``steps`` optimiser steps:
it moves batches to the device, uses AMP on CUDA, clips gradients, steps the scheduler, records
a loss history, writes atomic checkpoints and resumes exactly where it stopped. Started by
``torchrun`` with several processes, it trains with DistributedDataParallel (gloo on CPU, nccl on
CUDA); only rank 0 logs and writes checkpoints.

Exact resume (bit-identical weights) holds with ``num_workers=0`` (the default): the checkpoint
stores the model, optimiser, scheduler, AMP scaler, RNG states and the position in the data.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from voslab.checkpoints import load_state, save_atomic
from voslab.errors import TrainingDivergedError
from voslab.optim import PolyLambda, poly_schedule  # re-exported: the schedule the engine documents
from voslab.utils import seed_everything, select_device

__all__ = ["fit", "History", "poly_schedule", "PolyLambda", "move_to_device", "is_main_process", "CHECKPOINT_NAME"]

TrainingStep = Callable[[nn.Module, Any], Mapping[str, Any]]
CHECKPOINT_NAME = "last.pt"
_FORMAT = "voslab-train-checkpoint-v1"


# ----------------------------------------------------------------------------- schedule
# ----------------------------------------------------------------------------- history
@dataclass
class History:
    """Per-step training record: ``losses`` and ``metrics`` (other scalars, incl. ``"lr"``)."""

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

    def plot(self, **kwargs):
        """Loss (and metric) curves, drawn by ``voslab.viz.plot_curves``."""
        from voslab.viz import plot_curves

        return plot_curves(self.as_dict(), **kwargs)

    def __len__(self) -> int:
        return len(self.losses)

    def __repr__(self) -> str:
        last = f", last loss {self.losses[-1]:.4g}" if self.losses else ""
        return f"History({len(self)} steps{last}, metrics={sorted(self.metrics)})"


# ----------------------------------------------------------------------------- devices & batches
def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False,
                   channels_last: bool = False) -> Any:
    """Move every tensor in a (nested) dict/list/tuple to ``device``; other values pass through."""
    if torch.is_tensor(batch):
        batch = batch.to(device, non_blocking=non_blocking)
        if channels_last and batch.ndim == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking, channels_last) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, non_blocking, channels_last) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking, channels_last) for v in batch)
    return batch


def _amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """``"auto"``: float16 autocast on CUDA only. ``True``: float16 on CUDA, bfloat16 elsewhere."""
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp in (True, "fp16", "float16"):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in (False, None, "none", "off"):
        return None
    raise ValueError(f"fit(amp={amp!r}): use 'auto', True, False or 'bf16'")


# ----------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup(device: str | torch.device) -> _Dist:
    """Pick the device; under ``torchrun`` (WORLD_SIZE > 1) also join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = select_device(device)
    if world_size <= 1:
        return _Dist(device=chosen)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return _Dist(dist.get_world_size(), dist.get_rank(), chosen, created)


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun`` job (and in any single-process run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class _DDP(DistributedDataParallel):
    """DDP whose unknown attributes fall through to the wrapped model (``model.cfg`` keeps working).

    A training step must still *call* the model (``model(...)``) so that gradients are synced.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _mean_over_ranks(values: torch.Tensor, ctx: _Dist) -> torch.Tensor:
    if ctx.world_size > 1:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values.cpu() / ctx.world_size
    return values


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
    reused with the engine's own seeded sampler.
    """

    def __init__(self, data: Dataset | DataLoader, *, batch_size: int, shuffle: bool, num_workers: int,
                 seed: int, ctx: _Dist):
        kwargs: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, drop_last=False)
        if isinstance(data, DataLoader):
            if data.batch_size is None:
                raise ValueError("fit(loader=...): a DataLoader with a custom batch_sampler cannot be "
                                 "resumed exactly; pass the Dataset and batch_size= instead")
            shuffle = isinstance(data.sampler, RandomSampler) or bool(getattr(data.sampler, "shuffle", False))
            kwargs.update(batch_size=data.batch_size, num_workers=data.num_workers, drop_last=data.drop_last,
                          collate_fn=data.collate_fn, pin_memory=data.pin_memory)
            data = data.dataset
        if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
            raise ValueError("fit(loader=...): pass a map-style Dataset (with __len__ and __getitem__) "
                             "or a DataLoader over one")
        if len(data) == 0:
            raise ValueError("fit(loader=...): the dataset is empty; check the data root and split")
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


# ----------------------------------------------------------------------------- RNG state
def _rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng_states(ctx: _Dist) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective under DDP)."""
    mine = _rng_state()
    if ctx.world_size == 1:
        return [mine]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, mine)
    return states


# ----------------------------------------------------------------------------- progress
def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None
    return type(ip).__name__ == "ZMQInteractiveShell"


class _Progress:
    """``"bar"``: tqdm.auto progress bar; ``"log"``: a plain line every ``log_every`` steps; ``"none"``."""

    def __init__(self, mode: bool | str, total: int, initial: int, log_every: int, enabled: bool):
        if mode == "auto":
            mode = "bar" if _in_jupyter() or sys.stderr.isatty() else "log"
        self.mode = {True: "bar", False: "none", None: "none"}.get(mode, mode) if enabled else "none"
        if self.mode not in {"bar", "log", "none"}:
            raise ValueError(f"fit(progress={mode!r}): use 'auto', 'bar', 'log' or False")
        self.total, self.initial, self.log_every = total, initial, max(1, int(log_every))
        self.start = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=True)

    def update(self, step: int, logs: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if step % self.log_every == 0 or step == self.total:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs.get('lr', math.nan):.2g}")
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total):
            rate = (step - self.initial) / max(time.perf_counter() - self.start, 1e-9)
            print(f"step {step}/{self.total}  loss {logs['loss']:.4f}  lr {logs.get('lr', math.nan):.2e}"
                  f"  {rate:.1f} it/s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    training_step: TrainingStep,
    loader: Dataset | DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    steps: int,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    grad_clip: float | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int = 0,
    resume: bool = True,
    seed: int = 0,
    progress: bool | str = "auto",
    log_every: int = 10,
    batch_size: int = 8,
    shuffle: bool = True,
    num_workers: int = 0,
    channels_last: bool = False,
    on_step: Callable[[int, dict[str, float]], Any] | None = None,
) -> History:
    """Train ``model`` for ``steps`` optimiser steps; returns the loss/metric :class:`History`.

    training_step: ``(model, batch) -> dict`` with a scalar ``"loss"`` tensor and optional other
        scalars (logged). ``batch`` is already on the device. Bind extra arguments with
        ``functools.partial(recipe.training_step, cfg=cfg)``.
    loader: a map-style Dataset (batched with ``batch_size``/``shuffle``/``num_workers``) or a
        DataLoader (its settings are reused with the engine's seeded, resumable sampler).
    scheduler: stepped once per optimiser step (e.g. :func:`poly_schedule`).
    amp: ``"auto"`` = float16 autocast + GradScaler on CUDA only.
    ckpt_dir / ckpt_every: write ``ckpt_dir/last.pt`` atomically every ``ckpt_every`` steps and at
        the end; with ``resume=True`` an existing ``last.pt`` is continued exactly.
    progress: ``"auto"`` (bar in Jupyter or a terminal, else a log line every ``log_every``
        steps), ``"bar"``, ``"log"`` or ``False``.
    channels_last: use the channels_last memory format (CUDA only; ignored elsewhere).
    on_step: ``on_step(step, logs)`` called after each step (notebook live plots).
    """
    if steps < 0:
        raise ValueError(f"fit(steps={steps}): steps must be >= 0")
    ctx = _setup(device)
    try:
        return _fit(model, training_step, loader, ctx, optimizer=optimizer, scheduler=scheduler, steps=steps,
                    amp=amp, grad_clip=grad_clip, ckpt_dir=ckpt_dir, ckpt_every=ckpt_every, resume=resume,
                    seed=seed, progress=progress, log_every=log_every, batch_size=batch_size, shuffle=shuffle,
                    num_workers=num_workers, channels_last=channels_last, on_step=on_step)
    finally:
        if ctx.created_group and dist.is_initialized():
            dist.destroy_process_group()


def _fit(model, training_step, loader, ctx: _Dist, *, optimizer, scheduler, steps, amp, grad_clip, ckpt_dir,
         ckpt_every, resume, seed, progress, log_every, batch_size, shuffle, num_workers, channels_last,
         on_step) -> History:
    device = ctx.device
    seed_everything(seed + ctx.rank)
    channels_last = channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stream = BatchStream(loader, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                         seed=seed, ctx=ctx)
    amp_dtype = _amp_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history = History()
    ckpt_path = Path(ckpt_dir) / CHECKPOINT_NAME if ckpt_dir is not None else None

    step = 0
    if resume and ckpt_path is not None and ckpt_path.is_file():
        step = _restore(ckpt_path, model, optimizer, scheduler, scaler, stream, history, ctx)
    net = _DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if ctx.world_size > 1 else model
    model.train()
    pin = device.type == "cuda"
    report = _Progress(progress, steps, min(step, steps), log_every, ctx.is_main)
    if step and report.mode != "none":
        print(f"resuming from {ckpt_path} at step {step}", flush=True)
    started = time.perf_counter()
    try:
        while step < steps:
            batch = move_to_device(next(stream), device, non_blocking=pin, channels_last=channels_last)
            logs = _train_step(net, model, training_step, batch, optimizer, scheduler, scaler, amp_dtype,
                               grad_clip, ctx, step + 1)
            step += 1
            history.record(step, logs)
            report.update(step, logs)
            if on_step is not None and ctx.is_main:
                on_step(step, logs)
            if ckpt_path is not None and ckpt_every and step % ckpt_every == 0 and step < steps:
                history.seconds += time.perf_counter() - started
                started = time.perf_counter()
                _save(ckpt_path, step, model, optimizer, scheduler, scaler, stream, history, ctx, seed)
    finally:
        report.close()
    history.seconds += time.perf_counter() - started
    if ckpt_path is not None:
        _save(ckpt_path, step, model, optimizer, scheduler, scaler, stream, history, ctx, seed)
    return history


def _train_step(net, model, training_step, batch, optimizer, scheduler, scaler, amp_dtype, grad_clip,
                ctx: _Dist, step: int) -> dict[str, float]:
    """Forward, divergence check, backward, clip, optimiser and scheduler step; returns the logs."""
    lr = float(optimizer.param_groups[0]["lr"])
    with torch.autocast(ctx.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        out = training_step(net, batch)
    if not isinstance(out, Mapping) or not torch.is_tensor(out.get("loss")) or out["loss"].numel() != 1:
        raise TypeError("training_step(model, batch) must return a dict with a scalar tensor 'loss', "
                        f"got {type(out).__name__} with keys {list(out) if isinstance(out, Mapping) else '-'}")
    logs = _scalar_logs(out, ctx)
    if not math.isfinite(logs["loss"]):
        raise TrainingDivergedError(
            f"training diverged at step {step}: loss = {logs['loss']}. Lower the learning rate "
            f"(currently {lr:g}; try {lr / 3:.2g}) or clip gradients (fit(grad_clip=1.0))"
            + (", or turn off mixed precision (amp=False)" if amp_dtype is not None else "") + "."
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out["loss"]).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    logs["lr"] = lr
    return logs


def _scalar_logs(out: Mapping[str, Any], ctx: _Dist) -> dict[str, float]:
    """The scalar entries of a training-step result as floats (averaged over DDP ranks)."""
    keys = ["loss"] + sorted(k for k, v in out.items() if k != "loss" and _is_scalar(v))
    values = torch.stack([torch.as_tensor(out[k]).detach().float().reshape(()).cpu() for k in keys])
    values = _mean_over_ranks(values, ctx)
    return dict(zip(keys, values.tolist()))


def _is_scalar(value: Any) -> bool:
    if torch.is_tensor(value):
        return value.ndim == 0  # 0-dim only: a (1, 1) map of a batch of one is not a scalar
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- checkpoint files
def _save(path: Path, step: int, model, optimizer, scheduler, scaler, stream: BatchStream, history: History,
          ctx: _Dist, seed: int) -> None:
    """Write ``last.pt`` (rank 0); every rank contributes its RNG state."""
    rng = _gather_rng_states(ctx)
    if not ctx.is_main:
        return
    save_atomic({
        "format": _FORMAT,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "loader": stream.state_dict(),
        "rng": rng,
        "history": history.state_dict(),
        "seed": seed,
        "world_size": ctx.world_size,
    }, path)


def _restore(path: Path, model, optimizer, scheduler, scaler, stream: BatchStream, history: History,
             ctx: _Dist) -> int:
    """Load ``last.pt`` into every object; returns the step to continue from."""
    state = load_state(path)
    if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a voslab training checkpoint; delete it or pass resume=False")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(
            f"checkpoint {path} does not match this model/optimiser ({e}); it was written by another "
            f"configuration: delete {path.parent} or pass resume=False"
        ) from e
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    stream.load_state_dict(state["loader"])
    history.load_state_dict(state["history"])
    rng = state["rng"]
    if len(rng) == ctx.world_size:
        _set_rng_state(rng[ctx.rank])
    else:  # resumed with another process count: still deterministic, no longer bit-identical
        seed_everything(int(state["seed"]) + ctx.rank + int(state["step"]))
    return int(state["step"])
