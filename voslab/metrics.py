"""DAVIS metrics: region similarity J, boundary F, Mean/Recall/Decay and the three DAVIS protocols.

The numbers agree exactly with the official evaluation (``davisvideochallenge/davis2017-evaluation``
and ``fperazzi/davis``). The official J is one NumPy pass over a ``(T, H, W)`` stack of bytes and
the official F runs frame by frame; here both are computed for the whole stack on bits:

* masks are packed 64 pixels per ``uint64`` word along the width (``np.packbits``, straight from
  boolean/integer stacks, no cast or copy), so a boolean operation on a word handles 64 pixels;
  J is then three popcounts per frame of those words;
* ``seg2bmap`` (the 1-pixel boundary map) is three array shifts and XORs on the packed stack;
* the disk dilation (``skimage.morphology.disk``, as ``cv2.dilate`` uses it in the official
  code) is decomposed into rows: a disk of radius r is the union over ``dy`` in [-r, r] of a
  horizontal segment of half-width ``floor(sqrt(r^2 - dy^2))`` shifted by ``dy`` rows. Each
  horizontal dilation is built incrementally with bit shifts, then OR-ed over the row shifts.

``benchmarks/bench_metrics.py`` compares this with the official algorithm, called as the official
evaluation calls it (J on the whole stack, F frame by frame); docs/results.md has the numbers.
"""
from __future__ import annotations

import html
import math
import os
from concurrent.futures import ThreadPoolExecutor
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voslab.errors import VOSDataError

__all__ = [
    "PROTOCOLS",
    "Results",
    "boundary_f",
    "boundary_radius",
    "dilate_disk",
    "disk",
    "evaluate",
    "jaccard",
    "seg2bmap",
    "statistics",
]

PROTOCOLS = ("davis2016", "davis2017-semi", "davis2017-unsup")
VOID_LABEL = 255
MAX_PROPOSALS = 20
_PACK_CHUNK_PIXELS = 2**21  # label maps are compared with a label this many pixels at a time (cache-sized)
_CANVAS_CHUNK = 12  # frames sharing one crop (canvas)
_WORKERS = min(os.cpu_count() or 1, 4)  # threads scoring chunks of frames
_THREADED_PIXELS = 2**18  # frames at least this large (480p: 409,920 px) are scored by the threads


# --------------------------------------------------------------------------------------------
# Bit-packed masks: 64 pixels of one row per uint64 word (bit b of word j = pixel 64 j + b)
# --------------------------------------------------------------------------------------------
def _pack(masks: np.ndarray) -> np.ndarray:
    """Pack a boolean (..., H, W) stack into (..., H, ceil(W/64)) uint64 words."""
    packed = np.packbits(masks, axis=-1, bitorder="little")  # (..., H, ceil(W/8)) uint8
    extra = -packed.shape[-1] % 8
    if extra:
        packed = np.pad(packed, [(0, 0)] * (packed.ndim - 1) + [(0, extra)])
    return np.ascontiguousarray(packed).view("<u8")


def _unpack(words: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`_pack`: (..., H, Wn) uint64 -> bool (..., H, width)."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=width, bitorder="little").astype(bool)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Number of set bits per frame: (T, ...) uint64 -> (T,) int64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        bits = np.bitwise_count(words)
    else:
        bits = _BYTE_POPCOUNT[np.ascontiguousarray(words).view(np.uint8)]
    return bits.reshape(bits.shape[0], -1).sum(axis=1, dtype=np.int64)


def _or_pull(acc: np.ndarray, src: np.ndarray, k: int) -> None:
    """``acc |= pulled`` where ``pulled[x] = src[x + k]`` over the flat bit string of 1-D arrays.

    Bits cross word (and row) borders: canvases keep a zero pad word at the end of every row, so
    what crosses a row border lands in the pad word and never reaches a real pixel.
    """
    n = src.size
    q, s = divmod(abs(k), 64)
    if q >= n:
        return
    if k >= 0:  # bit x takes bit x + k: word j from words j+q (>> s) and j+q+1 (<< 64-s)
        acc[: n - q] |= src[q:] >> s if s else src[q:]
        if s:
            acc[: n - q - 1] |= src[q + 1 :] << (64 - s)
    else:  # bit x takes bit x - |k|: word j from words j-q (<< s) and j-q-1 (>> 64-s)
        acc[q:] |= src[: n - q] << s if s else src[: n - q]
        if s:
            acc[q + 1 :] |= src[: n - q - 1] >> (64 - s)


def _pulled(src: np.ndarray, k: int) -> np.ndarray:
    """A new array with ``out[x] = src[x + k]`` (zeros shifted in), same shape as ``src``."""
    out = np.zeros_like(src)
    _or_pull(out.reshape(-1), src.reshape(-1), k)
    return out


@dataclass(frozen=True)
class _Canvas:
    """The crop shared by masks compared together: the rows/words any of them touches, plus margins.

    Outside it every mask is empty, so J and F computed on the canvas equal the full-frame values.
    Each canvas row ends with a zero pad word (``pad``) that absorbs bits shifted across rows.
    """

    rows: slice
    words: slice
    pad: int  # zero words appended to every row
    last_col_bit: int | None  # bit index (in canvas row) of the image's last column, if inside

    @property
    def row_words(self) -> int:
        return self.words.stop - self.words.start + self.pad

    def place(self, words: np.ndarray) -> np.ndarray:
        """(T, H, Wn + pad) packed full frames -> (T, Hc, row_words) contiguous canvas."""
        if self.rows == slice(0, words.shape[1]) and self.words == slice(0, words.shape[2] - self.pad):
            return words  # the canvas is the whole frame: already laid out with pad words
        crop = words[:, self.rows, self.words]
        out = np.zeros((*crop.shape[:2], self.row_words), dtype=np.uint64)
        out[..., : crop.shape[-1]] = crop
        return out


def _pad_words(radius: int) -> int:
    """Zero words appended to every packed row: >= radius + 1 zero bits after the last pixel."""
    return max(1, -(-(radius + 1) // 64))


def _make_canvas(packed: list[np.ndarray], width: int, radius: int) -> _Canvas:
    pad = _pad_words(radius)
    height, n_words = packed[0].shape[1], packed[0].shape[2] - pad
    occupied = np.zeros((height, n_words), dtype=bool)
    for words in packed:
        occupied |= words[..., :n_words].any(axis=0)  # (H, Wn)
    rows, cols = np.flatnonzero(occupied.any(axis=1)), np.flatnonzero(occupied.any(axis=0))
    if rows.size == 0:  # every mask empty
        rows = cols = np.array([0])
    # one row above / one word left: boundaries sit half a pixel towards the origin;
    # one row below so the canvas' last row is empty unless it is the image's last row.
    row_slice = slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height))
    word_slice = slice(max(int(cols[0]) - 1, 0), int(cols[-1]) + 1)
    last_word, last_bit = divmod(width - 1, 64)
    last_col = (last_word - word_slice.start) * 64 + last_bit if word_slice.stop > last_word else None
    return _Canvas(row_slice, word_slice, pad, last_col)


def _canvas_seg2bmap(seg: np.ndarray, canvas: _Canvas) -> np.ndarray:
    """``seg2bmap`` of the official code on a (T, Hc, R) canvas stack.

    With ``h = seg ^ east`` and ``v = seg ^ south``: ``seg ^ south_east = v ^ south(h)``, so the
    official ``h | v | (seg ^ south_east)`` equals ``h | v | south(h)`` (fewer array passes).
    The image's last column has no east neighbour (``h = 0`` there), the last row no south one
    (``v = 0``; a canvas' last row is either the image's or an empty margin row).
    """
    h = _pulled(seg, 1)  # east neighbour: h[x] = seg[x + 1]
    h ^= seg
    if canvas.last_col_bit is not None:
        word, bit = divmod(canvas.last_col_bit, 64)
        h[..., word] &= ~(np.uint64(1) << np.uint64(bit))
    h[..., h.shape[-1] - canvas.pad :] = 0  # pad words hold bits pulled across rows
    bmap = h.copy()
    bmap[:, :-1] |= h[:, 1:]  # south(h)
    bmap[:, :-1] |= seg[:, :-1] ^ seg[:, 1:]  # v
    return bmap


def _disk_half_widths(radius: int) -> list[int]:
    """Half-width of each row ``dy = 0..r`` of ``disk(r)``: ``floor(sqrt(r^2 - dy^2))``."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]


def _horizontal_segments(bmap: np.ndarray, widths: list[int]) -> dict[int, np.ndarray]:
    """Horizontal dilations ``G_c`` (segment of half-width c) for each c in ``widths``.

    Doubling: ``G_c = G_a | pull(G_a, c - a) | pull(G_a, a - c)`` for any ``a >= (c - 1) / 2``,
    so each width costs two pulls from the largest width already built.
    """
    segments = {0: bmap}

    def grow(a: int, c: int) -> None:
        grown = segments[a].copy()
        _or_pull(grown.reshape(-1), segments[a].reshape(-1), c - a)
        _or_pull(grown.reshape(-1), segments[a].reshape(-1), a - c)
        segments[c] = grown

    for target in sorted(set(widths) - {0}):
        while 2 * max(segments) + 1 < target:  # stepping stones 1, 3, 7, ...
            grow(max(segments), 2 * max(segments) + 1)
        if target not in segments:
            grow(max(segments), target)
    return segments


def _canvas_dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a (T, Hc, R) canvas stack with ``disk(radius)``, all frames at once.

    disk(r) = union over dy of a horizontal segment of half-width ``half[dy]`` moved dy rows.
    Only bits on real pixels are meaningful (pad words may hold garbage).
    """
    if radius <= 0:
        return bmap.copy()
    half = _disk_half_widths(radius)
    segments = _horizontal_segments(bmap, sorted(set(half)))
    out = segments[half[0]].copy()
    for dy in range(1, min(radius, bmap.shape[1] - 1) + 1):
        segment = segments[half[dy]]
        out[:, dy:] |= segment[:, :-dy]  # from the row dy above
        out[:, :-dy] |= segment[:, dy:]  # from the row dy below
    return out


# --------------------------------------------------------------------------------------------
# Public building blocks (dense in, dense out) — handy in notebooks and for tests
# --------------------------------------------------------------------------------------------
def disk(radius: int) -> np.ndarray:
    """The structuring element ``skimage.morphology.disk(radius)`` as bool ``(2r+1, 2r+1)``."""
    grid = np.arange(-radius, radius + 1)
    return (grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"bound_th={bound_th} >= 1 is a radius in pixels and must be an integer")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def seg2bmap(masks: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of each mask (official ``_seg2bmap``), for a (H, W) or (T, H, W) stack."""
    masks = np.asarray(masks).astype(bool)
    stack = masks.reshape(-1, *masks.shape[-2:])  # (T, H, W)
    words = _pack_masks(stack, None, None, _pad_words(0))
    canvas = _make_canvas([words], stack.shape[-1], radius=0)
    boundary = _canvas_seg2bmap(canvas.place(words), canvas)
    return _uncrop(boundary, canvas, stack.shape).reshape(masks.shape)


def dilate_disk(maps: np.ndarray, radius: int) -> np.ndarray:
    """Dilate each (H, W) map of a stack with ``disk(radius)``; equals ``cv2.dilate`` per frame."""
    maps = np.asarray(maps).astype(bool)
    stack = maps.reshape(-1, *maps.shape[-2:])  # (T, H, W)
    height, width = stack.shape[-2:]
    pad = _pad_words(radius)
    words = _pack_masks(stack, None, None, pad)
    # The whole frame as canvas: the pad words leave room for the dilation to spread.
    canvas = _Canvas(slice(0, height), slice(0, words.shape[-1] - pad), pad, None)
    dilated = _canvas_dilate_disk(canvas.place(words), radius)
    return _uncrop(dilated, canvas, stack.shape).reshape(maps.shape)


def _uncrop(words: np.ndarray, canvas: _Canvas, shape: tuple[int, int, int]) -> np.ndarray:
    """(T, Hc, R) canvas -> bool (T, H, W) full frames."""
    full = np.zeros((shape[0], shape[1], -(-shape[2] // 64)), dtype=np.uint64)
    n = canvas.words.stop - canvas.words.start
    full[:, canvas.rows, canvas.words] = words[..., :n]
    return _unpack(full, shape[2])


# --------------------------------------------------------------------------------------------
# J and F on packed stacks
# --------------------------------------------------------------------------------------------
@dataclass
class _PackedStack:
    """A binary mask stack on a canvas, prepared once for many J/F comparisons."""

    words: np.ndarray  # (T, Hc, R) uint64 canvas, void pixels already removed
    canvas: _Canvas
    radius: int
    boundary: np.ndarray = field(init=False)  # (T, Hc, R)
    n_boundary: np.ndarray = field(init=False)  # (T,)
    _dilated: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.boundary = _canvas_seg2bmap(self.words, self.canvas)
        self.n_boundary = _popcount(self.boundary)

    @property
    def dilated(self) -> np.ndarray:
        if self._dilated is None:
            self._dilated = _canvas_dilate_disk(self.boundary, self.radius)
        return self._dilated


def _pack_masks(masks: Any, void_words: np.ndarray | None, label: int | None, pad: int) -> np.ndarray:
    """(T, H, W) masks (``!= 0``, or ``== label``) minus void -> packed (T, H, ceil(W/64) + pad) uint64.

    Boolean and integer stacks are packed as they are (``np.packbits`` reads nonzero as 1), without
    any dense temporary; label maps are compared by chunks of frames small enough for the cache.
    ``void_words`` is the packed void stack (see :func:`_pack_void`), removed word by word.
    """
    n_frames, height, width = masks.shape
    row_words = -(-width // 64) + pad
    n_bytes = -(-width // 8)
    out = np.zeros((n_frames, height, row_words), dtype=np.uint64)  # zero tail and pad words
    out_bytes = out.view(np.uint8)  # (T, H, 8 * row_words)
    direct = label is None and (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer))
    chunk = max(1, _PACK_CHUNK_PIXELS // max(height * width, 1))
    dense = None if direct else np.empty((min(n_frames, chunk), height, width), dtype=bool)
    for start in range(0, n_frames, chunk):
        part = masks[start : start + chunk]
        if not direct:
            if label is not None:
                part = np.equal(part, label, out=dense[: len(part)])
            else:
                part = np.not_equal(part, 0, out=dense[: len(part)])
        out_bytes[start : start + len(part), :, :n_bytes] = np.packbits(part, axis=-1, bitorder="little")
    if void_words is not None:
        out &= ~void_words
    return out


def _pack_void(void: np.ndarray | None, pad: int) -> np.ndarray | None:
    """The packed void stack (``None`` stays ``None``; a void stack without any pixel too)."""
    if void is None:
        return None
    words = _pack_masks(void, None, None, pad)
    return words if words.any() else None


def _score_pairs(
    masks: list[np.ndarray], labels: list[int | None], pairs: list[tuple[int, int]],
    void: np.ndarray | None, radius: int, with_f: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F per frame of ``(gt index, pred index)`` pairs of ``masks`` (each ``== label``).

    Masks are packed once. J needs only popcounts of the packed full frames; for F every chunk
    of frames gets its own canvas (a moving object covers less ground in a few frames than in
    the whole video). Returns two (n_pairs, T) arrays (F is left uninitialised without ``with_f``).
    """
    pad = _pad_words(radius)
    void_words = _pack_void(void, pad)
    packed = [_pack_masks(m, void_words, lab, pad) for m, lab in zip(masks, labels)]
    n_frames, width = masks[0].shape[0], masks[0].shape[-1]
    areas = [_popcount(p) for p in packed]
    j = np.empty((len(pairs), n_frames))
    for i, (a, b) in enumerate(pairs):
        j[i] = _jaccard_counts(_popcount(packed[a] & packed[b]), areas[a], areas[b])
    f = np.empty((len(pairs), n_frames))
    if not with_f:
        return j, f

    def score_chunk(start: int) -> None:  # writes frames [start, stop) of f
        part = [p[start : start + _CANVAS_CHUNK] for p in packed]
        canvas = _make_canvas(part, width, radius)
        stacks = [_PackedStack(canvas.place(p), canvas, radius) for p in part]
        stop = start + len(part[0])
        for i, (a, b) in enumerate(pairs):
            f[i, start:stop] = _boundary_f_packed(stacks[a], stacks[b])

    starts = range(0, n_frames, _CANVAS_CHUNK)
    # NumPy releases the GIL in the bitwise passes; on small frames the threads only contend
    if len(starts) > 1 and _WORKERS > 1 and masks[0].shape[1] * width >= _THREADED_PIXELS:
        with ThreadPoolExecutor(min(_WORKERS, len(starts))) as pool:
            list(pool.map(score_chunk, starts))
    else:
        for start in starts:
            score_chunk(start)
    return j, f


def _jaccard_counts(inter: np.ndarray, area_gt: np.ndarray, area_pred: np.ndarray) -> np.ndarray:
    """J from pixel counts per frame; an empty union (both masks empty) scores 1."""
    union = area_gt + area_pred - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j


def _boundary_f_packed(gt: _PackedStack, pred: _PackedStack) -> np.ndarray:
    n_fg, n_gt = pred.n_boundary, gt.n_boundary
    fg_match = _popcount(pred.boundary & gt.dilated)
    gt_match = _popcount(gt.boundary & pred.dilated)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = fg_match / n_fg.astype(np.float64)
        recall = gt_match / n_gt.astype(np.float64)
    # Official edge cases: a missing boundary on one side is a miss, on both sides a hit.
    precision = np.where(n_fg == 0, 1.0, np.where(n_gt == 0, 0.0, precision))
    recall = np.where(n_gt == 0, 1.0, np.where(n_fg == 0, 0.0, recall))
    total = precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(total == 0, 0.0, 2 * precision * recall / total)
    return f


def _as_stack(name: str, array: Any) -> np.ndarray:
    """(H, W) or (T, H, W) array-like -> (T, H, W) view, naming the argument on error.

    No copy and no cast: the packing reads nonzero values as True (``astype(bool)`` semantics).
    """
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (T, H, W), got {arr.shape}")
    return arr if arr.ndim == 3 else arr[None]


def _check_same_shape(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must have the same shape; resize pred to the GT")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void {void.shape} must have the shape of gt {gt.shape}")


def jaccard(gt: Any, pred: Any, void: Any = None) -> np.ndarray | float:
    """Region similarity J = |gt ∧ pred| / |gt ∨ pred| per frame, void pixels excluded.

    gt, pred, void: (T, H, W) or (H, W), anything castable to bool. Returns (T,) float64
    (a float for 2-D input). Both masks empty -> 1.
    """
    g, p = _as_stack("gt", gt), _as_stack("pred", pred)
    v = None if void is None else _as_stack("void", void)
    _check_same_shape(g, p, v)
    j = _score_pairs([g, p], [None, None], [(0, 1)], v, radius=0, with_f=False)[0][0]
    return float(j[0]) if np.ndim(gt) == 2 else j


def boundary_f(gt: Any, pred: Any, void: Any = None, bound_th: float = 0.008) -> np.ndarray | float:
    """Boundary F-measure per frame, exactly as the official ``db_eval_boundary``.

    Boundaries via ``seg2bmap``, matched within ``disk(boundary_radius((H, W), bound_th))``.
    Returns (T,) float64 (a float for 2-D input).
    """
    g, p = _as_stack("gt", gt), _as_stack("pred", pred)
    v = None if void is None else _as_stack("void", void)
    _check_same_shape(g, p, v)
    radius = boundary_radius(g.shape[-2:], bound_th)
    f = _score_pairs([g, p], [None, None], [(0, 1)], v, radius)[1][0]
    return float(f[0]) if np.ndim(gt) == 2 else f


def statistics(values: Any) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame values, as the official ``db_statistics``.

    Mean = nanmean; Recall = fraction of frames > 0.5; Decay = mean of the first quarter minus
    mean of the last quarter, bins from ``round(linspace(1, N, 5) + 1e-10) - 1`` (int64: the
    official uint8 cast wraps beyond 255 frames).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("statistics() needs at least one per-frame value")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.nanmean(v > 0.5))
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
SUMMARY_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class Results:
    """Scores of one evaluation: ``summary`` (dataset means over objects) and per-object ``rows``.

    ``per_frame[(sequence, object)]`` holds ``{"frames", "J", "F"}`` arrays for plots.
    """

    protocol: str
    rows: list[dict[str, Any]]
    per_frame: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def summary(self) -> dict[str, float]:
        if not self.rows:
            return {k: float("nan") for k in SUMMARY_KEYS}
        means = {k: float(np.mean([r[k] for r in self.rows])) for k in SUMMARY_KEYS[1:]}
        return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"protocol", "summary", "rows"}`` with plain floats."""
        rows = [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()} for r in self.rows]
        return {"protocol": self.protocol, "summary": self.summary, "rows": rows}

    def _table(self) -> tuple[list[str], list[list[str]], list[str], list[str]]:
        head = ["sequence", "object", *SUMMARY_KEYS]
        body = [[str(r["sequence"]), str(r["object"]), *(f"{r[k]:.3f}" for k in SUMMARY_KEYS)] for r in self.rows]
        summary = self.summary
        return head, body, list(SUMMARY_KEYS), [f"{summary[k]:.3f}" for k in SUMMARY_KEYS]

    def to_markdown(self) -> str:
        """Summary table then per-object table, GitHub markdown."""
        head, body, s_head, s_row = self._table()

        def md(cols: list[str], rows: list[list[str]]) -> str:
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

        return f"**{self.protocol}** ({len(self.rows)} objects)\n\n{md(s_head, [s_row])}\n\n{md(head, body)}\n"

    def _repr_html_(self) -> str:
        head, body, s_head, s_row = self._table()

        def table(cols: list[str], rows: list[list[str]]) -> str:
            th = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
            return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

        return (
            f"<div><b>{html.escape(self.protocol)}</b> ({len(self.rows)} objects)"
            f"{table(s_head, [s_row])}<details><summary>per object</summary>{table(head, body)}</details></div>"
        )

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v:.3f}" for k, v in self.summary.items())
        return f"Results({self.protocol}, {len(self.rows)} objects: {s})"


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------
def _row(sequence: str, obj: int, j: np.ndarray, f: np.ndarray, **extra: Any) -> dict[str, Any]:
    jm, jr, jd = statistics(j)
    fm, fr, fd = statistics(f)
    return {
        "sequence": sequence, "object": obj, **extra,
        "J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
        "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
    }  # fmt: skip


def _check_pair(name: str, gt: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise VOSDataError(
            f"sequence {name!r}: gt {gt.shape} and pred {pred.shape} must both be (T, H, W) with the same "
            "shape; predict every frame at the annotation resolution"
        )
    return gt, pred


def _n_objects(name: str, gt: np.ndarray, top: int | None = None) -> int:
    """Number of GT objects: the largest id other than 255 (``top``: ``gt.max()`` if known)."""
    n = int(gt.max()) if top is None else top
    if n == VOID_LABEL:
        n = int(np.max(gt, where=gt != VOID_LABEL, initial=0))
    if n == 0:
        raise VOSDataError(f"sequence {name!r}: the ground truth has no object (only 0/255); check the annotations")
    return n


def _eval_davis2016(name: str, gt: np.ndarray, pred: np.ndarray, radius: int) -> list[tuple]:
    if gt.shape[0] < 3:
        raise VOSDataError(f"sequence {name!r}: davis2016 drops the first and last frame, so it needs >= 3 frames")
    frames = np.arange(1, gt.shape[0] - 1)
    (j,), (f,) = _score_pairs([gt[1:-1], pred[1:-1]], [None, None], [(0, 1)], None, radius)
    return [(1, frames, j, f, {})]


def _eval_semi(name: str, gt: np.ndarray, pred: np.ndarray, radius: int) -> list[tuple]:
    if gt.shape[0] < 3:
        raise VOSDataError(f"sequence {name!r}: davis2017-semi drops the first and last frame, needs >= 3 frames")
    gt, pred = gt[1:-1], pred[1:-1]
    frames = np.arange(1, gt.shape[0] + 1)
    gt_top, n_pred = int(gt.max()), int(pred.max())
    n_gt = _n_objects(name, gt, gt_top)
    if n_pred > n_gt:
        raise VOSDataError(
            f"sequence {name!r}: the prediction has object id {n_pred} but the ground truth only {n_gt} objects; "
            "predict ids 1..N of the first-frame annotation (255 is not a valid predicted id)"
        )
    ids = list(range(1, n_gt + 1))  # ids the prediction lacks give empty masks, as the official zero padding
    pairs = [(k, n_gt + k) for k in range(n_gt)]
    # One object and ids in {0, 1} (unsigned): ``== 1`` is ``!= 0``, which is packed without a compare
    gt_ids = [None] if gt_top == 1 and gt.dtype.kind in "bu" else ids
    pred_ids = [None] if n_gt == 1 and n_pred <= 1 and pred.dtype.kind in "bu" else ids
    j, f = _score_pairs([gt] * n_gt + [pred] * n_gt, gt_ids + pred_ids, pairs, None, radius)
    return [(obj, frames, j[k], f[k], {}) for k, obj in enumerate(ids)]


def _eval_unsup(name: str, gt: np.ndarray, pred: np.ndarray, radius: int) -> list[tuple]:
    from scipy.optimize import linear_sum_assignment

    frames = np.arange(gt.shape[0])
    n_gt, n_prop = _n_objects(name, gt), int(pred.max())
    if n_prop > MAX_PROPOSALS:
        raise VOSDataError(
            f"sequence {name!r}: {n_prop} proposals (max id), the DAVIS-2017 unsupervised protocol allows at most "
            f"{MAX_PROPOSALS}; keep the {MAX_PROPOSALS} best and renumber them 1..{MAX_PROPOSALS}"
        )
    void = gt == VOID_LABEL
    n_cols = max(n_prop, n_gt)  # fewer proposals than objects: pad with empty proposals
    labels = [*range(1, n_gt + 1), *range(1, n_cols + 1)]
    pairs = [(g, n_gt + p) for p in range(n_cols) for g in range(n_gt)]  # proposal-major
    j, f = _score_pairs([gt] * n_gt + [pred] * n_cols, labels, pairs, void, radius)
    j, f = j.reshape(n_cols, n_gt, -1), f.reshape(n_cols, n_gt, -1)  # (P, G, T)
    score = (j.mean(axis=2) + f.mean(axis=2)) / 2  # (P, G)
    rows, cols = linear_sum_assignment(-score)
    order = np.argsort(cols)  # report per GT object id
    out = []
    for prop, obj in zip(rows[order], cols[order]):
        matched = int(prop) + 1 if prop < n_prop else None  # None: an empty padding proposal
        out.append((int(obj) + 1, frames, j[prop, obj], f[prop, obj], {"proposal": matched}))
    return out


_PROTOCOL_FUNCS = {"davis2016": _eval_davis2016, "davis2017-semi": _eval_semi, "davis2017-unsup": _eval_unsup}


def evaluate(
    sequences: Mapping[str, tuple[Any, Any]],
    protocol: str = "davis2016",
    bound_th: float = 0.008,
) -> Results:
    """Score predictions against ground truth with a DAVIS protocol.

    sequences: ``{name: (gt (T, H, W) uint8, pred (T, H, W) uint8)}``.
    protocol:
      * ``"davis2016"``: binary (``> 0``) masks, first and last frame not scored.
      * ``"davis2017-semi"``: one score per GT object id 1..N (255 = void, background here),
        first and last frame not scored; predicted ids > N are an error, missing ids score as
        empty masks.
      * ``"davis2017-unsup"``: all frames; up to 20 proposals (ids) matched to the GT objects by
        the Hungarian algorithm on the (J-Mean + F-Mean) / 2 matrix; void (255) pixels ignored.
    Dataset scores are means over objects; ``J&F-Mean = (J-Mean + F-Mean) / 2``.
    """
    if protocol not in _PROTOCOL_FUNCS:
        raise ValueError(f"protocol={protocol!r} is unknown; choose one of {PROTOCOLS}")
    rows, per_frame = [], {}
    for name, pair in sequences.items():
        gt, pred = _check_pair(name, *pair)
        radius = boundary_radius(gt.shape[-2:], bound_th)
        for obj, frames, j, f, extra in _PROTOCOL_FUNCS[protocol](name, gt, pred, radius):
            rows.append(_row(name, obj, j, f, **extra))
            per_frame[(name, obj)] = {"frames": frames, "J": j, "F": f}
    return Results(protocol, rows, per_frame)
