"""The embedded dataset: procedural videos of moving textured shapes, with exact ground truth.

Each video is a stack of layers painted back to front. Every layer (the background and each
object) is a textured raster living in its own coordinates; an affine transform per frame maps
it to the screen, and a frame is rendered by inverse-mapping the pixel grid through that transform
(``cv2.warpAffine``). Because every transform is known, the optical flow of the visible surface is
exact: a pixel ``p`` showing layer ``L`` at frame ``t`` moves to ``A_L(t+1) A_L(t)^-1 p``.

What is in a video (all drawn from one seed):

* a textured background (noise, stripes, checker blends) that pans, zooms and rolls (camera);
* 1-3 *primary* objects (ellipse, rectangle, polygon/star, blob) that move along smooth paths,
  rotate, breathe in scale, and may stop and start; one may enter late or leave the view;
* 0-2 static *distractors*, drawn like objects but glued to the background (they move only with
  the camera): they are instances (``Annotations``) but not primary foreground
  (``Annotations_binary``), which is what unsupervised VOS and AD-Net's instance pruning are about;
* occlusions (random depth order, distractors planted on an object's path), pixel noise.

``difficulty`` (0 = easy, 1 = default, >1 harder still) raises speed, camouflage (object colours
pulled towards the background's), the number of objects and distractors, occlusions, late entries
and noise.

Use :func:`render_video` for an in-memory video, :func:`generate` to write a split in the DAVIS
layout, and :func:`ensure` to get a cached split (generated once, atomically).
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from voslab.data import io
from voslab.errors import VOSDataError
from voslab.utils import cache_dir, config_hash as _config_hash

__all__ = ["render_video", "generate", "ensure", "write_video", "read_meta", "video_seed", "sequence_name", "config_hash",
           "GENERATOR_VERSION", "SHAPES"]

GENERATOR_VERSION = 2  # bump when the rendered videos change: it is part of the cache key
_MAX_ATTEMPTS = 20  # scene redraws until a moving object covers
_MIN_FIRST_FOREGROUND = 0.002  # this fraction of frame 0
SHAPES = ("ellipse", "rectangle", "polygon", "star", "blob")
_BASE_SIZE = 96.0  # speeds and sizes are given for a 96-pixel-high view and scale with min(H, W)
_NOISE = (1.0, 3.0)  # pixel noise sigma = _NOISE[0] + _NOISE[1] * difficulty (grey levels)


# --------------------------------------------------------------------------------------------
# Seeds and names
# --------------------------------------------------------------------------------------------
def video_seed(seed: int, split: str, index: int) -> int:
    """The seed of video ``index`` of ``split``: different splits never share a video."""
    split_code = zlib.crc32(split.encode("utf-8"))
    state = np.random.SeedSequence([int(seed), split_code, int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def sequence_name(split: str, index: int) -> str:
    """``synth-train-0003`` style names."""
    return f"synth-{split}-{index:04d}"


# --------------------------------------------------------------------------------------------
# Procedural textures
# --------------------------------------------------------------------------------------------
def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise with features about ``cell`` pixels wide, (h, w) float32 in ~[0, 1]."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _unit(size: tuple[int, int]) -> float:
    """Pixels per base pixel: sizes, speeds and texture scales grow with the view."""
    return min(size) / _BASE_SIZE


def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _stripes(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, period: float) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    coord = xs * np.cos(angle) + ys * np.sin(angle)
    wave = np.sin(2 * np.pi * coord / period + rng.uniform(0, 2 * np.pi))
    return 0.5 + 0.5 * np.tanh(rng.uniform(1, 4) * wave)  # soft to sharp stripes


def _checker(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, period: float) -> np.ndarray:
    angle = rng.uniform(0, np.pi / 2)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    wave = np.sin(np.pi * u / period) * np.sin(np.pi * v / period)
    return 0.5 + 0.5 * np.tanh(3 * wave)


def _texture_field(rng: np.random.Generator, h: int, w: int, pixel_scale: float) -> np.ndarray:
    """A blend of noise octaves, stripes and checker, normalised to [0, 1]. (h, w) float32.

    ``pixel_scale`` = texture pixels per screen pixel, so features have the same on-screen size
    whatever the raster resolution.
    """
    xs, ys = _pixel_grid(h, w)
    s = pixel_scale
    components = [
        _value_noise(rng, h, w, rng.uniform(12, 28) * s) + 0.5 * _value_noise(rng, h, w, rng.uniform(5, 9) * s),
        _stripes(rng, xs, ys, rng.uniform(8, 18) * s),
        _checker(rng, xs, ys, rng.uniform(5, 12) * s),
        _value_noise(rng, h, w, rng.uniform(4, 6) * s),  # fine grain
    ]
    weights = rng.dirichlet([1.2, 0.8, 0.6, 0.5])
    field = sum(wt * c for wt, c in zip(weights, components))
    field = cv2.GaussianBlur(field.astype(np.float32), (0, 0), 1.0 * s)  # band-limit: no sub-pixel aliasing
    lo, hi = np.percentile(field, [1, 99])
    return np.clip((field - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _colourise(field: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a piecewise-linear colour ramp ``palette (K, 3)``. -> (h, w, 3)."""
    stops = np.linspace(0, 1, len(palette))
    return np.stack([np.interp(field, stops, palette[:, c]) for c in range(3)], -1).astype(np.float32)


def _random_palette(rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """``k`` colours in [0, 255] with varied brightness. (k, 3) float."""
    colours = rng.uniform(0, 255, size=(k, 3))
    colours *= np.linspace(0.5, 1.2, k)[rng.permutation(k), None]
    return np.clip(colours, 0, 255)


def _camouflaged_palette(rng: np.random.Generator, background: np.ndarray, contrast: float) -> np.ndarray:
    """An object palette pulled towards the background's: ``contrast`` 1 = free, 0 = identical."""
    free = _random_palette(rng, len(background))
    return background[rng.permutation(len(background))] * (1 - contrast) + free * contrast


# --------------------------------------------------------------------------------------------
# Shapes (alpha rasters in canonical coordinates [-1, 1]^2)
# --------------------------------------------------------------------------------------------
def _canonical_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.linspace(-1, 1, n, dtype=np.float32)
    return np.meshgrid(u, u)  # (n, n) each: x = u, y = v


def _polygon_mask(vertices: np.ndarray, n: int) -> np.ndarray:
    """Fill a polygon given in canonical coords on an (n, n) raster (sub-pixel accurate)."""
    shift = 4
    pix = np.round((vertices + 1) / 2 * (n - 1) * (1 << shift)).astype(np.int32)
    mask = np.zeros((n, n), np.uint8)
    cv2.fillPoly(mask, [pix], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(np.float32)


def _shape_alpha(rng: np.random.Generator, shape: str, raster: int) -> np.ndarray:
    """Soft (anti-aliased) alpha of a shape, (raster, raster) float32 in [0, 1]."""
    n = 2 * raster  # supersample, then area-average
    xs, ys = _canonical_grid(n)
    if shape == "ellipse":
        b = rng.uniform(0.45, 0.95)
        mask = ((xs / 0.95) ** 2 + (ys / b) ** 2 <= 1).astype(np.float32)
    elif shape == "rectangle":
        b = rng.uniform(0.4, 0.9)
        mask = ((np.abs(xs) <= 0.85) & (np.abs(ys) <= b)).astype(np.float32)
    elif shape in ("polygon", "star"):
        k = int(rng.integers(3, 8))
        if shape == "star":
            k = max(k, 4)
            angles = np.arange(2 * k) * np.pi / k
            radii = np.where(np.arange(2 * k) % 2 == 0, 0.95, rng.uniform(0.35, 0.65))
        else:
            angles = (np.arange(k) + rng.uniform(-0.25, 0.25, k)) * 2 * np.pi / k  # no slivers
            radii = rng.uniform(0.7, 0.95, k)
        angles = angles + rng.uniform(0, 2 * np.pi)
        mask = _polygon_mask(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1), n)
    elif shape == "blob":
        theta, rho = np.arctan2(ys, xs), np.hypot(xs, ys)
        profile = np.ones_like(theta)
        for k in range(2, 6):
            profile += rng.uniform(0, 0.3) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        max_profile = 1 + sum(0.3 / k for k in range(2, 6))
        mask = (rho <= 0.95 * profile / max_profile * 1.15).astype(np.float32)
        mask *= (rho <= 0.95)
    else:
        raise VOSDataError(f"unknown synthetic shape {shape!r}; choose one of {SHAPES}")
    return cv2.resize(mask, (raster, raster), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------------------------
# Motion: affine transforms as 3x3 matrices, one per frame t = -1 .. T
# --------------------------------------------------------------------------------------------
def _affine(scale: np.ndarray, angle: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Stack of 3x3 matrices ``x -> scale * R(angle) x + (tx, ty)``. Inputs (N,) -> (N, 3, 3)."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    m = np.zeros((len(c), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c, -s, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = s, c, ty
    m[:, 2, 2] = 1
    return m


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def _progress(rng: np.random.Generator, times: np.ndarray, n_frames: int, p_stop: float) -> np.ndarray:
    """Distance travelled along a path at each time (speed 1, or 0 while stopped). (N,)"""
    speed = np.ones(len(times))
    if n_frames >= 6 and rng.random() < p_stop:
        start = int(rng.integers(1, n_frames - 3))
        length = int(rng.integers(2, max(3, n_frames // 3) + 1))
        ramp = np.interp(times, [start - 1, start, start + length, start + length + 1], [1, 0, 0, 1])
        speed = np.where((times >= start - 1) & (times <= start + length + 1), ramp, 1.0)
    progress = np.concatenate([[0.0], np.cumsum(speed[:-1])])  # progress[k] = sum of speeds before k
    return progress - progress[1]  # times[1] == 0 -> progress 0 at frame 0


@dataclass
class _Layer:
    """One painted layer: a textured raster and its raster -> screen transform per time step."""
    texture: np.ndarray  # (R, R, 3) float32 in [0, 255]
    alpha: np.ndarray | None  # (R, R) float32, None = opaque everywhere (background)
    to_screen: np.ndarray  # (N, 3, 3), N = n_frames + 2 (t = -1 .. T)
    meta: dict = field(default_factory=dict)


def _camera(rng: np.random.Generator, times: np.ndarray, size: tuple[int, int], d: float) -> np.ndarray:
    """World -> screen matrices (N, 3, 3): pan (oscillating), zoom and a little roll about the centre."""
    h, w = size
    unit = _unit(size)
    speed = unit * (0.3 + 1.2 * d) * rng.uniform(0.5, 1.0)
    amplitude = 0.18 * min(h, w)
    omega = speed / amplitude
    phase = rng.uniform(0, 2 * np.pi, 2)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    pan = amplitude * (np.sin(omega * times[:, None] + phase) - np.sin(phase)) * np.abs(direction)
    pan *= np.sign(direction)
    zoom = 1 + 0.08 * min(d, 1.5) * rng.uniform(0, 1) * np.sin(rng.uniform(0.1, 0.3) * times)
    roll = 0.03 * min(d, 1.5) * rng.uniform(-1, 1) * np.sin(rng.uniform(0.1, 0.3) * times)
    centre = ((w - 1) / 2, (h - 1) / 2)
    about_centre = _affine(zoom, roll, np.full_like(times, centre[0]), np.full_like(times, centre[1]))
    shift = _affine(np.ones_like(times), np.zeros_like(times), -centre[0] - pan[:, 0], -centre[1] - pan[:, 1])
    return about_centre @ shift


def _object_path(rng, times, size, radius, mode, n_frames, d):
    """World position (N, 2) of an object's centre and its progress (N,) along the path.

    ``mode``: "roam" (smooth Lissajous path inside the view, may stop and start), "enter" (comes in
    from outside the view after frame 0), "exit" (leaves the view before the end), "static".
    """
    h, w = size
    unit = _unit(size)
    speed = unit * (1.2 + 2.0 * d) * rng.uniform(0.6, 1.2)
    lo = np.array([0.3 * w, 0.3 * h])
    hi = np.array([0.7 * w, 0.7 * h])
    if mode == "static":
        return np.repeat(rng.uniform(lo * 0.6, hi * 1.15)[None], len(times), 0), np.zeros(len(times))
    if mode == "roam":
        progress = _progress(rng, times, n_frames, p_stop=0.25 + 0.35 * min(d, 1))
        amp = np.array([0.28 * w, 0.28 * h]) * rng.uniform(0.5, 1.0, 2)
        omega = speed / np.linalg.norm(amp) * rng.uniform(0.8, 1.3, 2)
        phase = rng.uniform(0, 2 * np.pi, 2)
        centre = np.array([(w - 1) / 2, (h - 1) / 2]) + rng.uniform(-0.08, 0.08, 2) * [w, h]
        return centre + amp * np.sin(omega * progress[:, None] + phase), progress
    # straight lines through one side of the view, at the object's usual speed
    progress = times.astype(np.float64)
    crossing, direction = _border_crossing(rng, size, 1.45 * radius)
    if mode == "exit":  # fully gone at frame t_out
        t_out = rng.uniform(0.5, 0.85) * n_frames
        return crossing - direction * speed * (progress[:, None] - t_out), progress
    # enter: starts to show at frame t_in >= 1, invisible before
    t_in = max(1.0, rng.uniform(0.2, 0.5) * n_frames)
    return crossing + direction * speed * (progress[:, None] - t_in), progress


def _border_crossing(rng: np.random.Generator, size: tuple[int, int], margin: float):
    """A point ``margin`` pixels outside one side of the view and an inward direction (within 35 deg
    of the side's normal). -> (point (2,), unit direction (2,))."""
    h, w = size
    side = int(rng.integers(4))  # left, right, top, bottom
    along = rng.uniform(0.15, 0.85)
    point, normal = [
        (np.array([-margin, along * (h - 1)]), np.array([1.0, 0.0])),
        (np.array([w - 1 + margin, along * (h - 1)]), np.array([-1.0, 0.0])),
        (np.array([along * (w - 1), -margin]), np.array([0.0, 1.0])),
        (np.array([along * (w - 1), h - 1 + margin]), np.array([0.0, -1.0])),
    ][side]
    tilt = rng.uniform(-np.radians(35), np.radians(35))
    c, s = np.cos(tilt), np.sin(tilt)
    return point, np.array([c * normal[0] - s * normal[1], s * normal[0] + c * normal[1]])


def _object_layer(rng, times, camera, size, d, contrast, bg_palette, mode, shape, position=None):
    """Build an object layer (texture, alpha, raster -> screen transforms)."""
    h, w = size
    radius = rng.uniform(0.15, 0.27) * min(h, w)
    raster = int(np.clip(2.5 * radius, 48, 384))
    n_frames = len(times) - 2
    centre, progress = _object_path(rng, times, size, radius, mode, n_frames, d)
    if position is not None:
        centre = np.repeat(np.asarray(position, dtype=np.float64)[None], len(times), 0)
    if mode == "static":
        angle = np.full(len(times), rng.uniform(0, 2 * np.pi))
        scale = np.full(len(times), radius)
    else:
        spin = rng.choice([-1, 1]) * rng.uniform(0.01, 0.06) * (0.5 + min(d, 2))
        angle = rng.uniform(0, 2 * np.pi) + spin * progress
        scale = radius * (1 + 0.12 * np.sin(rng.uniform(0.1, 0.4) * progress + rng.uniform(0, 2 * np.pi)))
    to_world = _affine(scale, angle, centre[:, 0], centre[:, 1])
    # raster pixel -> canonical [-1, 1]
    from_raster = _affine(np.array([2 / (raster - 1)]), np.zeros(1), np.array([-1.0]), np.array([-1.0]))[0]
    palette = _camouflaged_palette(rng, bg_palette, contrast)
    texture = _colourise(_texture_field(rng, raster, raster, raster / (2 * radius) * _unit(size)), palette)
    alpha = _shape_alpha(rng, shape, raster)
    meta = {"kind": "static" if mode == "static" else "moving", "shape": shape,
            "enters_late": mode == "enter", "leaves_view": mode == "exit"}
    return _Layer(texture, alpha, camera @ to_world @ from_raster, meta)


def _background_layer(rng, times, camera, size, palette) -> _Layer:
    """A textured plane covering every world point the camera sees over the video."""
    h, w = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T
    seen = np.linalg.inv(camera) @ corners  # (N, 3, 4) world points of the view corners
    lo = np.floor(seen[:, :2].min(axis=(0, 2))) - 4
    hi = np.ceil(seen[:, :2].max(axis=(0, 2))) + 4
    bw, bh = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
    texture = _colourise(_texture_field(rng, bh, bw, _unit(size)), palette)
    origin = lo - rng.uniform(0, 1, 2)  # sub-pixel: frame 0 is resampled like the others
    return _Layer(texture, None, camera @ _translation(origin[0], origin[1]), {"kind": "background"})


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], border: int) -> np.ndarray:
    """Sample ``image`` at ``matrix^-1 p`` for every screen pixel p (bilinear)."""
    h, w = size
    return cv2.warpAffine(image, matrix[:2].astype(np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border, borderValue=0)


def _paint(layers: list[_Layer], k: int, size: tuple[int, int], with_rgb: bool):
    """Paint layers back to front at time step k. -> (rgb (H,W,3) float32 | None, layer index (H,W))."""
    h, w = size
    rgb = _warp(layers[0].texture, layers[0].to_screen[k], size, cv2.BORDER_REFLECT) if with_rgb else None
    visible = np.zeros((h, w), np.uint8)  # index into `layers`
    for index, layer in enumerate(layers[1:], start=1):
        alpha = _warp(layer.alpha, layer.to_screen[k], size, cv2.BORDER_CONSTANT)  # (H, W)
        visible[alpha > 0.5] = index
        if with_rgb:
            colour = _warp(layer.texture, layer.to_screen[k], size, cv2.BORDER_REPLICATE)
            rgb += alpha[..., None] * (colour - rgb)
    return rgb, visible


def _visible_flow(layers: list[_Layer], k: int, step: int, visible: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Flow from time step k to k+step of the surface seen at each pixel. -> (H, W, 2) float32.

    Each layer moves by one affine map ``A(k+step) A(k)^-1``; pick each pixel's map by its visible
    layer and apply it to the pixel's own coordinates.
    """
    motions = np.stack([layer.to_screen[k + step] @ np.linalg.inv(layer.to_screen[k]) for layer in layers])
    per_pixel = motions[visible][..., :2, :]  # (H, W, 2, 3)
    moved = np.einsum("hwij,hwj->hwi", per_pixel[..., :2], grid) + per_pixel[..., 2]  # (H, W, 2)
    return (moved - grid).astype(np.float32)


def _not_occluded(flow: np.ndarray, visible: np.ndarray, visible_next: np.ndarray) -> np.ndarray:
    """True where the surface seen at p is still seen at round(p + flow) in the other frame."""
    h, w = visible.shape
    ys, xs = np.mgrid[0:h, 0:w]
    tx = np.rint(xs + flow[..., 0]).astype(np.int64)
    ty = np.rint(ys + flow[..., 1]).astype(np.int64)
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    landed = visible_next[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)]
    return inside & (landed == visible)


def _choose_modes(rng: np.random.Generator, n_frames: int, d: float) -> tuple[list[str], int]:
    """Motion mode of each primary object and the number of static distractors."""
    dd = min(d, 1.0)
    n_primary = 1 + int(rng.integers(0, 1 + round(2 * dd)))
    n_static = int(rng.integers(0, 1 + round(2 * dd)))
    modes = ["roam"] * n_primary
    if n_frames >= 4 and rng.random() < 0.6 * dd:  # a late entrant, in addition to a visible object
        if n_primary == 1:
            modes.append("roam")
        modes[-1] = "enter"
    if len(modes) >= 2 and n_frames >= 6 and rng.random() < 0.3 * dd:
        modes[1] = "exit" if modes[1] == "roam" else modes[1]
    return modes, n_static


def _plant_distractor(rng, layers: list[_Layer], camera: np.ndarray, d: float):
    """With probability growing with difficulty, a world point on a moving object's path (an occluder)."""
    moving = [layer for layer in layers if layer.meta.get("kind") == "moving"]
    if not moving or rng.random() > 0.2 + 0.6 * min(d, 1):
        return None
    target = moving[int(rng.integers(len(moving)))]
    k = int(rng.integers(1, target.to_screen.shape[0] - 1))
    to_world = np.linalg.inv(camera[k]) @ target.to_screen[k]  # raster -> world
    raster = target.alpha.shape[0]
    centre = to_world @ np.array([(raster - 1) / 2, (raster - 1) / 2, 1.0])
    return centre[:2] + rng.normal(scale=3.0, size=2)


def render_video(seed: int, n_frames: int = 12, size: tuple[int, int] = (96, 160),
                 difficulty: float = 1.0) -> dict:
    """Render one synthetic video in memory.

    Returns a dict of NumPy arrays (T = ``n_frames``):
    ``frames`` (T,H,W,3) uint8; ``instances`` (T,H,W) uint8 ids 1..K (0 = background);
    ``foreground`` (T,H,W) uint8 {0,1} (moving objects only); ``flow_forward`` /
    ``flow_backward`` (T,H,W,2) float32 exact flow of the visible surface to frame t+1 / t-1 (the
    motion continues past both ends, so the last forward and first backward flows exist);
    ``valid_forward`` / ``valid_backward`` (T,H,W) bool: the surface is still visible there in the
    other frame (not occluded, not out of view); ``objects``: list of per-object dicts
    (``id``, ``kind`` "moving"|"static", ``shape``, ``first_frame``, ``last_frame``, ``depth``,
    ``enters_late``, ``leaves_view``).
    """
    size = _check_size(size)
    if int(n_frames) < 1:
        raise VOSDataError(f"render_video: n_frames must be >= 1, got {n_frames}")
    if not difficulty >= 0:
        raise VOSDataError(f"render_video: difficulty must be >= 0 (0 easy, 1 default), got {difficulty}")
    n_frames, d = int(n_frames), float(difficulty)
    # Both tasks start from frame 0 (AD-Net's anchor, the semi-supervised first mask): redraw the
    # scene, deterministically, while no moving object shows there.
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
        video = _render_scene(rng, n_frames, size, d)
        if video["foreground"][0].mean() >= _MIN_FIRST_FOREGROUND:
            break
    return video


def _render_scene(rng: np.random.Generator, n_frames: int, size: tuple[int, int], d: float) -> dict:
    """One draw of camera, background and objects, rendered (see :func:`render_video`)."""
    times = np.arange(-1, n_frames + 1, dtype=np.float64)  # one extra step each side for the flow
    camera = _camera(rng, times, size, d)
    bg_palette = _random_palette(rng)
    contrast = float(np.clip(1 - 0.5 * d, 0.2, 1))

    modes, n_static = _choose_modes(rng, n_frames, d)
    objects = [_object_layer(rng, times, camera, size, d, contrast, bg_palette, mode,
                             str(rng.choice(SHAPES))) for mode in modes]
    for _ in range(n_static):
        planted = _plant_distractor(rng, objects, camera, d)
        objects.append(_object_layer(rng, times, camera, size, d, contrast, bg_palette, "static",
                                     str(rng.choice(SHAPES)), position=planted))
        objects[-1].meta["planted"] = planted is not None
    depth = _depth_order(rng, objects)
    layers = [_background_layer(rng, times, camera, size, bg_palette)] + [objects[i] for i in depth]
    return _render_layers(rng, layers, n_frames, size, d)


def _depth_order(rng: np.random.Generator, objects: list[_Layer]) -> list[int]:
    """Back-to-front order: random, but planted distractors go in front (they are occluders)."""
    order = list(rng.permutation(len(objects)))
    planted = [i for i in order if objects[i].meta.get("planted")]
    return [int(i) for i in order if i not in planted] + [int(i) for i in planted]


def _render_layers(rng, layers: list[_Layer], n_frames: int, size: tuple[int, int], d: float) -> dict:
    h, w = size
    xs, ys = _pixel_grid(h, w)
    grid = np.stack([xs, ys], -1).astype(np.float64)  # (H, W, 2)
    noise = _NOISE[0] + _NOISE[1] * d
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    visible = np.empty((n_frames + 2, h, w), np.uint8)  # time steps -1 .. T
    for k in range(n_frames + 2):
        with_rgb = 1 <= k <= n_frames
        rgb, visible[k] = _paint(layers, k, size, with_rgb)
        if with_rgb:
            rgb += noise * rng.standard_normal(rgb.shape, dtype=np.float32)
            frames[k - 1] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    flow_fw = np.empty((n_frames, h, w, 2), np.float32)
    flow_bw = np.empty_like(flow_fw)
    valid_fw = np.empty((n_frames, h, w), bool)
    valid_bw = np.empty_like(valid_fw)
    for t in range(n_frames):
        k = t + 1
        flow_fw[t] = _visible_flow(layers, k, +1, visible[k], grid)
        flow_bw[t] = _visible_flow(layers, k, -1, visible[k], grid)
        valid_fw[t] = _not_occluded(flow_fw[t], visible[k], visible[k + 1])
        valid_bw[t] = _not_occluded(flow_bw[t], visible[k], visible[k - 1])
    instances, objects = _instance_ids(layers, visible[1:-1])
    moving_ids = [o["id"] for o in objects if o["kind"] == "moving"]
    return {
        "frames": frames, "instances": instances,
        "foreground": np.isin(instances, moving_ids).astype(np.uint8),
        "flow_forward": flow_fw, "flow_backward": flow_bw,
        "valid_forward": valid_fw, "valid_backward": valid_bw, "objects": objects,
    }


def _instance_ids(layers: list[_Layer], visible: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Turn layer indices into ids 1..K: moving objects first, then distractors; never-seen dropped."""
    order = sorted(range(1, len(layers)), key=lambda i: (layers[i].meta["kind"] != "moving", i))
    lookup = np.zeros(len(layers), np.uint8)
    objects = []
    for index in order:
        seen = np.flatnonzero((visible == index).any(axis=(1, 2)))
        if len(seen) == 0:
            continue
        lookup[index] = len(objects) + 1
        meta = {k: v for k, v in layers[index].meta.items() if k != "planted"}
        objects.append({"id": len(objects) + 1, **meta, "first_frame": int(seen[0]),
                        "last_frame": int(seen[-1]), "depth": index - 1})
    return lookup[visible], objects


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as err:
        raise VOSDataError(f"size must be (H, W), got {size!r}") from err
    if h < 16 or w < 16:
        raise VOSDataError(f"size {size!r} is too small: use at least (16, 16), e.g. (96, 160)")
    return h, w


# --------------------------------------------------------------------------------------------
# Writing a split in the DAVIS layout, and the cache
# --------------------------------------------------------------------------------------------
def write_video(root: str | Path, name: str, video: dict, info: dict | None = None) -> None:
    """Write one rendered video under ``root`` in the DAVIS layout (frames, masks, flow, meta)."""
    root = Path(root)
    for t in range(len(video["frames"])):
        stem = f"{t:05d}"
        io.write_image(root / "JPEGImages" / name / f"{stem}.jpg", video["frames"][t], subsampling="4:4:4")
        io.write_mask(root / "Annotations" / name / f"{stem}.png", video["instances"][t])
        io.write_mask(root / "Annotations_binary" / name / f"{stem}.png", video["foreground"][t] * 255)
        io.write_flo(root / "Flow" / "forward" / name / f"{stem}.flo", video["flow_forward"][t])
        io.write_flo(root / "Flow" / "backward" / name / f"{stem}.flo", video["flow_backward"][t])
    meta = {"name": name, **(info or {}), "n_frames": len(video["frames"]),
            "size": list(video["frames"].shape[1:3]), "objects": video["objects"]}
    _meta_path(root, name).parent.mkdir(parents=True, exist_ok=True)
    _meta_path(root, name).write_text(json.dumps(meta, indent=1))


def _meta_path(root: str | Path, name: str) -> Path:
    return Path(root) / "meta" / f"{name}.json"


def read_meta(root: str | Path, name: str) -> dict:
    """The generator's record of video ``name`` under ``root``: ``meta/<name>.json`` as a dict
    (``objects``: one dict per instance id with ``id``, ``kind`` "moving" | "static", ``shape``,
    ``first_frame``, ``last_frame``, ...)."""
    return json.loads(_meta_path(root, name).read_text())


def generate(root: str | Path, split: str = "train", n_videos: int = 8, n_frames: int = 12,
             size: tuple[int, int] = (96, 160), difficulty: float = 1.0, seed: int = 0) -> Path:
    """Render ``n_videos`` videos and write them under ``root`` in the DAVIS layout; returns ``root``.

    Writes ``JPEGImages/<seq>/00000.jpg``, ``Annotations/<seq>/00000.png`` (instance ids, DAVIS
    palette), ``Annotations_binary/<seq>/00000.png`` (moving objects, {0, 255}),
    ``Flow/forward|backward/<seq>/00000.flo``, ``meta/<seq>.json`` and ``ImageSets/<split>.txt``
    (written last: it marks the split complete). Sequences are named ``synth-<split>-0000``.
    """
    if int(n_videos) < 1:
        raise VOSDataError(f"generate: n_videos must be >= 1, got {n_videos}")
    root = Path(root)
    names = []
    for index in range(int(n_videos)):
        name = sequence_name(split, index)
        vseed = video_seed(seed, split, index)
        video = render_video(vseed, n_frames, size, difficulty)
        write_video(root, name, video, {"split": split, "index": index, "seed": seed,
                                        "video_seed": vseed, "difficulty": float(difficulty),
                                        "generator_version": GENERATOR_VERSION})
        names.append(name)
    _write_text_atomic(root / "ImageSets" / f"{split}.txt", "\n".join(names) + "\n")
    return root


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _normalise_config(config: dict) -> dict:
    """Fill defaults, check keys and types so equal configs hash equally."""
    params = inspect.signature(generate).parameters
    allowed = [k for k in params if k not in ("root", "split")]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise VOSDataError(f"synthetic config has unknown keys {unknown}; allowed keys: {allowed}")
    full = {k: config.get(k, params[k].default) for k in allowed}
    full["size"] = list(_check_size(full["size"]))
    full["n_videos"], full["n_frames"], full["seed"] = int(full["n_videos"]), int(full["n_frames"]), int(full["seed"])
    full["difficulty"] = float(full["difficulty"])
    return full


def config_hash(config: dict) -> str:
    """Short stable hash of a synthetic config (plus the generator version): the cache key."""
    return _config_hash({**_normalise_config(config), "version": GENERATOR_VERSION}, length=16)


def ensure(split: str, config: dict | None = None, root: str | Path | None = None) -> Path:
    """Return a dataset root holding ``split`` for ``config``, generating it once if needed.

    ``config`` keys are :func:`generate`'s (``n_videos``, ``n_frames``, ``size``, ``difficulty``,
    ``seed``). The default root is ``cache_dir("data", "synthetic", config_hash(config))``; train and
    val of one config share it. Generation goes to a temporary folder first and is moved into place,
    with ``ImageSets/<split>.txt`` last, so an interrupted run never leaves a half split behind.
    """
    config = _normalise_config(config or {})
    root = Path(root) if root is not None else cache_dir("data", "synthetic", config_hash(config))
    marker = root / "ImageSets" / f"{split}.txt"
    if marker.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=root))
    try:
        generate(tmp, split=split, **config)
        _move_into_place(tmp, root)
        _write_text_atomic(marker, (tmp / "ImageSets" / f"{split}.txt").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename each generated sequence folder/file from ``tmp`` into ``root`` (replacing leftovers)."""
    for item in sorted(tmp.rglob("*")):
        rel = item.relative_to(tmp)
        if rel.parts[0] == "ImageSets":
            continue
        depth = 3 if rel.parts[0] == "Flow" else 2  # Flow/<direction>/<seq> vs JPEGImages/<seq>
        is_sequence_dir = item.is_dir() and rel.parts[0] != "meta" and len(rel.parts) == depth
        is_meta = rel.parts[0] == "meta" and item.is_file()
        if not (is_sequence_dir or is_meta):
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # leftover of an interrupted run (or a concurrent identical one)
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(item, target)
