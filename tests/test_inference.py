"""Tests for voslab.inference: the evaluation loop, prediction checks and saving masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from test_cli import make_squares_dataset
from voslab.data.davis import DAVIS
from voslab.data.io import read_mask
from voslab.errors import VOSDataError
from voslab.inference import evaluate_model, predict, save_predictions


@pytest.fixture
def val(tmp_path):
    return DAVIS(make_squares_dataset(tmp_path / "data"), "val", year=2016)


def shifted(masks: np.ndarray, dx: int) -> np.ndarray:
    return np.roll(masks, dx, axis=-1)


def brute_force_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Pixel loop IoU of two (H, W) masks (empty union = 1, as DAVIS)."""
    inter = union = 0
    for a, b in zip(gt.ravel(), pred.ravel()):
        inter += bool(a) and bool(b)
        union += bool(a) or bool(b)
    return 1.0 if union == 0 else inter / union


def test_scores_match_hand_computed_iou(val):
    model = nn.Linear(1, 1).train()
    seen = []

    def predict_fn(m, seq):
        seen.append((m.training, torch.is_inference_mode_enabled()))
        return shifted(seq.masks(), 3)

    results, preds = evaluate_model(model, val, predict_fn, "davis2016", progress=False)
    assert seen == [(False, True), (False, True)]  # eval mode, inference mode
    assert model.training  # restored
    assert sorted(preds) == ["c", "d"] and preds["c"].dtype == np.uint8
    for row in results.rows:
        gt = val[row["sequence"]].masks()
        # davis2016 leaves out the first and last frame
        ious = [brute_force_iou(g, p) for g, p in zip(gt[1:-1], shifted(gt, 3)[1:-1])]
        assert row["J-Mean"] == pytest.approx(np.mean(ious))
    assert 0 < results.summary["J-Mean"] < 1


def test_perfect_and_empty_predictions(val):
    model = nn.Identity()
    perfect, _ = evaluate_model(model, val, lambda m, s: s.masks(), "davis2016", progress=False)
    assert perfect.summary["J&F-Mean"] == pytest.approx(1.0)
    empty, _ = evaluate_model(model, val, lambda m, s: np.zeros((len(s), *s.size), np.uint8), "davis2016",
                              progress=False, max_sequences=1)
    assert len(empty.rows) == 1 and empty.summary["J-Mean"] == pytest.approx(0.0)


def test_predictions_are_checked_and_converted(val):
    model = nn.Identity()
    seq = val["c"]
    as_tensor = predict(model, seq, lambda m, s: torch.from_numpy(s.masks()).float())
    assert as_tensor.dtype == np.uint8 and np.array_equal(as_tensor, seq.masks())
    with pytest.raises(VOSDataError, match="'c'.*shape"):
        predict(model, seq, lambda m, s: s.masks()[:, :10])
    with pytest.raises(VOSDataError, match="0..255"):
        predict(model, seq, lambda m, s: s.masks() * 0.5)


def test_save_predictions_round_trip(tmp_path, val):
    preds = {"c": (val["c"].masks() * 2).astype(np.uint8)}
    out = save_predictions(tmp_path / "pred", preds)
    files = sorted((out / "c").glob("*.png"))
    assert [f.name for f in files] == [f"{t:05d}.png" for t in range(len(val["c"]))]
    assert Image.open(files[0]).mode == "P"  # indexed PNG with the DAVIS palette
    np.testing.assert_array_equal(np.stack([read_mask(f) for f in files]), preds["c"])


def test_frame_records_join_scores_areas_and_the_generators_flags(tmp_path):
    from voslab.data import synthetic
    from voslab.inference import frame_records

    root = synthetic.generate(tmp_path / "synth", "val", n_videos=2, n_frames=6, size=(48, 64), seed=3,
                              scenario="transient_lookalikes")
    videos = DAVIS(root, "val", year=2016, annotations="Annotations_binary")
    results, predictions = evaluate_model(nn.Identity(), videos, lambda m, s: shifted(s.masks(), 2), "davis2016",
                                          progress=False)
    records = frame_records(results, predictions, videos)
    assert sorted(records) == sorted(videos.names)
    for name, record in records.items():
        frames = record["frames"]
        assert frames == list(range(1, 5))                       # davis2016: first and last frame not scored
        assert record["J"] == pytest.approx(list(results.per_frame[(name, 1)]["J"]))
        truth = videos[name].masks()[frames] > 0
        assert record["gt_area"] == pytest.approx(truth.mean(axis=(1, 2)).tolist())
        assert record["pred_area"] == pytest.approx((shifted(videos[name].masks(), 2)[frames] > 0).mean(axis=(1, 2)).tolist())
        flags = synthetic.frame_flags(synthetic.read_meta(root, name))
        assert record["scenario"] == "transient_lookalikes"
        assert record["lookalikes"] == flags["lookalikes"][frames].tolist()
    assert any(any(r["lookalikes"]) for r in records.values())


def test_frame_records_on_real_data_have_no_flags(val):
    from voslab.inference import frame_records

    results, predictions = evaluate_model(nn.Identity(), val, lambda m, s: s.masks(), "davis2016", progress=False)
    records = frame_records(results, predictions, val)
    assert all(set(r) == {"frames", "J", "pred_area", "gt_area"} for r in records.values())
