"""The embedded dataset: procedural videos of moving textured shapes, with exact ground truth.

Each video is a stack of layers painted back to front. Every layer (the background and each
object) is a textured raster living in its own coordinates; an affine transform per frame maps
it to the screen, and a frame is rendered by inverse-mapping the pixel grid through that transform
(``cv2.warpAffine``). Because every transform is known, the optical flow of the visible surface is
exact: a pixel ``p`` showing layer ``L`` at frame ``t`` moves to ``A_L(t+1) A_L(t)^-1 p``.

What is in a video is set by its **scenario** (``scenario=`` of :func:`render_video`,
:func:`generate` and the :func:`ensure` config; all drawn from one seed). Each scenario is built so
that one cue is necessary and the others useless:

* ``classic`` (the default; the mix of generator version 2, unchanged): a textured background that
  pans, zooms and rolls (camera); 1-3 *primary* objects (ellipse, rectangle, polygon/star, blob) that
  move along smooth paths, rotate, breathe in scale, and may stop and start; one may enter late or
  leave the view; 0-2 static *distractors* glued to the background (instances in ``Annotations``,
  not primary foreground in ``Annotations_binary``), often planted on an object's path as occluders.
* ``transient_lookalikes`` (AD-Net's anchor diffusion, AGNN): one primary object persists through the
  video, moving fast on a straight path that bounces off the view's walls (it usually travels
  farther from its frame-0 place than its own size, so a position prior does not solve it);
  *lookalikes* drawn from the same appearance family (palette
  family, the same two shapes, similar size) appear for a few frames only, never in frame 0, and
  move too; the background pans fast and is re-textured over time. A single frame cannot tell the
  primary from a lookalike; frame 0 vs frame t can. Lookalikes are instances (kind ``"lookalike"``),
  not primary foreground.
* ``camouflage`` (LVO's motion stream): 1-2 primary objects whose texture is cut from the
  background's own (elsewhere in it: same colours, same texture scale), always moving: visible in
  motion, hardly in a single frame.
* ``stop_and_go`` (LVO's visual memory): 1-2 primary objects alternate moving and long stops (still
  in the world: they move only with the camera), next to 1-2 static distractors from the same
  appearance distribution.
* ``static_start`` (LVO's bidirectional pass): like ``stop_and_go``, but the primary objects are still
  for the first third to half of the video and move afterwards.
* ``identical_instances`` (FEELVOS local matching, AGSS's flow-warped mask): 2-6 primary objects with
  one appearance (same texture, shape, size and orientation) whose paths cross near the middle of
  the view; only the first-frame mask and continuity tell them apart.
* ``occlude_reappear`` (FEELVOS global matching, AGNN): a primary object passes behind a large static
  occluder (a distractor), fully hidden for 2-4 frames, and reappears far from where it vanished
  (it travels about two of its diameters while hidden).
* ``corrupted_frames`` (AGNN's gated messages): a ``classic`` scene where some frames (never frame 0)
  are blurred, heavily noised or half covered by a foreign texture. Only the RGB is corrupted:
  masks and flow stay exact.
* ``many_objects`` (AGSS-VOS's one pass for all objects): 4-10 small primary objects.
* ``mixed``: each video one of the eight scenarios from ``transient_lookalikes`` to
  ``many_objects`` (:data:`MIXED_SCENARIOS`). :func:`generate` balances them (each run of eight
  consecutive videos holds each scenario once, in a seeded order); :func:`render_video` draws one from
  the seed. The metadata records the concrete scenario.

``difficulty`` (0 = easy, 1 = default, >1 harder still) is a scale within each scenario: speed,
camouflage, number of objects, lookalikes and their likeness, stops, hidden frames, corruptions and
noise. Every video records its scenario (``meta/<seq>.json``: ``"scenario"``) and per-frame facts
(``"frames"``: one dict per frame with the ids of visible ``lookalikes``, of objects ``hidden``
between their first and last appearance, of primary objects ``stopped`` (no own motion to the next
frame) and the ``corruption`` ("blur" | "noise" | "half_occluded" | null)); :func:`frame_flags` turns
them into boolean arrays for per-frame breakdowns, :func:`scenario_of` reads a video's scenario.

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from voslab.data import io
from voslab.errors import VOSDataError
from voslab.utils import cache_dir, config_hash as _config_hash

__all__ = ["render_video", "generate", "ensure", "write_video", "read_meta", "scenario_of", "frame_flags",
           "video_seed", "sequence_name", "has_meta", "config_hash", "GENERATOR_VERSION", "SHAPES", "SCENARIOS", "mixed_scenarios",
           "MIXED_SCENARIOS", "DEFAULT_SCENARIO", "FRAME_FLAGS"]

GENERATOR_VERSION = 3  # bump when the rendered videos change: it is part of the cache key
#: The scenarios that ``mixed`` draws from, each isolating one cue (see the module docstring).
MIXED_SCENARIOS = ("transient_lookalikes", "camouflage", "stop_and_go", "static_start", "identical_instances",
                   "occlude_reappear", "corrupted_frames", "many_objects")
SCENARIOS = ("classic", *MIXED_SCENARIOS, "mixed")
DEFAULT_SCENARIO = "classic"  # generator version 2's mix, so configs without a scenario keep their meaning
#: Per-frame facts recorded in ``meta["frames"]`` (see :func:`frame_flags`).
FRAME_FLAGS = ("lookalikes", "hidden", "stopped", "corrupted")
_CORRUPTIONS = ("blur", "noise", "half_occluded")
_MAX_ATTEMPTS = 20  # scene redraws until a moving object covers
_MIN_FIRST_FOREGROUND = 0.002  # this fraction of frame 0
SHAPES = ("ellipse", "rectangle", "polygon", "star", "blob")
_BASE_SIZE = 96.0  # speeds and sizes are given for a 96-pixel-high view and scale with min(H, W)
_WRITERS = 2  # threads writing finished videos to disk while the next one renders
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
    present: np.ndarray | None = None  # (N,) bool: painted at that time step (None = always)
    texture_b: np.ndarray | None = None  # a second texture the first one drifts into (background)
    mix: np.ndarray | None = None  # (N,) weight of texture_b per time step


def _camera(rng: np.random.Generator, times: np.ndarray, size: tuple[int, int], d: float,
            pan: float = 1.0) -> np.ndarray:
    """World -> screen matrices (N, 3, 3): pan (oscillating), zoom and a little roll about the centre.

    ``pan`` scales the pan's speed and amplitude. The camera is the identity at frame 0 (world
    coordinates are frame 0's screen coordinates)."""
    h, w = size
    unit = _unit(size)
    speed = pan * unit * (0.3 + 1.2 * d) * rng.uniform(0.5, 1.0)
    amplitude = pan * 0.18 * min(h, w)
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


def _background_layer(rng, times, camera, size, palette, drift: float = 0.0) -> _Layer:
    """A textured plane covering every world point the camera sees over the video.

    ``drift`` > 0: a second texture (new pattern, new palette) fades in linearly from frame 0 (weight
    0) to the last frame (weight ``drift``): the background is re-textured over time. The geometry,
    hence the ground-truth flow, is unchanged."""
    h, w = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T
    seen = np.linalg.inv(camera) @ corners  # (N, 3, 4) world points of the view corners
    lo = np.floor(seen[:, :2].min(axis=(0, 2))) - 4
    hi = np.ceil(seen[:, :2].max(axis=(0, 2))) + 4
    bw, bh = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
    texture = _colourise(_texture_field(rng, bh, bw, _unit(size)), palette)
    origin = lo - rng.uniform(0, 1, 2)  # sub-pixel: frame 0 is resampled like the others
    layer = _Layer(texture, None, camera @ _translation(origin[0], origin[1]), {"kind": "background"})
    if drift > 0:
        layer.texture_b = _colourise(_texture_field(rng, bh, bw, _unit(size)), _random_palette(rng))
        n_frames = len(times) - 2
        layer.mix = drift * np.clip(times / max(n_frames - 1, 1), 0, 1)
    return layer


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
    rgb = None
    if with_rgb:
        bg = layers[0]
        rgb = _warp(bg.texture, bg.to_screen[k], size, cv2.BORDER_REFLECT)
        if bg.texture_b is not None and bg.mix[k] > 0:
            rgb += bg.mix[k] * (_warp(bg.texture_b, bg.to_screen[k], size, cv2.BORDER_REFLECT) - rgb)
    visible = np.zeros((h, w), np.uint8)  # index into `layers`
    for index, layer in enumerate(layers[1:], start=1):
        if layer.present is not None and not layer.present[k]:
            continue
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
                 difficulty: float = 1.0, scenario: str = DEFAULT_SCENARIO, corrupt: bool = True) -> dict:
    """Render one synthetic video in memory.

    ``scenario``: one of :data:`SCENARIOS` (see the module docstring); ``"mixed"`` draws one of
    :data:`MIXED_SCENARIOS` from the seed. ``corrupt=False`` renders a ``corrupted_frames`` video with
    clean frames (everything else identical), for comparisons.

    Returns a dict of NumPy arrays (T = ``n_frames``):
    ``frames`` (T,H,W,3) uint8; ``instances`` (T,H,W) uint8 ids 1..K (0 = background);
    ``foreground`` (T,H,W) uint8 {0,1} (primary objects only); ``flow_forward`` /
    ``flow_backward`` (T,H,W,2) float32 exact flow of the visible surface to frame t+1 / t-1 (the
    motion continues past both ends, so the last forward and first backward flows exist);
    ``valid_forward`` / ``valid_backward`` (T,H,W) bool: the surface is still visible there in the
    other frame (not occluded, not out of view); ``objects``: list of per-object dicts
    (``id``, ``kind`` "moving" (primary) | "static" (distractor) | "lookalike", ``shape``,
    ``appearance`` (equal values = identical appearance), ``first_frame``, ``last_frame``, ``depth``,
    ``enters_late``, ``leaves_view``, ``radius``: its on-screen radius in pixels when first seen,
    ``travel``: the largest on-screen distance from its frame-0 place, in its own diameters);
    ``scenario`` (str, the concrete one); ``frame_info``: one dict per
    frame (``lookalikes``, ``hidden``, ``stopped``: lists of ids; ``corruption``: str or None).
    """
    size = _check_size(size)
    if int(n_frames) < 1:
        raise VOSDataError(f"render_video: n_frames must be >= 1, got {n_frames}")
    if not difficulty >= 0:
        raise VOSDataError(f"render_video: difficulty must be >= 0 (0 easy, 1 default), got {difficulty}")
    scenario = _check_scenario(scenario)
    if scenario == "mixed":
        scenario = MIXED_SCENARIOS[int(np.random.default_rng([seed, 0x313]).integers(len(MIXED_SCENARIOS)))]
    n_frames, d = int(n_frames), float(difficulty)
    # Both tasks start from frame 0 (AD-Net's anchor, the semi-supervised first mask): redraw the
    # scene, deterministically, while no primary object shows there or the scenario's promise
    # (e.g. a lookalike shows, an object is hidden then reappears) is not kept.
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
        video = _render_scene(rng, n_frames, size, d, scenario, corrupt)
        if video["foreground"][0].mean() >= _MIN_FIRST_FOREGROUND and _keeps_promise(video, scenario):
            break
    return video


def _check_scenario(scenario) -> str:
    if scenario not in SCENARIOS:
        raise VOSDataError(f"unknown synthetic scenario {scenario!r}; choose one of {SCENARIOS}")
    return str(scenario)


def _render_scene(rng: np.random.Generator, n_frames: int, size: tuple[int, int], d: float,
                  scenario: str = DEFAULT_SCENARIO, corrupt: bool = True) -> dict:
    """One draw of camera, background and objects for ``scenario``, rendered (see :func:`render_video`)."""
    times = np.arange(-1, n_frames + 1, dtype=np.float64)  # one extra step each side for the flow
    layers = _SCENES[scenario](rng, times, size, d)
    video = _render_layers(rng, layers, n_frames, size, d)
    if scenario == "corrupted_frames" and corrupt:  # last: the clean render draws the same numbers
        for t, kind in _corrupt_frames(rng, video["frames"], size, d):
            video["frame_info"][t]["corruption"] = kind
    video["scenario"] = scenario
    return video


def _scene_classic(rng: np.random.Generator, times: np.ndarray, size: tuple[int, int], d: float) -> list[_Layer]:
    """Generator version 2's mix: camera, 1-3 primary objects, 0-2 static distractors, planted occluders."""
    n_frames = len(times) - 2
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
    return [_background_layer(rng, times, camera, size, bg_palette)] + [objects[i] for i in depth]


def _depth_order(rng: np.random.Generator, objects: list[_Layer]) -> list[int]:
    """Back-to-front order: random, but planted distractors go in front (they are occluders)."""
    order = list(rng.permutation(len(objects)))
    planted = [i for i in order if objects[i].meta.get("planted")]
    return [int(i) for i in order if i not in planted] + [int(i) for i in planted]


# --------------------------------------------------------------------------------------------
# Scenarios: each a scene builder (rng, times, size, difficulty) -> layers, background first
# --------------------------------------------------------------------------------------------
def _from_raster(raster: int) -> np.ndarray:
    """Raster pixel -> canonical [-1, 1]^2. (3, 3)"""
    return _affine(np.array([2 / (raster - 1)]), np.zeros(1), np.array([-1.0]), np.array([-1.0]))[0]


def _look(rng, size, radius: float, palette: np.ndarray, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """An object's appearance: (texture (R, R, 3), alpha (R, R)) for a ``radius``-pixel object."""
    raster = int(np.clip(2.5 * radius, 48, 384))
    texture = _colourise(_texture_field(rng, raster, raster, raster / (2 * radius) * _unit(size)), palette)
    return texture, _shape_alpha(rng, shape, raster)


def _place(look, radius: float, centre: np.ndarray, angle: np.ndarray, scale: np.ndarray,
           base: np.ndarray | None, meta: dict, present: np.ndarray | None = None) -> _Layer:
    """A layer showing ``look`` at ``centre`` (N, 2), rotated by ``angle`` (N,), ``radius * scale`` (N,)
    pixels; in world coordinates seen through the camera ``base`` (N, 3, 3), or on screen (None)."""
    texture, alpha = look
    to_frame = _affine(radius * scale, angle, centre[:, 0], centre[:, 1]) @ _from_raster(alpha.shape[0])
    return _Layer(texture, alpha, to_frame if base is None else base @ to_frame,
                  {"enters_late": False, "leaves_view": False, **meta}, present)


def _spin(rng, progress: np.ndarray, d: float) -> np.ndarray:
    spin = rng.choice([-1, 1]) * rng.uniform(0.01, 0.06) * (0.5 + min(d, 2))
    return rng.uniform(0, 2 * np.pi) + spin * progress


def _breathe(rng, progress: np.ndarray) -> np.ndarray:
    return 1 + 0.12 * np.sin(rng.uniform(0.1, 0.4) * progress + rng.uniform(0, 2 * np.pi))


def _roam(rng, progress: np.ndarray, size: tuple[int, int], margin: float, speed: float) -> np.ndarray:
    """A smooth (Lissajous) path whose centre stays ``margin`` pixels inside the view. (N, 2)"""
    h, w = size
    half = np.array([(w - 1) / 2, (h - 1) / 2])
    room = np.maximum(half - margin, 1.0)
    centre = half + rng.uniform(-0.15, 0.15, 2) * room
    amp = np.maximum(room - np.abs(centre - half), 0.5) * rng.uniform(0.6, 1.0, 2)
    omega = speed / np.linalg.norm(amp) * rng.uniform(0.8, 1.3, 2)
    return centre + amp * np.sin(omega * progress[:, None] + rng.uniform(0, 2 * np.pi, 2))


def _bounce(rng, times: np.ndarray, size: tuple[int, int], margin: float, speed: float) -> np.ndarray:
    """A straight path at constant ``speed`` that bounces off the view's walls (centre kept ``margin``
    pixels inside): it always gets somewhere. (N, 2)"""
    h, w = size
    lo = np.full(2, margin)
    span = np.maximum(np.array([w - 1, h - 1]) - 2 * margin, 1.0)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    q = np.mod(rng.uniform(0, 1, 2) * span + direction * speed * times[:, None], 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _progress_of(speed: np.ndarray) -> np.ndarray:
    """Distance along a path per time step from the speed of each step (progress 0 at frame 0)."""
    progress = np.concatenate([[0.0], np.cumsum(speed[:-1])])
    return progress - progress[1]


def _stop_and_go_speed(rng, times: np.ndarray, n_frames: int, d: float) -> np.ndarray:
    """Alternating moves (speed 1) and stops (speed 0) of a few frames each, stops the longer."""
    speed = np.zeros(len(times))
    stop_lo = max(2, int(round(n_frames * (0.12 + 0.08 * min(d, 2)))))
    stop_hi = max(stop_lo, n_frames // 3)
    move_hi = max(2, n_frames // 4)
    k, moving = 0, bool(rng.random() < 0.7)
    while k < len(times):
        n = int(rng.integers(2, move_hi + 1)) if moving else int(rng.integers(stop_lo, stop_hi + 1))
        speed[k:k + n] = float(moving)
        k, moving = k + n, not moving
    return speed


def _still_start_speed(rng, times: np.ndarray, n_frames: int) -> np.ndarray:
    """Still in frames 0 .. S-1 (S a third to a half of the video), moving from frame S-1 to S on."""
    still = int(rng.integers(max(2, n_frames // 3), max(2, n_frames // 2) + 1))
    still = min(still, max(1, n_frames - 2))
    return (times >= still - 1).astype(np.float64)


def _ray_room(point: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """How far ``point`` may go along ``direction`` and stay inside the box [lo, hi]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        limits = np.where(direction > 0, (hi - point) / direction,
                          np.where(direction < 0, (lo - point) / direction, np.inf))
    return float(max(limits.min(), 0.0))


def _free_spot(rng, size, radius: float) -> np.ndarray:
    h, w = size
    return rng.uniform([radius, radius], [max(w - 1 - radius, radius + 1), max(h - 1 - radius, radius + 1)])


def _scene_transient_lookalikes(rng, times, size, d) -> list[_Layer]:
    """One primary that persists and travels; lookalikes that come and go; a fast, drifting background."""
    h, w = size
    n_frames, unit = len(times) - 2, _unit(size)
    camera = _camera(rng, times, size, d, pan=2.5 + min(d, 2))
    background = _background_layer(rng, times, camera, size, _random_palette(rng), drift=min(1.0, 0.6 + 0.4 * d))
    family = _random_palette(rng)  # the video's appearance family: the primary is one more draw of it
    shapes = [str(x) for x in rng.choice(SHAPES, 2, replace=False)]
    jitter = 45.0 / (0.5 + d)

    def member():
        radius = rng.uniform(0.10, 0.17) * min(h, w)
        shape = shapes[int(rng.integers(2))]
        palette = np.clip(family + rng.normal(0, jitter, family.shape), 0, 255)
        return radius, shape, _look(rng, size, radius, palette, shape)

    def speed() -> float:
        return unit * (2.5 + 2.5 * d) * rng.uniform(0.8, 1.2)

    radius, shape, look = member()
    path = _bounce(rng, times, size, radius, speed())
    objects = [_place(look, radius, path, _spin(rng, times, d), _breathe(rng, times), None,
                      {"kind": "moving", "shape": shape, "appearance": 0})]
    n_slots = 1 + int(rng.random() < 0.3 + 0.5 * min(d, 1))  # lookalikes on screen at once
    longest = max(2, int(round(0.3 * n_frames)))
    for slot in range(n_slots):
        t = 1 + slot + int(rng.integers(0, 2))
        while t <= n_frames - 1:
            end = min(t + int(rng.integers(2, longest + 1)) - 1, n_frames - 1)
            objects.append(_lookalike(rng, times, size, d, (t, end), path, radius, member(), speed(), len(objects)))
            t = end + 1 + int(rng.integers(0, 2))
    return [background] + [objects[i] for i in rng.permutation(len(objects))]


def _lookalike(rng, times, size, d, window, avoid, avoid_radius, member, speed, appearance) -> _Layer:
    """A member of the family shown in frames ``window`` (first, last) only, moving on a straight line
    that keeps clear of the primary's path ``avoid`` while shown."""
    radius, shape, look = member
    present = (times >= window[0]) & (times <= window[1])
    middle = (window[0] + window[1]) / 2
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    for _ in range(20):
        path = _free_spot(rng, size, radius) + direction * speed * (times - middle)[:, None]
        if np.linalg.norm(path[present] - avoid[present], axis=1).min() >= 1.1 * (radius + avoid_radius):
            break
    progress = times - middle
    return _place(look, radius, path, _spin(rng, progress, d), _breathe(rng, progress), None,
                  {"kind": "lookalike", "shape": shape, "appearance": appearance}, present)


def _scene_camouflage(rng, times, size, d) -> list[_Layer]:
    """1-2 always-moving primaries cut from the background's own texture (elsewhere in it): the same
    colours and texture scale, visible in motion, hardly in a single frame."""
    h, w = size
    camera = _camera(rng, times, size, d)
    bg_palette = _random_palette(rng)
    background = _background_layer(rng, times, camera, size, bg_palette)
    contrast = float(np.clip(0.3 - 0.2 * d, 0, 1))  # share of a free texture mixed in (0 at d >= 1.5)
    objects = []
    for i in range(1 + int(rng.integers(0, 1 + round(min(d, 1))))):
        radius = rng.uniform(0.15, 0.27) * min(h, w)
        shape = str(rng.choice(SHAPES))
        raster = int(np.clip(2.5 * radius, 48, 384))
        side = int(np.ceil(2 * radius))  # the raster spans 2 * radius world pixels
        bh, bw = background.texture.shape[:2]
        y0, x0 = int(rng.integers(0, max(bh - side, 1))), int(rng.integers(0, max(bw - side, 1)))
        texture = cv2.resize(background.texture[y0:y0 + side, x0:x0 + side], (raster, raster),
                             interpolation=cv2.INTER_LINEAR)
        field_ = _texture_field(rng, raster, raster, raster / (2 * radius) * _unit(size))
        free = _colourise(field_, _random_palette(rng))
        look = (texture * (1 - contrast) + free * contrast, _shape_alpha(rng, shape, raster))
        path = _roam(rng, times, size, 0.6 * radius, _unit(size) * (1.2 + 1.5 * d) * rng.uniform(0.8, 1.2))
        objects.append(_place(look, radius, path, _spin(rng, times, d), _breathe(rng, times), camera,
                              {"kind": "moving", "shape": shape, "appearance": i}))
    return [background] + [objects[i] for i in rng.permutation(len(objects))]


def _scene_stopping(rng, times, size, d, still_start: bool) -> list[_Layer]:
    """1-2 primaries that stop for long stretches (or are still at first), 1-2 static distractors
    drawn from the same appearance distribution."""
    h, w = size
    n_frames = len(times) - 2
    camera = _camera(rng, times, size, d)
    bg_palette = _random_palette(rng)
    n_primary = 1 + int(rng.integers(0, 1 + round(min(d, 1))))
    n_static = 1 + int(rng.integers(0, 1 + round(min(d, 1))))
    objects = []
    for i in range(n_primary + n_static):
        radius = rng.uniform(0.13, 0.24) * min(h, w)
        shape = str(rng.choice(SHAPES))
        look = _look(rng, size, radius, _random_palette(rng), shape)
        if i < n_primary:
            speed = (_still_start_speed(rng, times, n_frames) if still_start
                     else _stop_and_go_speed(rng, times, n_frames, d))
            progress = _progress_of(speed)
            path = _roam(rng, progress, size, 0.6 * radius, _unit(size) * (1.5 + 2.0 * d) * rng.uniform(0.8, 1.2))
            angle, scale, kind = _spin(rng, progress, d), _breathe(rng, progress), "moving"
        else:
            path = np.repeat(_free_spot(rng, size, radius)[None], len(times), 0)
            angle, scale, kind = np.full(len(times), rng.uniform(0, 2 * np.pi)), np.ones(len(times)), "static"
        objects.append(_place(look, radius, path, angle, scale, camera,
                              {"kind": kind, "shape": shape, "appearance": i}))
    background = _background_layer(rng, times, camera, size, bg_palette)
    return [background] + [objects[i] for i in rng.permutation(len(objects))]


def _scene_stop_and_go(rng, times, size, d) -> list[_Layer]:
    return _scene_stopping(rng, times, size, d, still_start=False)


def _scene_static_start(rng, times, size, d) -> list[_Layer]:
    return _scene_stopping(rng, times, size, d, still_start=True)


def _scene_identical_instances(rng, times, size, d) -> list[_Layer]:
    """2-6 copies of one object (texture, shape, size, orientation) on straight paths through one
    meeting area, each passing it at its own time; apart from each other in frame 0."""
    h, w = size
    n_frames, unit = len(times) - 2, _unit(size)
    camera = _camera(rng, times, size, d)
    bg_palette = _random_palette(rng)
    n = 2 + int(rng.integers(0, 1 + round(4 * min(d, 1))))
    radius = rng.uniform(0.10, 0.15) * min(h, w)
    shape = str(rng.choice(SHAPES))
    look = _look(rng, size, radius, _random_palette(rng), shape)
    angle, scale = _spin(rng, times, d), np.ones(len(times))  # shared: the copies stay identical
    meet = np.array([(w - 1) / 2, (h - 1) / 2]) + rng.uniform(-0.1, 0.1, 2) * [w, h]
    lo, hi = np.full(2, 1.2 * radius), np.array([w - 1, h - 1]) - 1.2 * radius
    theta0 = rng.uniform(0, 2 * np.pi)
    top_speed = unit * (2.0 + 2.0 * d)
    starts, objects = [], []
    for i in range(n):
        for _ in range(30):
            theta = theta0 + np.pi * (i + rng.uniform(-0.3, 0.3)) / n + np.pi * int(rng.integers(2))
            u = np.array([np.cos(theta), np.sin(theta)])
            through = meet + np.array([-u[1], u[0]]) * rng.uniform(-0.3, 0.3) * radius
            distance = rng.uniform(0.4, 0.95) * _ray_room(through, -u, lo, hi)  # frame 0 -> meeting area
            last = max(n_frames - 1, 1)
            t_cross = min(max(rng.uniform(0.3, 0.7) * last, distance / top_speed), 0.9 * last)
            speed = min(distance / t_cross, top_speed)
            start = through - u * speed * t_cross
            if all(np.linalg.norm(start - q) >= 2.1 * radius for q in starts):
                break
        else:
            break  # no room left for another copy in frame 0
        starts.append(start)
        objects.append(_place(look, radius, start + u * speed * times[:, None], angle, scale, camera,
                              {"kind": "moving", "shape": shape, "appearance": 0}))
    background = _background_layer(rng, times, camera, size, bg_palette)
    return [background] + [objects[i] for i in rng.permutation(len(objects))]


def _scene_occlude_reappear(rng, times, size, d) -> list[_Layer]:
    """A primary passes behind a large static occluder: hidden for 2-4 frames, during which it travels
    about two of its diameters; maybe a second primary roams."""
    h, w = size
    n_frames, unit = len(times) - 2, _unit(size)
    camera = _camera(rng, times, size, d, pan=0.5)
    bg_palette = _random_palette(rng)
    radius = rng.uniform(0.11, 0.16) * min(h, w)
    reach = 1.3 * radius  # bounds the shape in any rotation (no breathing here)
    hidden = min(2 + int(rng.integers(0, 1 + round(2 * min(d, 1)))), max(n_frames - 2, 0))
    last_hide = max(n_frames - 1 - hidden, 1)
    t_hide = int(rng.integers(min(2, last_hide), last_hide + 1))  # first hidden frame
    t_a, t_b = t_hide - 1, t_hide + hidden  # last frame seen before, first frame seen after
    jump = 4 * radius * rng.uniform(1.0, 1.3) * (0.75 + 0.25 * min(d, 2))  # centre travel from t_a to t_b
    step_hidden = jump / (hidden + 1)
    half_len, half_wid = jump / 2 - step_hidden + reach + 0.5, reach + 1.0 + 0.2 * radius
    speed = unit * (1.2 + 1.5 * d) * rng.uniform(0.8, 1.2)
    theta = rng.uniform(-np.pi / 6, np.pi / 6) + (0 if w >= h else np.pi / 2) + np.pi * int(rng.integers(2))
    u = np.array([np.cos(theta), np.sin(theta)])
    along = np.where(times <= t_a, -jump / 2 - speed * (t_a - times),
                     np.where(times >= t_b, jump / 2 + speed * (times - t_b), -jump / 2 + step_hidden * (times - t_a)))
    seen = along[1:-1]
    centre = np.array([(w - 1) / 2, (h - 1) / 2]) + rng.uniform(-0.05, 0.05, 2) * [w, h]
    occluder_at = centre - u * (seen.min() + seen.max()) / 2  # the whole path as central as it goes
    shape = str(rng.choice(SHAPES))
    look = _look(rng, size, radius, _random_palette(rng), shape)
    objects = [_place(look, radius, occluder_at + u * along[:, None], _spin(rng, times, d), np.ones(len(times)),
                      camera, {"kind": "moving", "shape": shape, "appearance": 0})]
    if rng.random() < 0.5 * min(d, 1):
        r2 = rng.uniform(0.11, 0.16) * min(h, w)
        s2 = str(rng.choice(SHAPES))
        path = _roam(rng, times, size, 0.6 * r2, speed)
        objects.append(_place(_look(rng, size, r2, _random_palette(rng), s2), r2, path, _spin(rng, times, d),
                              _breathe(rng, times), camera, {"kind": "moving", "shape": s2, "appearance": 1}))
    # the occluder: a textured rectangle glued to the world, in front of everything
    raster = 64
    c, s = np.cos(theta), np.sin(theta)
    to_world = np.array([[c * half_len, -s * half_wid, occluder_at[0]], [s * half_len, c * half_wid, occluder_at[1]],
                         [0, 0, 1.0]]) @ _from_raster(raster)
    texture = _colourise(_texture_field(rng, raster, raster, raster / (2 * half_len) * unit), _random_palette(rng))
    occluder = _Layer(texture, np.ones((raster, raster), np.float32), camera @ to_world,
                      {"kind": "static", "shape": "rectangle", "appearance": 2, "enters_late": False,
                       "leaves_view": False})
    background = _background_layer(rng, times, camera, size, bg_palette)
    return [background] + [objects[i] for i in rng.permutation(len(objects))] + [occluder]


def _scene_corrupted_frames(rng, times, size, d) -> list[_Layer]:
    """A classic scene; the corruption of some frames comes after rendering (:func:`_corrupt_frames`)."""
    return _scene_classic(rng, times, size, d)


def _corrupt_frames(rng, frames: np.ndarray, size: tuple[int, int], d: float) -> list[tuple[int, str]]:
    """Blur, noise or half-cover some frames (never frame 0) in place. -> [(frame, kind)]."""
    n_frames = len(frames)
    if n_frames < 2:
        return []
    h, w = size
    unit = _unit(size)
    n = int(np.clip(round((0.15 + 0.15 * min(d, 2)) * n_frames), 1, n_frames - 1))
    done = []
    for t in np.sort(rng.choice(np.arange(1, n_frames), n, replace=False)):
        kind = _CORRUPTIONS[int(rng.integers(len(_CORRUPTIONS)))]
        image = frames[t].astype(np.float32)
        if kind == "blur":
            image = cv2.GaussianBlur(image, (0, 0), unit * (2.0 + 2.0 * min(d, 2)) * rng.uniform(0.8, 1.2))
        elif kind == "noise":
            image += (15 + 20 * min(d, 2)) * rng.standard_normal(image.shape, dtype=np.float32)
        else:  # a foreign texture over about half the view (a hand, a lens cap, a passing sign)
            cover = rng.uniform(0.4, 0.6)
            patch = _colourise(_value_noise(rng, h, w, rng.uniform(6, 16) * unit), _random_palette(rng))
            side = int(rng.integers(4))
            cut_w, cut_h = int(round(cover * w)), int(round(cover * h))
            region = [np.s_[:, :cut_w], np.s_[:, w - cut_w:], np.s_[:cut_h, :], np.s_[h - cut_h:, :]][side]
            image[region] = patch[region]
        frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        done.append((int(t), kind))
    return done


def _scene_many_objects(rng, times, size, d) -> list[_Layer]:
    """4-10 small primary objects, apart from each other in frame 0."""
    h, w = size
    n_frames = len(times) - 2
    camera = _camera(rng, times, size, d)
    bg_palette = _random_palette(rng)
    n = 4 + int(rng.integers(0, 1 + round(6 * min(d, 1))))
    objects, starts = [], []
    for i in range(n):
        radius = rng.uniform(0.08, 0.14) * min(h, w)
        shape = str(rng.choice(SHAPES))
        look = _look(rng, size, radius, _random_palette(rng), shape)
        progress = _progress(rng, times, n_frames, p_stop=0.2)
        speed = _unit(size) * (1.0 + 1.5 * d) * rng.uniform(0.8, 1.2)
        for _ in range(10):
            path = _roam(rng, progress, size, radius, speed)
            if all(np.linalg.norm(path[1] - q) >= 0.9 * (radius + r) for q, r in starts):
                break
        starts.append((path[1], radius))
        objects.append(_place(look, radius, path, _spin(rng, progress, d), _breathe(rng, progress), camera,
                              {"kind": "moving", "shape": shape, "appearance": i}))
    background = _background_layer(rng, times, camera, size, bg_palette)
    return [background] + [objects[i] for i in rng.permutation(len(objects))]


_SCENES = {
    "classic": _scene_classic, "transient_lookalikes": _scene_transient_lookalikes,
    "camouflage": _scene_camouflage, "stop_and_go": _scene_stop_and_go, "static_start": _scene_static_start,
    "identical_instances": _scene_identical_instances, "occlude_reappear": _scene_occlude_reappear,
    "corrupted_frames": _scene_corrupted_frames, "many_objects": _scene_many_objects,
}


def _runs(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _keeps_promise(video: dict, scenario: str) -> bool:
    """Whether a rendered video shows what its scenario promises (else it is redrawn)."""
    info, objects, ids = video["frame_info"], video["objects"], video["instances"]
    n_frames = len(info)
    primary = [o["id"] for o in objects if o["kind"] == "moving"]
    if scenario == "transient_lookalikes" and n_frames >= 2:
        everywhere = all(np.isin(primary, ids[t]).all() for t in range(n_frames))
        return everywhere and any(f["lookalikes"] for f in info)
    if scenario == "stop_and_go" and n_frames >= 6:
        stops = [_runs(np.array([i in f["stopped"] for f in info])) for i in primary]
        moves = [any(i not in f["stopped"] for f in info) for i in primary]
        return any(s >= 2 and m for s, m in zip(stops, moves))
    if scenario == "static_start" and n_frames >= 4:
        return bool(info[0]["stopped"]) and any(not f["stopped"] for f in info)
    if scenario == "identical_instances":
        return len(np.intersect1d(primary, ids[0])) >= 2
    if scenario == "occlude_reappear" and n_frames >= 4:
        return any(_runs(np.array([i in f["hidden"] for f in info])) >= 2 for i in primary)
    if scenario == "many_objects":
        return len(np.intersect1d(primary, ids[0])) >= min(4, len(primary))
    return True


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
    instances, objects, lookup = _instance_ids(layers, visible[1:-1])
    primary_ids = [o["id"] for o in objects if o["kind"] == "moving"]
    return {
        "frames": frames, "instances": instances,
        "foreground": np.isin(instances, primary_ids).astype(np.uint8),
        "flow_forward": flow_fw, "flow_backward": flow_bw,
        "valid_forward": valid_fw, "valid_backward": valid_bw, "objects": objects,
        "frame_info": _frame_info(layers, lookup, instances, objects),
    }


def _instance_ids(layers: list[_Layer], visible: np.ndarray) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Turn layer indices into ids 1..K: primary objects first, then the others; never-seen dropped.

    -> (ids (T, H, W), object dicts, lookup: layer index -> id)."""
    order = sorted(range(1, len(layers)), key=lambda i: (layers[i].meta["kind"] != "moving", i))
    lookup = np.zeros(len(layers), np.uint8)
    objects = []
    for index in order:
        seen = np.flatnonzero((visible == index).any(axis=(1, 2)))
        if len(seen) == 0:
            continue
        lookup[index] = len(objects) + 1
        meta = {k: v for k, v in layers[index].meta.items() if k != "planted"}
        meta.setdefault("appearance", 100 + index)  # a layer of its own: an appearance of its own
        objects.append({"id": len(objects) + 1, **meta, "first_frame": int(seen[0]),
                        "last_frame": int(seen[-1]), "depth": index - 1,
                        "radius": _radius(layers[index], int(seen[0])),
                        "travel": _travel(layers[index], int(seen[0]), int(seen[-1]))})
    return lookup[visible], objects, lookup


def _radius(layer: _Layer, t: int) -> float:
    """Half the on-screen width of the layer's raster at frame t (the object's radius), in pixels."""
    return round(float(np.sqrt(abs(np.linalg.det(layer.to_screen[t + 1, :2, :2]))) * (layer.alpha.shape[0] - 1) / 2), 2)


def _travel(layer: _Layer, first: int, last: int) -> float:
    """Largest on-screen distance of the layer's centre from its place at frame 0 over frames
    ``first..last``, in its own diameters (its raster's width on screen at frame 0)."""
    raster = layer.alpha.shape[0]
    centre = layer.to_screen[1:-1, :2] @ np.array([(raster - 1) / 2, (raster - 1) / 2, 1.0])  # (T, 2)
    diameter = np.sqrt(abs(np.linalg.det(layer.to_screen[1, :2, :2]))) * (raster - 1)
    shift = np.linalg.norm(centre[first:last + 1] - centre[0], axis=1).max()
    return round(float(shift / max(diameter, 1e-6)), 3)


def _frame_info(layers: list[_Layer], lookup: np.ndarray, instances: np.ndarray, objects: list[dict]) -> list[dict]:
    """Per-frame facts: visible lookalikes, objects hidden between their first and last appearance,
    primary objects with no own motion (relative to the background) to the next frame."""
    n_frames = len(instances)
    shown = np.zeros((n_frames, len(objects) + 1), bool)  # (T, K+1) id visible in frame t
    for t in range(n_frames):
        shown[t, np.unique(instances[t])] = True
    layer_of = {int(lookup[i]): i for i in range(1, len(layers)) if lookup[i]}
    background = layers[0].to_screen
    info = []
    for t in range(n_frames):
        k = t + 1
        lookalikes, hidden, stopped = [], [], []
        for o in objects:
            i = o["id"]
            if o["kind"] == "lookalike" and shown[t, i]:
                lookalikes.append(i)
            if o["first_frame"] < t < o["last_frame"] and not shown[t, i]:
                hidden.append(i)
            if o["kind"] == "moving" and o["first_frame"] <= t <= o["last_frame"]:
                own = layers[layer_of[i]].to_screen  # own motion: relative to the background's
                now = np.linalg.solve(background[k], own[k])
                later = np.linalg.solve(background[k + 1], own[k + 1])
                if np.abs(now - later).max() < 1e-6:
                    stopped.append(i)
        info.append({"lookalikes": lookalikes, "hidden": hidden, "stopped": stopped, "corruption": None})
    return info


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
    meta = {"name": name, **(info or {}), "scenario": video.get("scenario", DEFAULT_SCENARIO),
            "n_frames": len(video["frames"]), "size": list(video["frames"].shape[1:3]),
            "objects": video["objects"], "frames": video.get("frame_info", [])}
    _meta_path(root, name).parent.mkdir(parents=True, exist_ok=True)
    _meta_path(root, name).write_text(json.dumps(meta, indent=1))


def _meta_path(root: str | Path, name: str) -> Path:
    return Path(root) / "meta" / f"{name}.json"


def has_meta(root: str | Path, name: str) -> bool:
    """Whether ``root`` holds the generator's record of video ``name`` (it is a synthetic video)."""
    return _meta_path(root, name).is_file()


def read_meta(root: str | Path, name: str) -> dict:
    """The generator's record of video ``name`` under ``root``: ``meta/<name>.json`` as a dict
    (``scenario``: the concrete scenario; ``scenario_config``: the one asked for, e.g. "mixed";
    ``objects``: one dict per instance id with ``id``, ``kind`` "moving" | "static" | "lookalike",
    ``shape``, ``appearance``, ``first_frame``, ``last_frame``, ``radius``, ``travel``, ...; ``frames``: one dict
    per frame with ``lookalikes``, ``hidden``, ``stopped`` (id lists) and ``corruption``)."""
    path = _meta_path(root, name)
    if not path.is_file():
        raise VOSDataError(f"{path} is missing: {name!r} is not a synthetic video under {root} "
                           "(generate the split with voslab.data.synthetic.generate or ensure)")
    return json.loads(path.read_text())


def scenario_of(root: str | Path, name: str) -> str:
    """The scenario of synthetic video ``name`` under ``root`` (``"classic"`` for older splits)."""
    return read_meta(root, name).get("scenario", DEFAULT_SCENARIO)


def frame_flags(meta: dict) -> dict[str, np.ndarray]:
    """Per-frame booleans from a video's metadata (:func:`read_meta`) or a rendered video
    (:func:`render_video`): ``lookalikes`` (a lookalike is visible), ``hidden`` (an object is hidden
    between its first and last appearance), ``stopped`` (a primary object has no own motion to the
    next frame), ``corrupted`` (the frame's RGB is corrupted). -> {name: (T,) bool}."""
    frames = meta["frame_info"] if "frame_info" in meta else meta.get("frames")  # a video / its meta
    if frames is None:
        raise VOSDataError("frame_flags: no per-frame record ('frames') in this metadata; it was written by "
                           f"generator version < 3 (now {GENERATOR_VERSION}): regenerate the split")
    return {
        "lookalikes": np.array([bool(f["lookalikes"]) for f in frames], bool),
        "hidden": np.array([bool(f["hidden"]) for f in frames], bool),
        "stopped": np.array([bool(f["stopped"]) for f in frames], bool),
        "corrupted": np.array([f["corruption"] is not None for f in frames], bool),
    }


def mixed_scenarios(n_videos: int, seed: int = 0, split: str = "train") -> list[str]:
    """The scenario of each video of a ``mixed`` split: every run of eight consecutive videos holds
    each of :data:`MIXED_SCENARIOS` once, in an order seeded by (seed, split, run)."""
    out = []
    for block in range((int(n_videos) + len(MIXED_SCENARIOS) - 1) // len(MIXED_SCENARIOS)):
        rng = np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), block, 0x313])
        out += [MIXED_SCENARIOS[i] for i in rng.permutation(len(MIXED_SCENARIOS))]
    return out[:int(n_videos)]


def generate(root: str | Path, split: str = "train", n_videos: int = 8, n_frames: int = 12,
             size: tuple[int, int] = (96, 160), difficulty: float = 1.0, seed: int = 0,
             scenario: str = DEFAULT_SCENARIO) -> Path:
    """Render ``n_videos`` videos and write them under ``root`` in the DAVIS layout; returns ``root``.

    ``scenario``: one of :data:`SCENARIOS`; ``"mixed"`` gives each video one of
    :data:`MIXED_SCENARIOS`, balanced (see :func:`mixed_scenarios`). Video ``i`` is
    ``render_video(video_seed(seed, split, i), n_frames, size, difficulty, <its scenario>)``.

    Writes ``JPEGImages/<seq>/00000.jpg``, ``Annotations/<seq>/00000.png`` (instance ids, DAVIS
    palette), ``Annotations_binary/<seq>/00000.png`` (moving objects, {0, 255}),
    ``Flow/forward|backward/<seq>/00000.flo``, ``meta/<seq>.json`` and ``ImageSets/<split>.txt``
    (written last: it marks the split complete). Sequences are named ``synth-<split>-0000``.
    """
    if int(n_videos) < 1:
        raise VOSDataError(f"generate: n_videos must be >= 1, got {n_videos}")
    scenario = _check_scenario(scenario)
    per_video = mixed_scenarios(n_videos, seed, split) if scenario == "mixed" else [scenario] * int(n_videos)
    root = Path(root)
    names = []
    # Creating files costs kernel CPU time (~60 per video, up to ~1 ms each on some disks): writer
    # threads overlap it with rendering (the order of the bytes written does not depend on them).
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's own pool would fight the writers for the cores
    try:
        _render_and_write(root, split, n_videos, n_frames, size, difficulty, seed, scenario, per_video, names)
    finally:
        cv2.setNumThreads(cv2_threads)
    _write_text_atomic(root / "ImageSets" / f"{split}.txt", "\n".join(names) + "\n")
    return root


def _render_and_write(root, split, n_videos, n_frames, size, difficulty, seed, scenario, per_video, names) -> None:
    with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="voslab-synthetic-writer") as pool:
        pending: list[Future] = []
        for index in range(int(n_videos)):
            name = sequence_name(split, index)
            vseed = video_seed(seed, split, index)
            video = render_video(vseed, n_frames, size, difficulty, per_video[index])
            pending.append(pool.submit(write_video, root, name, video, {
                "split": split, "index": index, "seed": seed, "video_seed": vseed,
                "difficulty": float(difficulty), "scenario_config": scenario,
                "generator_version": GENERATOR_VERSION}))
            names.append(name)
            while len(pending) > _WRITERS:  # bounded memory: a few rendered videos in flight
                pending.pop(0).result()
        for job in pending:
            job.result()  # re-raises a writer's error here


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
    full["scenario"] = _check_scenario(full["scenario"])
    return full


def config_hash(config: dict) -> str:
    """Short stable hash of a synthetic config (plus the generator version): the cache key."""
    return _config_hash({**_normalise_config(config), "version": GENERATOR_VERSION}, length=16)


def ensure(split: str, config: dict | None = None, root: str | Path | None = None) -> Path:
    """Return a dataset root holding ``split`` for ``config``, generating it once if needed.

    ``config`` keys are :func:`generate`'s (``n_videos``, ``n_frames``, ``size``, ``difficulty``,
    ``seed``, ``scenario``). The default root is ``cache_dir("data", "synthetic", config_hash(config))``; train and
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
