"""voslab.metrics vs the official DAVIS evaluation, called the way the official evaluation calls it.

The reference below re-implements ``davisvideochallenge/davis2017-evaluation``
(``davis2017/metrics.py``, ``davis2017/evaluation.py``, ``davis2017/utils.py``) step by step:

* ``db_eval_iou`` scores J on a whole ``(T, H, W)`` stack at once with NumPy;
* ``db_eval_boundary`` loops over frames, each ``f_measure``: ``_seg2bmap`` of both masks,
  ``cv2.dilate`` with the ``skimage.morphology.disk`` structuring element (rebuilt here with the
  same formula, so skimage is not needed), precision/recall with the official edge cases;
* ``evaluate_semisupervised`` is ``DAVISEvaluation._evaluate_semisupervised``: per object, the void
  mask ``gt == 255`` of the one-hot stack, then J and/or F of the whole stack of that object;
* ``db_statistics``: Mean, Recall, Decay.

The inputs are what the official loader hands to the metrics: one-hot boolean stacks
``(objects, T, H, W)`` without the first and last frame. voslab scores the same stacks with
``jaccard`` / ``boundary_f`` (J, F), and ``evaluate(..., "davis2017-semi")`` from the label maps
(J+F; it also does the label -> mask conversion and the statistics, which the official timing of
J+F only includes for the statistics).

Cases: the shared DAVIS-2016 train masks (240p there, ``voslab.utils.shared_data_dir()``),
nearest-upsampled to 854x480 as DAVIS is evaluated, with shifted/eroded predictions; the same at
240p; and a synthetic 3-object 480p sequence. Times are the best of ``--repeat`` runs, divided by
the number of (object, frame) pairs scored.

Run:  python benchmarks/bench_metrics.py [--real 4] [--repeat 3] [--no-240p] [--no-synthetic]

``tests/test_metrics.py`` imports the reference from this file.
"""
from __future__ import annotations

import argparse
import time
import warnings

import cv2
import numpy as np

VOID_LABEL = 255


# ------------------------------------------------------------------ reference (official algorithm)
def skimage_disk(radius: float) -> np.ndarray:
    """``skimage.morphology.disk(radius)`` (default ``strict_radius=True``) as uint8."""
    span = np.arange(-radius, radius + 1)
    xs, ys = np.meshgrid(span, span)
    return (xs**2 + ys**2 <= radius**2).astype(np.uint8)


def db_eval_iou(annotation, segmentation, void_pixels=None):
    """Official J: one NumPy pass over the whole stack; an empty union scores 1."""
    assert annotation.shape == segmentation.shape
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    if void_pixels is not None:
        assert annotation.shape == void_pixels.shape
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(segmentation)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):  # the official run filters these warnings
        j = inters / union
    if j.ndim == 0:
        j = 1 if np.isclose(union, 0) else j
    else:
        j[np.isclose(union, 0)] = 1
    return j


def seg2bmap(seg):
    """Official ``_seg2bmap`` (the ``width``/``height`` resampling branch is never used)."""
    seg = seg.astype(bool)
    seg[seg > 0] = 1
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    """Official boundary F of one frame (note the argument order: prediction first)."""
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = seg2bmap(gt_mask * np.logical_not(void_pixels))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0
    return 2 * precision * recall / (precision + recall)


def db_eval_boundary(annotation, segmentation, void_pixels=None, bound_th=0.008):
    """Official F: ``f_measure`` frame by frame for a (T, H, W) stack, or one (H, W) frame."""
    assert annotation.shape == segmentation.shape
    if annotation.ndim == 2:
        return f_measure(segmentation, annotation, void_pixels, bound_th=bound_th)
    f_res = np.zeros(annotation.shape[0])
    for t in range(annotation.shape[0]):
        void_t = None if void_pixels is None else void_pixels[t]
        f_res[t] = f_measure(segmentation[t], annotation[t], void_t, bound_th=bound_th)
    return f_res


def db_statistics(per_frame_values):
    """Official Mean, Recall, Decay (int64 bin ids: the official uint8 cast wraps past 255 frames)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(per_frame_values)
        recall = np.nanmean(per_frame_values > 0.5)
    ids = (np.round(np.linspace(1, len(per_frame_values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [per_frame_values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return mean, recall, decay


def evaluate_semisupervised(all_gt_masks, all_res_masks, metric=("J", "F")):
    """``DAVISEvaluation._evaluate_semisupervised`` on one-hot (objects, T, H, W) stacks."""
    j_res, f_res = np.zeros(all_gt_masks.shape[:2]), np.zeros(all_gt_masks.shape[:2])
    for ii in range(all_gt_masks.shape[0]):
        void_masks = all_gt_masks[ii, ...] == VOID_LABEL
        if "J" in metric:
            j_res[ii, :] = db_eval_iou(all_gt_masks[ii, ...], all_res_masks[ii, ...], void_masks)
        if "F" in metric:
            f_res[ii, :] = db_eval_boundary(all_gt_masks[ii, ...], all_res_masks[ii, ...], void_masks)
    return j_res, f_res


def one_hot(labels: np.ndarray, n_objects: int) -> np.ndarray:
    """(T, H, W) label maps -> (objects, T, H, W) bool, as the official loaders (void 255 -> 0)."""
    return np.stack([labels == k for k in range(1, n_objects + 1)])


def semi_inputs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the official semi-supervised evaluation scores: one-hot stacks, first/last frame dropped.

    Object count from the GT; the prediction is split into the same ids (a missing id is an empty
    mask, as in voslab; the official code stops when the prediction has a different count).
    """
    n_obj = int(np.max(np.where(gt == VOID_LABEL, 0, gt)))
    return one_hot(gt[1:-1], n_obj), one_hot(pred[1:-1], n_obj)


def official_semi(gt: np.ndarray, pred: np.ndarray):
    """Official semi-supervised scores of one sequence: per object (J, F, J stats, F stats)."""
    all_gt, all_res = semi_inputs(gt, pred)
    j, f = evaluate_semisupervised(all_gt, all_res, ("J", "F"))
    return [(j[k], f[k], db_statistics(j[k]), db_statistics(f[k])) for k in range(len(j))]


# ------------------------------------------------------------------ data
def synthetic_sequence(n_frames=50, n_objects=3, size=(480, 854), seed=0, salt=0.002):
    """Moving ellipses with wobbly outlines (GT) and a perturbed copy (prediction), instance ids."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    gt = np.zeros((n_frames, h, w), np.uint8)
    pred = np.zeros_like(gt)
    for k in range(1, n_objects + 1):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        vy, vx = rng.normal(0, 2, 2)
        ay, ax = rng.uniform(0.08, 0.2) * h, rng.uniform(0.08, 0.2) * w
        phase = rng.uniform(0, 2 * np.pi, 3)
        for t in range(n_frames):
            y0, x0 = cy + vy * t, cx + vx * t
            ang = np.arctan2(yy - y0, xx - x0)
            wobble = 1 + 0.15 * np.sin(3 * ang + phase[0] + 0.1 * t) + 0.05 * np.sin(7 * ang + phase[1])
            r = ((yy - y0) / ay) ** 2 + ((xx - x0) / ax) ** 2
            gt[t][r < wobble**2] = k
            dy, dx = rng.normal(0, 3, 2)
            rp = ((yy - y0 - dy) / (ay * rng.uniform(0.9, 1.1))) ** 2 + ((xx - x0 - dx) / ax) ** 2
            wp = wobble + 0.08 * np.sin(5 * ang + phase[2] + t)
            pred[t][rp < wp**2] = k
    noise = rng.random(pred.shape) < salt  # salt noise over the whole frame
    pred[noise] = rng.integers(0, n_objects + 1, noise.sum())
    return gt, pred


def real_sequences(limit=4):
    """DAVIS-2016 train masks at 240p from the shared data, with shifted/eroded predictions."""
    from voslab.utils import shared_data_dir

    ann = shared_data_dir() / "davis2016-train-240p" / "Annotations"
    if not ann.is_dir():
        return {}
    from PIL import Image

    out = {}
    rng = np.random.default_rng(1)
    for seq in sorted(p.name for p in ann.iterdir())[:limit]:
        gt = np.stack([np.array(Image.open(f)) for f in sorted((ann / seq).glob("*.png"))])
        gt = (gt > 0).astype(np.uint8)
        pred = np.roll(gt, (2, -3), axis=(1, 2)).copy()
        kernel = np.ones((3, 3), np.uint8)
        for t in range(0, len(pred), 3):
            pred[t] = cv2.erode(pred[t], kernel, iterations=int(rng.integers(1, 4)))
        out[seq] = (gt, pred)
    return out


def upsample_480p(masks: np.ndarray) -> np.ndarray:
    """(T, 240, 427) -> (T, 480, 854) nearest-neighbour (the resolution DAVIS is evaluated at)."""
    return np.stack([cv2.resize(m, (854, 480), interpolation=cv2.INTER_NEAREST) for m in masks])


# ------------------------------------------------------------------ benchmark
def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_case(sequences: dict[str, tuple[np.ndarray, np.ndarray]], repeat: int) -> dict[str, float]:
    """Seconds (best of ``repeat``) for J, F, J+F, official vs voslab, summed over the sequences."""
    from voslab import metrics

    inputs = {name: semi_inputs(gt, pred) for name, (gt, pred) in sequences.items()}

    def off_j():
        return {n: evaluate_semisupervised(g, r, ("J",))[0] for n, (g, r) in inputs.items()}

    def off_f():
        return {n: evaluate_semisupervised(g, r, ("F",))[1] for n, (g, r) in inputs.items()}

    def off_jf():
        out = {}
        for n, (g, r) in inputs.items():
            j, f = evaluate_semisupervised(g, r, ("J", "F"))
            out[n] = (j, f, [(db_statistics(j[k]), db_statistics(f[k])) for k in range(len(j))])
        return out

    def vos_j():  # the one-hot masks carry no void pixel: voslab.evaluate passes none either
        return {n: np.stack([metrics.jaccard(gk, rk) for gk, rk in zip(g, r)]) for n, (g, r) in inputs.items()}

    def vos_f():
        return {n: np.stack([metrics.boundary_f(gk, rk) for gk, rk in zip(g, r)]) for n, (g, r) in inputs.items()}

    def vos_jf():
        return metrics.evaluate(sequences, protocol="davis2017-semi")

    ref_j, ref_f, ref_jf = off_j(), off_f(), off_jf()  # warm-up and the values to compare
    got_j, got_f, got_jf = vos_j(), vos_f(), vos_jf()
    diff = {"J": 0.0, "F": 0.0, "stats": 0.0}
    for n, (j, f, stats) in ref_jf.items():
        diff["J"] = max(diff["J"], np.abs(ref_j[n] - got_j[n]).max(), np.abs(j - ref_j[n]).max())
        diff["F"] = max(diff["F"], np.abs(ref_f[n] - got_f[n]).max(), np.abs(f - ref_f[n]).max())
        for k in range(len(j)):
            pf = got_jf.per_frame[(n, k + 1)]
            diff["J"] = max(diff["J"], np.abs(pf["J"] - j[k]).max())
            diff["F"] = max(diff["F"], np.abs(pf["F"] - f[k]).max())
            row = next(r for r in got_jf.rows if r["sequence"] == n and r["object"] == k + 1)
            got = [row[key] for key in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")]
            diff["stats"] = max(diff["stats"], np.abs(np.subtract(got, [*stats[k][0], *stats[k][1]])).max())
    times = {
        "official J": _best(off_j, repeat), "official F": _best(off_f, repeat),
        "official J+F": _best(off_jf, repeat), "voslab J": _best(vos_j, repeat),
        "voslab F": _best(vos_f, repeat), "voslab J+F": _best(vos_jf, repeat),
    }  # fmt: skip
    n_scored = sum(g.shape[0] * g.shape[1] for g, _ in inputs.values())  # (object, frame) pairs
    return {"pairs": n_scored, **diff, **{k: 1e3 * v / n_scored for k, v in times.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=4, help="number of shared DAVIS-2016 train sequences")
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--no-240p", action="store_true", help="skip the native 240p case")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic 3-object case")
    args = parser.parse_args()

    cases = {}
    real = real_sequences(args.real)
    if real:
        names = "/".join(real)
        cases[f"DAVIS-2016 {names}, 240p->480p"] = {s: tuple(upsample_480p(m) for m in p) for s, p in real.items()}
        if not args.no_240p:
            cases[f"DAVIS-2016 {names}, 240p"] = real
    else:
        print("(no shared DAVIS data found: synthetic case only)")
    if not args.no_synthetic:
        cases["synthetic 480x854, 3 objects, 50 frames"] = {"synthetic": synthetic_sequence(50, 3, salt=0.0)}

    print("ms per (object, frame); best of", args.repeat, "runs; official = davis2017-evaluation algorithm")
    head = ["case", "pairs", "official J / F / J+F", "voslab J / F / J+F", "speed-up J / F / J+F"]
    head.append("max abs diff J, F, stats")
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|")
    for name, sequences in cases.items():
        r = bench_case(sequences, args.repeat)
        off = [r[f"official {m}"] for m in ("J", "F", "J+F")]
        vos = [r[f"voslab {m}"] for m in ("J", "F", "J+F")]
        cells = [
            name, str(r["pairs"]), " / ".join(f"{x:.3f}" for x in off), " / ".join(f"{x:.3f}" for x in vos),
            " / ".join(f"{a / b:.1f}x" for a, b in zip(off, vos)), f"{r['J']:.1e}, {r['F']:.1e}, {r['stats']:.1e}",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
