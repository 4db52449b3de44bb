"""Run any model over a dataset with its inference protocol, and score it with ``voslab.metrics``.

``predict_fn(model, seq) -> uint8 (T, H, W)`` is the paper's protocol (e.g.
``functools.partial(recipe.predict_sequence, cfg=cfg)``); this module only loops, checks and scores.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from voslab.errors import VOSDataError

__all__ = ["predict", "iter_predictions", "evaluate_model", "frame_records", "save_predictions"]

PredictFn = Callable[[nn.Module, Any], np.ndarray]


def predict(model: nn.Module, seq: Any, predict_fn: PredictFn) -> np.ndarray:
    """``predict_fn(model, seq)`` in eval mode under ``torch.inference_mode()``; checks the result
    is ``uint8 (T, H, W)`` at the sequence's size. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            pred = predict_fn(model, seq)
    finally:
        model.train(was_training)
    if torch.is_tensor(pred):
        pred = pred.cpu().numpy()
    pred = np.asarray(pred)
    expected = (len(seq), *seq.size)
    if pred.shape != expected:
        raise VOSDataError(f"prediction for sequence {seq.name!r} has shape {pred.shape}, expected {expected} "
                           "(T, H, W) at the video's size: resize the masks back in predict_sequence")
    if pred.dtype != np.uint8:
        if pred.min() < 0 or pred.max() > 255 or not np.array_equal(pred, np.round(pred)):
            raise VOSDataError(f"prediction for sequence {seq.name!r} is {pred.dtype} with values outside "
                               "0..255 integers; return object ids (uint8)")
        pred = pred.astype(np.uint8)
    return pred


def iter_predictions(model: nn.Module, seq: Any, stream_fn: Callable[[nn.Module, Any], Iterable]) -> Iterator:
    """``stream_fn(model, seq)`` (a recipe's ``predict_stream``) in eval mode: yields ``(t, uint8 (H, W))``
    in frame order, each checked to be at the sequence's size. Each step runs under
    ``torch.inference_mode()`` (not the caller's code between steps); the train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        stream = iter(stream_fn(model, seq))
        expected_t = 0
        while True:
            with torch.inference_mode():
                try:
                    t, mask = next(stream)
                except StopIteration:
                    break
            mask = np.asarray(mask.cpu().numpy() if torch.is_tensor(mask) else mask)
            if t != expected_t or mask.shape != tuple(seq.size):
                raise VOSDataError(f"streamed prediction for sequence {seq.name!r}: got frame {t} of shape "
                                   f"{mask.shape}, expected frame {expected_t} of shape {tuple(seq.size)}")
            expected_t += 1
            yield t, mask.astype(np.uint8, copy=False)
        if expected_t != len(seq):
            raise VOSDataError(f"streamed prediction for sequence {seq.name!r} stopped after {expected_t} "
                               f"of {len(seq)} frames")
    finally:
        model.train(was_training)


def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def evaluate_model(model: nn.Module, dataset: Iterable[Any], predict_fn: PredictFn, protocol: str,
                   progress: bool = True, max_sequences: int | None = None):
    """Predict every sequence of ``dataset`` and score it.

    Returns ``(metrics.Results, {sequence name: uint8 (T, H, W) prediction})``.
    ``protocol``: ``"davis2016"`` | ``"davis2017-semi"`` | ``"davis2017-unsup"`` (see ``voslab.metrics``).
    """
    from voslab import metrics

    sequences = list(dataset)[:max_sequences]
    if not sequences:
        raise VOSDataError("evaluate_model: the dataset holds no sequences; check its root and split")
    predictions: dict[str, np.ndarray] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seq in _progress(sequences, progress, "evaluate"):
        predictions[seq.name] = predict(model, seq, predict_fn)
        pairs[seq.name] = (seq.masks(), predictions[seq.name])  # gt (T, H, W), pred (T, H, W)
    return metrics.evaluate(pairs, protocol), predictions


def frame_records(results: Any, predictions: Mapping[str, np.ndarray], dataset: Any) -> dict[str, dict]:
    """Per-frame scores of an evaluation, for breakdowns (``voslab.stats.pooled_by_flag``):
    ``{video: {"frames", "J", "pred_area", "gt_area"}}`` over the frames the protocol scored (first
    object of each video), plus, on voslab's synthetic data, its ``"scenario"`` and one list of
    booleans per frame flag (``voslab.data.synthetic.FRAME_FLAGS``).

    ``results``, ``predictions``: what :func:`evaluate_model` returned on ``dataset``."""
    from voslab.data import synthetic

    root = getattr(dataset, "root", None)
    records: dict[str, dict] = {}
    for (name, _), scores in results.per_frame.items():
        if name in records:
            continue
        frames = np.asarray(scores["frames"])
        truth = dataset[name].masks()[frames] > 0          # (n, H, W) bool
        predicted = predictions[name][frames] > 0            # (n, H, W) bool
        record = {"frames": frames.tolist(), "J": np.asarray(scores["J"], dtype=float).tolist(),
                  "pred_area": predicted.mean(axis=(1, 2)).tolist(), "gt_area": truth.mean(axis=(1, 2)).tolist()}
        if root is not None and synthetic.has_meta(root, name):
            meta = synthetic.read_meta(root, name)
            flags = synthetic.frame_flags(meta)               # {flag: (T,) bool}
            record["scenario"] = meta.get("scenario", synthetic.DEFAULT_SCENARIO)
            record |= {flag: flags[flag][frames].tolist() for flag in synthetic.FRAME_FLAGS}
        records[name] = record
    return records


def save_predictions(out_dir: str | os.PathLike, predictions: Mapping[str, np.ndarray]) -> Path:
    """Write ``out_dir/<sequence>/00000.png ...`` as indexed DAVIS-palette PNGs (official layout)."""
    from voslab.data.davis import write_masks

    out_dir = Path(out_dir)
    for name, masks in predictions.items():
        write_masks(out_dir / name, masks)
    return out_dir
