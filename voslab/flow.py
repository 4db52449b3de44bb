"""Optical flow: OpenCV DIS / Farneback estimation, cached per video, warping and colouring.

Conventions (docs/architecture.md): flow is ``float32`` (dx, dy) in pixels; the *forward* flow
of frame t maps a pixel of frame t to frame t+1, the *backward* flow maps it to frame t-1.
NumPy flow is ``(H, W, 2)``; torch flow is ``(B, 2, H, W)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from voslab.errors import VOSDataError

__all__ = [
    "compute_flow",
    "flow_cache_dir",
    "flow_to_color",
    "forward_backward_consistency",
    "video_flow",
    "warp",
]

METHODS = ("dis", "farneback", "gt", "auto")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DIRECTIONS = ("forward", "backward")


# ------------------------------------------------------------------ estimation
def _gray(frame: np.ndarray, name: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise VOSDataError(f"compute_flow: {name} must be uint8 (H, W, 3) or (H, W), got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if frame.ndim == 2:
        return frame
    raise VOSDataError(f"compute_flow: {name} must be (H, W, 3) RGB or (H, W) grey, got shape {frame.shape}")


def compute_flow(frame0: np.ndarray, frame1: np.ndarray, method: str = "dis", preset: str = "medium") -> np.ndarray:
    """Flow from ``frame0`` to ``frame1`` (uint8 RGB) so that ``frame0(p) ≈ frame1(p + flow(p))``.

    method: ``"dis"`` (Dense Inverse Search, ``preset`` in ultrafast/fast/medium) or
    ``"farneback"``. Returns ``float32 (H, W, 2)``.
    """
    g0, g1 = _gray(frame0, "frame0"), _gray(frame1, "frame1")
    if g0.shape != g1.shape:
        raise VOSDataError(f"compute_flow: frames differ in size {g0.shape} vs {g1.shape}; resize them first")
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; choose one of {tuple(DIS_PRESETS)}")
        flow = cv2.DISOpticalFlow_create(DIS_PRESETS[preset]).calc(g0, g1, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    else:
        raise ValueError(f"method={method!r} is unknown; choose 'dis' or 'farneback' ('gt' only in video_flow)")
    return flow.astype(np.float32)


def _dataset_root(seq: Any) -> Path | None:
    """The folder holding ``JPEGImages`` above the sequence's frames, if any."""
    for parent in Path(seq.frame_paths[0]).parents:
        if parent.name == "JPEGImages":
            return parent.parent
    return None


def flow_cache_dir(seq: Any, direction: str, method: str, preset: str = "medium") -> Path:
    """Where :func:`video_flow` caches: ``<root>/Flow/<method>/<direction>/<seq>/``.

    ``<method>`` is ``dis-<preset>`` or ``farneback``. Falls back to the voslab cache
    (``$VOSLAB_CACHE/flow/...``) when the frames are not in a DAVIS layout.
    """
    key = f"dis-{preset}" if method == "dis" else method
    root = _dataset_root(seq)
    if root is None:
        from voslab.utils import cache_dir

        return cache_dir("flow", key, direction, seq.name)
    return root / "Flow" / key / direction / seq.name


def video_flow(seq: Any, direction: str = "forward", method: str = "dis", cache: bool = True,
               preset: str = "medium") -> np.ndarray:
    """Flow of every frame of a :class:`voslab.data.sequence.Sequence`: ``float32 (T, H, W, 2)``.

    direction: ``"forward"`` (frame t -> t+1; the last frame gets zeros) or ``"backward"``
    (t -> t-1; the first frame gets zeros). method: ``"dis"``, ``"farneback"``, ``"gt"`` (the
    flow stored with the dataset, e.g. the synthetic ground truth) or ``"auto"`` (``"gt"`` when the
    sequence has stored flow, else ``"dis"``). With ``cache=True`` computed
    flow is written as ``.flo`` files (see :func:`flow_cache_dir`) and read back next time.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}; choose 'forward' or 'backward'")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {METHODS}")
    n = len(seq)
    if method == "auto":
        method = "gt" if getattr(seq, "has_flow", False) else "dis"
    if method == "gt":
        return np.stack([seq.flow(i, direction) for i in range(n)])
    from voslab.data.io import read_flo, write_flo

    folder = flow_cache_dir(seq, direction, method, preset) if cache else None
    step = 1 if direction == "forward" else -1
    frames: dict[int, np.ndarray] = {}

    def frame(i: int) -> np.ndarray:
        if i not in frames:
            frames[i] = seq.frame(i)
        return frames[i]

    flows = []
    for i in range(n):  # one OpenCV call per frame pair: the estimator itself is per pair
        path = None if folder is None else folder / f"{Path(seq.frame_paths[i]).stem}.flo"
        if path is not None and path.is_file():
            flows.append(read_flo(path))
            continue
        j = i + step
        if 0 <= j < n:
            flow = compute_flow(frame(i), frame(j), method, preset)
        else:
            h, w = seq.size
            flow = np.zeros((h, w, 2), np.float32)
        if path is not None:
            write_flo(path, flow)
        flows.append(flow)
    return np.stack(flows)


# ------------------------------------------------------------------ warping
def _pixel_grid(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel flow -> (B, H, W, 2) sampling grid in [-1, 1] (align_corners=True)."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]  # (B, H, W) sample positions in pixels
    y = ys + flow[:, 1]
    return torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)


def warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros", mode: str = "bilinear") -> torch.Tensor:
    """Backward warping: ``out(p) = x(p + flow(p))`` with ``grid_sample`` (align_corners=True).

    x: (B, C, H, W); flow: (B, 2, H, W) in pixels (dx, dy). To bring frame t-1 onto frame t, use
    the *backward* flow of frame t. padding_mode: ``"zeros"`` or ``"border"``.
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != x.shape[0] or flow.shape[2:] != x.shape[2:]:
        raise ValueError(f"warp: flow must be (B, 2, H, W) matching x {tuple(x.shape)}, got {tuple(flow.shape)}")
    if padding_mode not in ("zeros", "border"):
        raise ValueError(f"padding_mode={padding_mode!r}; choose 'zeros' or 'border'")
    grid = _pixel_grid(flow.to(x.dtype if x.is_floating_point() else torch.float32))
    src = x if x.is_floating_point() else x.float()
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def forward_backward_consistency(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha1: float = 0.01,
                                 alpha2: float = 0.5) -> torch.Tensor:
    """Validity mask (B, 1, H, W) in {0, 1}: 1 where frame t's pixel is visible in the other frame.

    flow_fw: flow of frame t to t+1; flow_bw: flow of frame t+1 back to t. A pixel is consistent
    when ``|fw + bw(p + fw)|^2 < alpha1 (|fw|^2 + |bw(p + fw)|^2) + alpha2`` (Sundaram et al. 2010).
    Occluded / out-of-frame pixels get 0.
    """
    bw_at_target = warp(flow_bw, flow_fw)  # (B, 2, H, W) backward flow seen from frame t
    diff = (flow_fw + bw_at_target).pow(2).sum(1, keepdim=True)
    bound = alpha1 * (flow_fw.pow(2).sum(1, keepdim=True) + bw_at_target.pow(2).sum(1, keepdim=True)) + alpha2
    inside = warp(torch.ones_like(flow_fw[:, :1]), flow_fw) > 0.999  # target inside the frame
    return ((diff < bound) & inside).to(flow_fw.dtype)


# ------------------------------------------------------------------ colouring
def _color_wheel() -> np.ndarray:
    """Middlebury colour wheel (Baker et al. 2011): (55, 3) float in [0, 255]."""
    segments = [(15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0))]  # RY YG GC CB BM MR
    parts = []
    for n, start, end in segments:
        steps = np.floor(255 * np.arange(n) / n) / 255  # (n,) the reference code's integer ramp
        parts.append(np.array(start) + steps[:, None] * (np.array(end) - np.array(start)))
    return np.concatenate(parts).astype(np.float64)


_WHEEL = _color_wheel()


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Colour-code flow (H, W, 2): hue = direction, saturation = magnitude / max. uint8 (H, W, 3).

    Middlebury convention: right = red, down = yellow, left = cyan, up = blue/violet.
    ``max_flow`` fixes the normalisation (default: the largest magnitude in ``flow``).
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow_to_color: flow must be (H, W, 2), got {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    u, v = np.nan_to_num(u), np.nan_to_num(v)
    radius = np.hypot(u, v)
    scale = max_flow if max_flow is not None else radius.max()
    scale = scale if scale > 0 else 1.0
    u, v, radius = u / scale, v / scale, radius / scale
    n = len(_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # (H, W) in [-1, 1]
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    frac = (fk - k0)[..., None]
    col = ((1 - frac) * _WHEEL[k0] + frac * _WHEEL[k1]) / 255  # (H, W, 3)
    r = radius[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)  # saturation grows with the magnitude
    return np.floor(255 * col).astype(np.uint8)
