"""Checkpoints: atomic writes, safe loading, and the load-or-train cache the notebooks use.

Everything saved here is a plain state dict (tensors, numbers, strings, lists, dicts) plus a
JSON-able config, so every file loads with ``torch.load(weights_only=True)``.

Cache layout: ``cache_dir("checkpoints")/<name>-<config hash>-v<voslab version>.pt`` and a
``.json`` sidecar holding the config and training metadata (time, steps, final loss, versions).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

import voslab
from voslab.errors import VOSDataError
from voslab.utils import atomic_write, cache_dir, canonical_json, config_hash, environment_info, write_json

__all__ = [
    "save_atomic", "load_state", "load_weights", "load_metadata", "config_hash", "canonical_json",
    "checkpoint_path", "load_or_train", "save_model", "training_metadata", "state_fingerprint",
]


# ----------------------------------------------------------------------------- writing / reading
def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place.

    A crash mid-write leaves the previous file intact (never a truncated checkpoint).
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_atomic` with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path (or train first)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        raise VOSDataError(
            f"cannot read checkpoint {path} ({_short_reason(e)}); the file is corrupt or was not written "
            "by voslab (only plain state dicts are accepted): delete it and train again"
        ) from e


def _short_reason(error: Exception) -> str:
    """One line of an exception message (torch's weights_only errors run over a dozen lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = next((x for x in lines if x.startswith("WeightsUnpickler error")), lines[0] if lines else "")
    return f"{type(error).__name__}: {line[:200]}"


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load model weights from a voslab checkpoint (cache file, CLI ``--out``, engine ``last.pt``)
    or from a bare state dict file. Returns ``model`` (weights loaded in place)."""
    state = load_state(path)
    weights = state.get("model", state) if isinstance(state, Mapping) else state
    if not isinstance(weights, Mapping):
        raise VOSDataError(f"checkpoint {path} holds no state dict (found {type(weights).__name__})")
    try:
        model.load_state_dict(weights, strict=strict)
    except RuntimeError as e:
        raise VOSDataError(
            f"weights in {path} do not fit this model: {e}\n"
            "Build the model with the same preset/config the checkpoint was trained with."
        ) from e
    return model


def state_fingerprint(model: nn.Module, length: int = 12) -> str:
    """Short SHA-1 of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:length]


# ----------------------------------------------------------------------------- load or train
def checkpoint_path(name: str, config: Any, cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_or_train` keeps ``name`` trained with ``config``.

    ``cache`` may be a folder (used instead of ``cache_dir("checkpoints")``) or an explicit
    ``.pt``/``.pth`` file path (the notebooks' ``CKPT`` parameter), which is used as is.
    """
    if cache is not None and Path(cache).suffix in {".pt", ".pth"}:
        return Path(cache).expanduser()
    folder = Path(cache).expanduser() if cache is not None else cache_dir("checkpoints")
    return folder / f"{name}-{config_hash(config)}-v{voslab.__version__}.pt"


def load_or_train(
    name: str,
    config: Mapping[str, Any],
    train_fn: Callable[[], Any],
    model_fn: Callable[[], nn.Module],
    cache: str | os.PathLike | None = None,
    force: bool = False,
    verbose: bool = True,
) -> nn.Module:
    """Return the model ``name`` trained with ``config``: from the cache if there, else train it.

    train_fn: ``() -> model`` (or ``(model, history)``) that trains from scratch.
    model_fn: ``() -> model`` building an untrained model to load cached weights into
        (for a zoo model, ``voslab.zoo.Recipe.load_or_train`` passes ``recipe.build_model``).
    cache: a folder, or an explicit ``.pt`` path (see :func:`checkpoint_path`).
    force: retrain even when a cached file exists (the cache is then overwritten).
    """
    path = checkpoint_path(name, config, cache)
    if path.is_file() and not force:
        model = model_fn()
        load_weights(model, path)
        if verbose:
            print(f"loaded {name} weights from {path}")
        return model

    start = time.perf_counter()
    result = train_fn()
    model, history = result if isinstance(result, tuple) else (result, None)
    seconds = time.perf_counter() - start
    save_model(path, model, config, **training_metadata(name, config, seconds, history))
    if verbose:
        print(f"trained {name} in {seconds:.1f} s; weights saved to {path}")
    return model


def save_model(path: str | os.PathLike, model: nn.Module, config: Mapping[str, Any], **meta: Any) -> Path:
    """Write trained weights as ``{"model", "config", "meta"}`` (atomic) plus a ``.json`` sidecar
    with the config and ``meta``. Read back with :func:`load_weights`."""
    path = Path(path)
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "config": json.loads(canonical_json(config)), "meta": json.loads(canonical_json(meta))}
    save_atomic(state, path)
    write_json(path.with_suffix(".json"), {"config": config, **meta})
    return path


def training_metadata(name: str, config: Any, seconds: float, history: Any) -> dict[str, Any]:
    """JSON-able facts about a training run (stored in the checkpoint and its sidecar)."""
    meta: dict[str, Any] = {
        "name": name,
        "config_hash": config_hash(config),
        "environment": environment_info(),
        "train_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    losses = getattr(history, "losses", None)
    if losses:
        meta.update(steps=len(losses), final_loss=float(losses[-1]))
    if hasattr(history, "state_dict"):  # the curves, so a cached model can still show how it trained
        meta["history"] = history.state_dict()
    return meta


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of weights written by :func:`save_model`: ``{"config", ...training meta}``.

    ``meta["history"]`` (when present) rebuilds the loss curves with
    ``voslab.engine.History.from_state_dict``.
    """
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"no metadata {sidecar} next to the weights {path}; was it written by save_model?")
    return json.loads(sidecar.read_text())
