"""voslab.metrics vs a frame-by-frame port of the official DAVIS evaluation.

The reference below follows ``davisvideochallenge/davis2017-evaluation`` (``db_eval_iou``,
``f_measure``/``_seg2bmap`` with ``cv2.dilate`` and the skimage disk, ``db_statistics``) one
frame and one object at a time. It is also imported by ``tests/test_metrics.py``.

The real cases are the shared DAVIS-2016 train masks (downscaled to 240p there) with perturbed
predictions, scored at 240p and, as DAVIS is evaluated, at 480p (nearest-upsampled).

Run:  python benchmarks/bench_metrics.py [--frames 50] [--objects 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time
import warnings

import cv2
import numpy as np


# ------------------------------------------------------------------ reference (official algorithm)
def ref_disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk(radius) (strict radius), uint8."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return (x**2 + y**2 <= radius**2).astype(np.uint8)


def ref_seg2bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def ref_f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008) -> float:
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = ref_seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = ref_seg2bmap(gt_mask * np.logical_not(void_pixels))
    kernel = ref_disk(bound_pix)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg, n_gt = np.sum(fg_boundary), np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_jaccard(annotation, segmentation, void_pixels=None) -> np.ndarray:
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    void_pixels = np.zeros_like(segmentation) if void_pixels is None else void_pixels.astype(bool)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    j = inters / np.where(union == 0, 1, union)
    j[np.isclose(union, 0)] = 1
    return j


def ref_boundary(annotation, segmentation, void_pixels=None, bound_th=0.008) -> np.ndarray:
    """db_eval_boundary: loop over frames (note the official argument order: (pred, gt))."""
    return np.array([
        ref_f_measure(segmentation[t], annotation[t], None if void_pixels is None else void_pixels[t], bound_th)
        for t in range(annotation.shape[0])
    ])  # fmt: skip


def ref_statistics(per_frame_values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        m = np.nanmean(per_frame_values)
        o = np.nanmean(per_frame_values > 0.5)
    ids = (np.round(np.linspace(1, len(per_frame_values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [per_frame_values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        d = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return m, o, d


def ref_evaluate_semi(gt: np.ndarray, pred: np.ndarray):
    """davis2017 semi-supervised for one sequence: per object J, F (frames 1..T-2) and statistics."""
    gt, pred = gt[1:-1], pred[1:-1]
    n_obj = int(np.max(np.where(gt == 255, 0, gt)))
    out = []
    for k in range(1, n_obj + 1):
        g, p = gt == k, pred == k
        void = g == 255  # as _evaluate_semisupervised: on the one-hot masks, so all False
        j, f = ref_jaccard(g, p, void), ref_boundary(g, p, void)
        out.append((j, f, ref_statistics(j), ref_statistics(f)))
    return out


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
    noise = rng.random(pred.shape) < salt  # salt noise over the whole frame: worst case for cropping
    pred[noise] = rng.integers(0, n_objects + 1, noise.sum())
    return gt, pred


def real_sequences(limit=4):
    """DAVIS-2016 train masks at 240p from the shared data, with shifted/eroded predictions."""
    from voslab.utils import shared_data_dir

    root = shared_data_dir()
    ann = root / "davis2016-train-240p" / "Annotations"
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
def bench(name, gt, pred, repeat):
    from voslab import metrics

    def run_ref():
        return ref_evaluate_semi(gt, pred)

    def run_vos():
        return metrics.evaluate({name: (gt, pred)}, protocol="davis2017-semi")

    ref, vos = run_ref(), run_vos()  # warm-up and results
    t_ref = min(_timeit(run_ref) for _ in range(repeat))
    t_vos = min(_timeit(run_vos) for _ in range(repeat))
    dj = max(np.max(np.abs(r[0] - vos.per_frame[(name, k + 1)]["J"])) for k, r in enumerate(ref))
    df = max(np.max(np.abs(r[1] - vos.per_frame[(name, k + 1)]["F"])) for k, r in enumerate(ref))
    keys = [("J-Mean", "J-Recall", "J-Decay"), ("F-Mean", "F-Recall", "F-Decay")]
    ds = max(
        abs(r[2 + m][i] - vos.rows[k][key])
        for k, r in enumerate(ref) for m in range(2) for i, key in enumerate(keys[m])
    )  # fmt: skip
    return dj, df, ds, t_ref, t_vos


def _timeit(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    parser.add_argument("--real", type=int, default=4, help="number of shared DAVIS-2016 240p sequences")
    args = parser.parse_args()
    cases = {
        "synthetic 480x854": synthetic_sequence(args.frames, args.objects, salt=0.0),
        "synthetic 480x854 + 0.2% salt noise": synthetic_sequence(args.frames, args.objects, salt=0.002),
    }
    real = real_sequences(args.real)
    for seq, pair in real.items():
        cases[f"davis16-240p/{seq}"] = pair
    for seq, pair in real.items():  # DAVIS is scored at 480p: the same masks, nearest-upsampled to 854x480
        cases[f"davis16 240p->480p/{seq}"] = tuple(upsample_480p(m) for m in pair)
    print("| case | T x objects | max|dJ| | max|dF| | max|d stats| | reference s | voslab s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (gt, pred) in cases.items():
        n_obj = int(gt.max())
        dj, df, ds, t_ref, t_vos = bench(name, gt, pred, args.repeat)
        print(f"| {name} | {gt.shape[0]}x{n_obj} | {dj:.1e} | {df:.1e} | {ds:.1e} | {t_ref:.3f} | {t_vos:.4f} | {t_ref / t_vos:.1f}x |")


if __name__ == "__main__":
    main()
