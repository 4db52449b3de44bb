"""voslab.metrics against hand-computed cases and a re-implementation of the official DAVIS code."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from voslab import metrics
from voslab.errors import VOSDataError

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_metrics.py"


@pytest.fixture(scope="module")
def ref():
    """The reference implementation of the official davis2017-evaluation algorithm (the benchmark's)."""
    spec = importlib.util.spec_from_file_location("bench_metrics", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blobs(rng, shape, n=3):
    """Random rectangles/ellipses as a bool (T, H, W) stack (structured, unlike pure noise)."""
    t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros(shape, bool)
    for i in range(t):
        for _ in range(n):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 3), rng.uniform(1, w / 3)
            out[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return out


# ------------------------------------------------------------------ hand-computed
def test_jaccard_hand_cases():
    a = np.zeros((4, 4), bool)
    assert metrics.jaccard(a, a) == 1.0  # empty / empty
    b = a.copy()
    b[:2, :2] = True
    assert metrics.jaccard(a, b) == 0.0
    c = a.copy()
    c[:2, :] = True  # 8 px, 4 shared with b
    assert metrics.jaccard(b, c) == pytest.approx(0.5)
    void = a.copy()
    void[0, 2:] = True  # removes 2 px of c from the union
    assert metrics.jaccard(b, c, void) == pytest.approx(4 / 6)
    stack = metrics.jaccard(np.stack([a, b]), np.stack([a, c]))
    assert stack.shape == (2,) and stack.dtype == np.float64
    np.testing.assert_allclose(stack, [1.0, 0.5])


def test_seg2bmap_hand_case():
    seg = np.zeros((4, 5), bool)
    seg[1:3, 1:3] = True
    expected = np.array(
        [[1, 1, 1, 0, 0],
         [1, 0, 1, 0, 0],
         [1, 1, 1, 0, 0],
         [0, 0, 0, 0, 0]], bool)  # fmt: skip
    np.testing.assert_array_equal(metrics.seg2bmap(seg), expected)
    full = np.ones((3, 3), bool)  # only the last-row/column rules can fire: nothing differs
    assert not metrics.seg2bmap(full).any()
    # Last column: a pixel there is a boundary iff it differs from the one below.
    col = np.zeros((3, 3), bool)
    col[0, 2] = True
    np.testing.assert_array_equal(metrics.seg2bmap(col)[:, 2], [True, False, False])


def test_boundary_f_edge_cases():
    empty = np.zeros((20, 30), bool)
    obj = empty.copy()
    obj[5:10, 5:12] = True
    assert metrics.boundary_f(empty, empty) == 1.0  # no boundary on either side: P = R = 1
    assert metrics.boundary_f(obj, empty) == 0.0  # pred has none, GT has one: P=1, R=0
    assert metrics.boundary_f(empty, obj) == 0.0  # pred has one, GT none: P=0, R=1
    assert metrics.boundary_f(obj, obj) == 1.0
    far = np.zeros_like(obj)
    far[12:18, 20:28] = True
    assert metrics.boundary_f(obj, far, bound_th=1) == 0.0  # P = R = 0 -> F = 0
    assert metrics.boundary_f(obj, far, bound_th=20) == 1.0  # everything within 20 px


def test_boundary_radius_and_disk():
    assert metrics.boundary_radius((480, 854)) == 8
    assert metrics.boundary_radius((1080, 1920)) == 18
    assert metrics.boundary_radius((480, 854), bound_th=3) == 3
    with pytest.raises(ValueError, match="integer"):
        metrics.boundary_radius((10, 10), bound_th=2.5)
    d = metrics.disk(8)
    assert d.shape == (17, 17) and d.sum() == 197  # skimage.morphology.disk(8).sum()
    np.testing.assert_array_equal(metrics.disk(2).astype(int).sum(axis=0), [1, 3, 5, 3, 1])


# ------------------------------------------------------------------ against the reference
@pytest.mark.parametrize("radius", [0, 1, 4, 8, 63, 64, 70])
def test_dilate_disk_equals_cv2(ref, radius):
    rng = np.random.default_rng(radius)
    maps = rng.random((3, 37, 150)) < 0.01
    expected = np.stack([cv2.dilate(m.astype(np.uint8), ref.skimage_disk(radius)) for m in maps]).astype(bool)
    np.testing.assert_array_equal(metrics.dilate_disk(maps, radius), expected)


def test_seg2bmap_equals_reference(ref):
    rng = np.random.default_rng(0)
    for shape in [(2, 1, 1), (2, 1, 7), (2, 9, 1), (3, 17, 64), (3, 31, 129), (2, 40, 200)]:
        masks = rng.random(shape) < 0.4
        expected = np.stack([ref.seg2bmap(m) for m in masks])
        np.testing.assert_array_equal(metrics.seg2bmap(masks), expected)


@pytest.mark.parametrize("seed", range(6))
def test_j_and_f_agree_with_reference(ref, seed):
    rng = np.random.default_rng(seed)
    shape = (4, int(rng.integers(5, 120)), int(rng.integers(5, 260)))
    gt, pred = _blobs(rng, shape), _blobs(rng, shape)
    pred[1] = gt[1]  # a perfect frame
    pred[2] = False  # an empty prediction
    void = rng.random(shape) < 0.05 if seed % 2 else None
    for bound_th in (0.008, 0.03, 2):
        np.testing.assert_allclose(
            metrics.boundary_f(gt, pred, void, bound_th), ref.db_eval_boundary(gt, pred, void, bound_th), atol=1e-6
        )
    np.testing.assert_allclose(metrics.jaccard(gt, pred, void), ref.db_eval_iou(gt, pred, void), atol=1e-6)


def _numpy_stack_iou(gt, pred, void):
    """J of a (T, H, W) stack in plain NumPy: void pixels out of both counts, empty union -> 1."""
    keep = ~void.astype(bool)
    inter = (gt.astype(bool) & pred.astype(bool) & keep).sum(axis=(1, 2))
    union = ((gt.astype(bool) | pred.astype(bool)) & keep).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


@pytest.mark.parametrize("width", [1, 63, 64, 65, 203])
def test_jaccard_equals_plain_numpy_stack_iou(width):
    rng = np.random.default_rng(width)
    shape = (7, 23, width)
    gt, pred = rng.random(shape) < 0.3, rng.random(shape) < 0.3
    if width >= 3:  # structured masks too
        gt, pred = gt | _blobs(rng, shape), pred | _blobs(rng, shape)
    void = rng.random(shape) < 0.2
    gt[0] = pred[0] = False  # empty union -> 1
    void[1] = True  # everything void: the union left is empty -> 1
    gt[1], pred[1] = True, False
    pred[2] = gt[2]  # perfect except where void hides nothing: 1
    pred[3] = ~gt[3]  # disjoint: 0 (unless nothing is left)
    void[4] = gt[4] & ~pred[4]  # void removes exactly the pixels gt has and pred lacks
    expected = _numpy_stack_iou(gt, pred, void)
    assert expected[0] == 1.0 and expected[1] == 1.0
    # exact, not approximate: the same integer counts divided once
    np.testing.assert_array_equal(metrics.jaccard(gt, pred, void), expected)
    np.testing.assert_array_equal(metrics.jaccard(gt, pred), _numpy_stack_iou(gt, pred, np.zeros(shape, bool)))
    # castable-to-bool inputs (uint8 0/255, int labels, floats, strided views) read nonzero as True
    labels = (gt * rng.integers(1, 300, shape)).astype(np.int32)
    np.testing.assert_array_equal(
        metrics.jaccard(gt.astype(np.uint8) * 255, pred.astype(np.float32) * 0.5, void.astype(np.uint8)), expected
    )
    np.testing.assert_array_equal(metrics.jaccard(labels, pred, void), expected)
    wide = np.zeros((7, 23, 2 * width), bool)
    wide[..., ::2] = pred
    np.testing.assert_array_equal(metrics.jaccard(gt, wide[..., ::2], void), expected)
    # one frame: a float, same convention
    assert metrics.jaccard(gt[4], pred[4], void[4]) == expected[4]
    assert metrics.jaccard(gt[1], pred[1], void[1]) == 1.0


def test_noise_masks_agree_with_reference(ref):
    rng = np.random.default_rng(7)
    gt, pred = rng.random((3, 60, 90)) < 0.3, rng.random((3, 60, 90)) < 0.5
    np.testing.assert_allclose(metrics.boundary_f(gt, pred), ref.db_eval_boundary(gt, pred), atol=1e-6)


def test_evaluate_semi_agrees_with_reference(ref):
    gt, pred = ref.synthetic_sequence(n_frames=8, n_objects=3, size=(120, 214), seed=3)
    res = metrics.evaluate({"s": (gt, pred)}, protocol="davis2017-semi")
    for k, (j, f, js, fs) in enumerate(ref.official_semi(gt, pred)):
        np.testing.assert_allclose(res.per_frame[("s", k + 1)]["J"], j, atol=1e-6)
        np.testing.assert_allclose(res.per_frame[("s", k + 1)]["F"], f, atol=1e-6)
        row = res.rows[k]
        np.testing.assert_allclose([row["J-Mean"], row["J-Recall"], row["J-Decay"]], js, atol=1e-6)
        np.testing.assert_allclose([row["F-Mean"], row["F-Recall"], row["F-Decay"]], fs, atol=1e-6)


def test_threaded_chunks_agree_with_reference(ref, monkeypatch):
    # large frames are scored by a thread pool, one chunk of frames per task: force it on small ones
    monkeypatch.setattr(metrics, "_THREADED_PIXELS", 0)
    monkeypatch.setattr(metrics, "_WORKERS", 3)
    gt, pred = ref.synthetic_sequence(n_frames=40, n_objects=2, size=(96, 160), seed=5)
    res = metrics.evaluate({"s": (gt, pred)}, protocol="davis2017-semi")
    for k, (j, f, _, _) in enumerate(ref.official_semi(gt, pred)):
        np.testing.assert_allclose(res.per_frame[("s", k + 1)]["J"], j, atol=1e-12)
        np.testing.assert_allclose(res.per_frame[("s", k + 1)]["F"], f, atol=1e-12)


# ------------------------------------------------------------------ statistics
def test_statistics_decay_bins():
    values = np.arange(1, 9, dtype=float) / 10  # N = 8 -> ids [0, 2, 4, 5, 7]
    mean, recall, decay = metrics.statistics(values)
    assert mean == pytest.approx(0.45)
    assert recall == pytest.approx(3 / 8)  # 0.6, 0.7, 0.8 (0.5 itself is not > 0.5)
    # bin 0 = values[0:3] = .1 .2 .3, bin 3 = values[5:8] = .6 .7 .8
    assert decay == pytest.approx(0.2 - 0.7)
    assert metrics.statistics([0.7])[2] == 0.0
    assert np.isclose(metrics.statistics([1.0, np.nan, 0.0])[0], 0.5)  # nanmean


def test_statistics_long_sequences_do_not_wrap():
    values = np.r_[np.ones(150), np.zeros(150)]  # 300 frames: the official uint8 cast would wrap
    assert metrics.statistics(values)[2] == pytest.approx(1.0)


# ------------------------------------------------------------------ protocols
def _square(t, h=20, w=30, box=(5, 12, 5, 15), value=1):
    m = np.zeros((t, h, w), np.uint8)
    m[:, box[0] : box[1], box[2] : box[3]] = value
    return m


def test_davis2016_drops_first_and_last_frame():
    gt = _square(5, value=255)
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = 0  # wrong only on the frames that are not scored
    res = metrics.evaluate({"a": (gt, pred)}, protocol="davis2016")
    assert res.summary["J-Mean"] == 1.0 and res.summary["F-Mean"] == 1.0
    np.testing.assert_array_equal(res.per_frame[("a", 1)]["frames"], [1, 2, 3])
    pred[2] = 0
    res = metrics.evaluate({"a": (gt, pred)}, protocol="davis2016")
    assert res.summary["J-Mean"] == pytest.approx(2 / 3)
    assert res.summary["J&F-Mean"] == pytest.approx((res.summary["J-Mean"] + res.summary["F-Mean"]) / 2)
    with pytest.raises(VOSDataError, match="'short'"):
        metrics.evaluate({"short": (gt[:2], pred[:2])}, protocol="davis2016")


def test_davis2017_semi_objects_and_padding():
    gt = _square(4) + _square(4, box=(14, 18, 20, 28), value=2)
    pred = _square(4)  # object 2 missing -> scored as an empty mask
    res = metrics.evaluate({"seq": (gt, pred)}, protocol="davis2017-semi")
    assert [r["object"] for r in res.rows] == [1, 2]
    assert res.rows[0]["J-Mean"] == 1.0 and res.rows[1]["J-Mean"] == 0.0
    assert res.summary["J-Mean"] == 0.5  # mean over objects
    bad = pred.copy()
    bad[1:3, 0, 0] = 3
    with pytest.raises(VOSDataError, match="'seq'.*object id 3"):
        metrics.evaluate({"seq": (gt, bad)}, protocol="davis2017-semi")


def test_davis2017_unsup_hungarian_and_all_frames():
    gt = _square(3) + _square(3, box=(14, 18, 20, 28), value=2)
    pred = np.zeros_like(gt)
    pred[gt == 1] = 2  # proposals swapped: 2 covers object 1, 1 covers object 2
    pred[gt == 2] = 1
    pred[:, 0:2, 0:2] = 3  # a spurious third proposal
    res = metrics.evaluate({"s": (gt, pred)}, protocol="davis2017-unsup")
    assert [(r["object"], r["proposal"]) for r in res.rows] == [(1, 2), (2, 1)]
    assert res.summary["J-Mean"] == 1.0
    np.testing.assert_array_equal(res.per_frame[("s", 1)]["frames"], [0, 1, 2])  # all frames
    only_one = np.where(gt == 1, 1, 0).astype(np.uint8)  # fewer proposals than objects
    res = metrics.evaluate({"s": (gt, only_one)}, protocol="davis2017-unsup")
    assert [r["proposal"] for r in res.rows] == [1, None]
    assert res.summary["J-Mean"] == 0.5


def test_davis2017_unsup_void_and_too_many_proposals():
    gt = _square(3)
    gt[:, 0, :] = 255  # void row
    pred = _square(3)
    pred[:, 0, :] = 1  # predicted on void only: ignored
    res = metrics.evaluate({"v": (gt, pred)}, protocol="davis2017-unsup")
    assert res.summary["J-Mean"] == 1.0
    many = pred.copy()
    many[0, 19, :21] = np.arange(1, 22)
    with pytest.raises(VOSDataError, match="'v'.*21 proposals"):
        metrics.evaluate({"v": (gt, many)}, protocol="davis2017-unsup")


def test_evaluate_errors_name_the_sequence():
    gt = _square(3)
    with pytest.raises(VOSDataError, match="'x'"):
        metrics.evaluate({"x": (gt, gt[:, :10])})
    with pytest.raises(ValueError, match="protocol"):
        metrics.evaluate({"x": (gt, gt)}, protocol="davis2018")


def test_results_formats():
    gt = _square(4)
    res = metrics.evaluate({"a": (gt, gt), "b": (gt, np.zeros_like(gt))}, protocol="davis2017-semi")
    d = res.to_dict()
    assert set(d["summary"]) == set(metrics.SUMMARY_KEYS)
    assert d["summary"]["J-Mean"] == 0.5 and len(d["rows"]) == 2
    assert "| J&F-Mean |" in res.to_markdown() and "| a | 1 |" in res.to_markdown()
    assert res._repr_html_().startswith("<div>") and "<table>" in res._repr_html_()
    import json

    json.dumps(d)
