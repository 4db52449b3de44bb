"""One training loop for every paper, driven by a per-model training-step function.

``fit(model, training_step, data, optimizer=..., steps=...)`` runs ``steps`` optimiser steps. Each
step is the same five lines for every paper::

    batch = next(stream)                      # a dict of tensors, on the device
    out = training_step(model, batch)         # the paper's loss: {"loss": tensor, ...}
    optimizer.zero_grad(); out["loss"].backward()
    optimizer.step(); scheduler.step()

Around it: AMP on CUDA (:func:`amp_dtype`), gradient clipping, a check that the loss is finite,
a progress bar, and a ``last.pt`` checkpoint from which an interrupted run resumes bit-exactly
(``voslab.train_state``). Started by ``torchrun`` with several processes, it trains with
DistributedDataParallel (``voslab.distributed``).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from voslab import distributed
from voslab.distributed import is_main_process
from voslab.errors import TrainingDivergedError
from voslab.jupyter import in_jupyter
from voslab.optim import PolyLambda, poly_schedule  # re-exported: the schedule the engine documents
from voslab.train_state import BatchStream, History, TrainState
from voslab.utils import seed_everything

__all__ = ["fit", "History", "poly_schedule", "PolyLambda", "move_to_device", "is_main_process", "amp_dtype",
           "CHECKPOINT_NAME"]

TrainingStep = Callable[[nn.Module, Any], Mapping[str, Any]]
CHECKPOINT_NAME = "last.pt"


# ----------------------------------------------------------------------------- the loop
def fit(
    model: nn.Module,
    training_step: TrainingStep,
    data: Dataset | DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    steps: int,
    scheduler: Any = None,
    batch_size: int = 8,
    shuffle: bool = True,
    num_workers: int = 0,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    channels_last: bool = False,
    grad_clip: float | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int = 0,
    resume: bool = True,
    seed: int = 0,
    progress: bool | str = "auto",
    log_every: int = 10,
    on_step: Callable[[int, dict[str, float]], Any] | None = None,
    validate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    validate_every: int = 0,
) -> History:
    """Train ``model`` for ``steps`` optimiser steps; returns the loss/metric :class:`History`.

    training_step: ``(model, batch) -> dict`` with a scalar ``"loss"`` tensor and optional other
        scalars (logged). ``batch`` is already on the device. Bind extra arguments with
        ``functools.partial(recipe.training_step, cfg=cfg)``.
    data: a map-style Dataset (batched with ``batch_size``/``shuffle``/``num_workers``) or a
        DataLoader (its settings are reused with the engine's seeded, resumable sampler).
    scheduler: stepped once per optimiser step (e.g. :func:`poly_schedule`).
    amp: ``"auto"`` = float16 autocast + GradScaler on CUDA only (see :func:`amp_dtype`).
    channels_last: the channels_last memory format (CUDA only; ignored elsewhere).
    ckpt_dir / ckpt_every: write ``ckpt_dir/last.pt`` atomically every ``ckpt_every`` steps and at
        the end; with ``resume=True`` an existing ``last.pt`` is continued exactly.
    progress: ``"auto"`` (a bar in Jupyter or a terminal, else a log line every ``log_every``
        steps), ``"bar"``, ``"log"`` or ``False``.
    on_step: ``on_step(step, logs)`` called after each step (notebook live plots).
    validate / validate_every: every ``validate_every`` steps (and at the last one) the History
        also records ``val_<name>`` for each scalar of ``validate(model)``, run in eval mode without
        gradients (it changes neither the weights nor the random state of training).
    """
    if steps < 0:
        raise ValueError(f"fit(steps={steps}): steps must be >= 0")
    with distributed.process_group(device) as ctx:
        seed_everything(seed + ctx.rank)
        dev = ctx.device
        channels_last = channels_last and dev.type == "cuda"
        model.to(dev, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        dtype = amp_dtype(amp, dev)
        state = TrainState(model, optimizer, scheduler,
                           scaler=torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16),
                           stream=BatchStream(data, batch_size=batch_size, shuffle=shuffle,
                                              num_workers=num_workers, seed=seed, ctx=ctx),
                           seed=seed)
        ckpt = Path(ckpt_dir) / CHECKPOINT_NAME if ckpt_dir is not None else None
        if resume and ckpt is not None and ckpt.is_file():
            state.restore(ckpt, ctx)
        net = distributed.wrap(model, ctx)
        report = _Progress(progress, steps, min(state.step, steps), log_every, ctx.is_main)
        if state.step and report.mode != "none":
            print(f"resuming from {ckpt} at step {state.step}", flush=True)

        model.train()
        started = time.perf_counter()
        try:
            while state.step < steps:
                batch = move_to_device(next(state.stream), dev, non_blocking=dev.type == "cuda",
                                       channels_last=channels_last)
                with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = training_step(net, batch)
                logs = _scalar_logs(out, ctx)
                _check_finite(logs, state, dtype)
                logs.update(_optimise(out["loss"], state, grad_clip))
                state.step += 1
                if validate is not None and validate_every and (state.step % validate_every == 0 or state.step == steps):
                    logs.update(_validation_logs(model, validate))
                state.history.record(state.step, logs)
                report.update(state.step, logs)
                if on_step is not None and ctx.is_main:
                    on_step(state.step, logs)
                if ckpt is not None and ckpt_every and state.step % ckpt_every == 0 and state.step < steps:
                    started = _add_seconds(state.history, started)
                    state.save(ckpt, ctx)
        finally:
            report.close()
            del net  # a DDP wrapper must go before its process group does (else its destructor can hang)
        _add_seconds(state.history, started)
        if ckpt is not None:
            state.save(ckpt, ctx)
        return state.history


def _optimise(loss: torch.Tensor, state: TrainState, grad_clip: float | None) -> dict[str, float]:
    """Backward, optional clipping, optimiser and scheduler step. -> {"lr", "grad_norm"?}."""
    logs = {"lr": float(state.optimizer.param_groups[0]["lr"])}  # the rate this step used
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if grad_clip:
        state.scaler.unscale_(state.optimizer)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip))
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.scheduler is not None:
        state.scheduler.step()
    return logs


def _validation_logs(model: nn.Module, validate: Callable[[nn.Module], Mapping[str, float]]) -> dict[str, float]:
    """``validate(model)`` in eval mode, no gradients, RNG state untouched -> {"val_<name>": float}."""
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            values = validate(model)
    finally:
        model.train()
    return {f"val_{k}": float(v) for k, v in values.items()}


def _check_finite(logs: Mapping[str, float], state: TrainState, dtype: torch.dtype | None) -> None:
    """Stop with advice when the loss is NaN or infinite."""
    if math.isfinite(logs["loss"]):
        return
    lr = float(state.optimizer.param_groups[0]["lr"])
    raise TrainingDivergedError(
        f"training diverged at step {state.step + 1}: loss = {logs['loss']}. Lower the learning rate "
        f"(currently {lr:g}; try {lr / 3:.2g}) or clip gradients (fit(grad_clip=1.0))"
        + (", or turn off mixed precision (amp=False)" if dtype is not None else "") + "."
    )


def _add_seconds(history: History, started: float) -> float:
    now = time.perf_counter()
    history.seconds += now - started
    return now


# ----------------------------------------------------------------------------- batches and logs
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


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
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


def _scalar_logs(out: Any, ctx: distributed.Context) -> dict[str, float]:
    """The scalar entries of a training-step result as floats (averaged over DDP ranks)."""
    if not isinstance(out, Mapping) or not torch.is_tensor(out.get("loss")) or out["loss"].numel() != 1:
        raise TypeError("training_step(model, batch) must return a dict with a scalar tensor 'loss', "
                        f"got {type(out).__name__} with keys {list(out) if isinstance(out, Mapping) else '-'}")
    keys = ["loss"] + sorted(k for k, v in out.items() if k != "loss" and _is_scalar(v))
    values = torch.stack([torch.as_tensor(out[k]).detach().float().reshape(()).cpu() for k in keys])
    return dict(zip(keys, distributed.mean_over_ranks(values, ctx).tolist()))


def _is_scalar(value: Any) -> bool:
    if torch.is_tensor(value):
        return value.ndim == 0  # 0-dim only: a (1, 1) map of a batch of one is not a scalar
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- progress
def _duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"1 h 05 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class _Progress:
    """``"bar"``: tqdm.auto progress bar; ``"log"``: a plain line every ``log_every`` steps (with the
    time left); ``"none"``. Either way, a run still going after :attr:`ESTIMATE_AFTER` seconds and a
    tenth of its steps prints once how long the remaining steps should take at the rate so far (a
    long training says early how long it will be; an upper bound when the first steps are the
    slowest, e.g. while frozen features are computed and cached)."""

    ESTIMATE_AFTER = 15.0  # seconds

    def __init__(self, mode: bool | str, total: int, initial: int, log_every: int, enabled: bool):
        if mode == "auto":
            mode = "bar" if in_jupyter() or sys.stderr.isatty() else "log"
        self.mode = {True: "bar", False: "none", None: "none"}.get(mode, mode) if enabled else "none"
        if self.mode not in {"bar", "log", "none"}:
            raise ValueError(f"fit(progress={mode!r}): use 'auto', 'bar', 'log' or False")
        self.total, self.initial, self.log_every = total, initial, max(1, int(log_every))
        self.start = time.perf_counter()
        self.estimated = False
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=True)

    def update(self, step: int, logs: Mapping[str, float]) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (step - self.initial) / elapsed  # steps per second so far
        if self.bar is not None:
            self.bar.update(1)
            if step % self.log_every == 0 or step == self.total:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs.get('lr', math.nan):.2g}")
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total):
            left = f"  {_duration((self.total - step) / rate)} left" if step < self.total else ""
            print(f"step {step}/{self.total}  loss {logs['loss']:.4f}  lr {logs.get('lr', math.nan):.2e}"
                  f"  {rate:.1f} it/s{left}", flush=True)
        done, todo = step - self.initial, self.total - self.initial
        if (self.mode != "none" and not self.estimated and step < self.total and elapsed >= self.ESTIMATE_AFTER
                and done >= 0.1 * todo):  # after a tenth of the steps: the first ones are often the slowest
            self.estimated = True
            message = (f"estimate: about {_duration((self.total - step) / rate)} for the remaining "
                       f"{self.total - step} of {self.total} steps ({rate:.2g} it/s so far)")
            if self.bar is not None:
                self.bar.write(message, file=sys.stdout)
            else:
                print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
