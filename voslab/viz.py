"""Figures and widgets for notebooks: overlays, contact sheets, attention explorers, curves, videos.

Every function returns a matplotlib ``Figure`` (or an ipywidgets widget) and never calls
``plt.show()``: in Jupyter, make it the last expression of the cell; in scripts, ``savefig``.
Figures are detached from pyplot (closed) so they neither pile up nor show twice; this works
headless (Agg). Interactive variants use ipywidgets sliders / Play only (no ipympl).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voslab.jupyter import is_interactive

__all__ = [
    "compare",
    "contact_sheet",
    "heatmap_over",
    "OverlayVideoWriter",
    "overlay",
    "plot_curves",
    "query_attention",
    "scrubber",
    "write_overlay_video",
]

VOID_LABEL = 255


# ------------------------------------------------------------------ helpers
def _numpy(x: Any) -> np.ndarray:
    """torch tensors / lists -> numpy (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_image(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 or float [0, 1], or (3, H, W) tensor -> uint8 (H, W, 3)."""
    img = _numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)  # (C, H, W) -> (H, W, C)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) * (255 if img.max() <= 1.0 else 1), 0, 255).round().astype(np.uint8)
    return img


def _as_ids(mask: Any) -> np.ndarray:
    """Instance ids (H, W) uint8; float/bool masks are thresholded at 0.5 to {0, 1}."""
    m = _numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dtype == bool or np.issubdtype(m.dtype, np.floating):
        return (m > 0.5).astype(np.uint8)
    return m.astype(np.uint8)


def _palette() -> np.ndarray:
    from voslab.data.io import DAVIS_PALETTE

    return np.asarray(DAVIS_PALETTE, dtype=np.uint8)


def _new_figure(width: float, height: float):
    """A Figure detached from pyplot (no global state, no double display in notebooks)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    plt.close(fig)
    return fig


def _boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels whose id differs from a 4-neighbour (bool (H, W))."""
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:, 1:] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[1:] |= ids[:-1] != ids[1:]
    return edge


# ------------------------------------------------------------------ overlays and sheets
def overlay(image: Any, mask: Any, alpha: float = 0.5, outline: bool = False) -> np.ndarray:
    """Blend instance colours (DAVIS palette: 1 red, 2 green, ...) over ``image``. uint8 (H, W, 3).

    mask: ids (H, W) (0 = background, 255 = void, left uncoloured) or a float/bool mask.
    outline: also draw each object's contour in full colour.
    """
    img, ids = _as_image(image), _as_ids(mask)
    if img.shape[:2] != ids.shape:
        raise ValueError(f"overlay: mask {ids.shape} does not match image {img.shape[:2]}; resize the mask")
    colours = _palette()[ids].astype(np.float64)  # (H, W, 3)
    painted = (ids > 0) & (ids != VOID_LABEL)
    out = img.astype(np.float64)
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    if outline:
        edge = _boundaries(ids) & painted
        out[edge] = colours[edge]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def contact_sheet(frames: Any, masks: Any = None, ncols: int = 6, titles: Sequence[str] | None = None,
                  alpha: float = 0.5, outline: bool = False, tile_size: float = 2.2,
                  marks: Sequence[Sequence[str]] | None = None, mark_colors: Mapping[str, Any] | None = None):
    """Grid of frames (T, H, W, 3), with mask overlays when ``masks`` (T, H, W) is given. Figure.

    ``alpha=0, outline=True`` draws the masks' contours only. ``marks``: per frame, a list of short
    labels (e.g. what is special about the frame: ``["lookalikes", "stopped"]``) drawn as coloured
    tags in the tile's top-left corner; ``mark_colors`` maps a label to its colour (give every sheet
    the same mapping to compare them), other labels take tab10 colours in sorted order.
    """
    frames = [_as_image(f) for f in frames]
    masks = None if masks is None else list(masks)
    n = len(frames)
    if marks is not None and len(marks) != n:
        raise ValueError(f"contact_sheet: {len(marks)} lists of marks for {n} frames; give one list per frame")
    colours = _mark_colours(marks or [], mark_colors)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    h, w = frames[0].shape[:2]
    fig = _new_figure(tile_size * ncols * max(w / h, 0.3), tile_size * nrows + 0.3 * bool(titles))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        tile = frames[i] if masks is None else overlay(frames[i], masks[i], alpha, outline)
        ax.imshow(tile)
        ax.set_title(titles[i] if titles is not None else f"frame {i}", fontsize=8)
        for row, label in enumerate(marks[i] if marks is not None else ()):
            ax.text(0.02, 0.97 - 0.15 * row, label, transform=ax.transAxes, fontsize=7, va="top", ha="left",
                    color="white", bbox={"facecolor": colours[label], "edgecolor": "none", "pad": 1.5, "alpha": 0.85})
    fig.tight_layout()
    return fig


def _mark_colours(marks: Sequence[Sequence[str]], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """A colour for every label of ``marks``: ``given`` first, then tab10 in sorted order."""
    import matplotlib

    colours = dict(given or {})
    cycle = matplotlib.colormaps["tab10"].colors
    missing = sorted({label for frame in marks for label in frame} - set(colours))
    colours.update({label: cycle[k % len(cycle)] for k, label in enumerate(missing)})
    return colours


def heatmap_over(image: Any, heat: Any, ax: Any = None, alpha: float = 0.5, cmap: str = "jet",
                 colorbar: bool = False, vmin: float | None = None, vmax: float | None = None):
    """Show ``heat`` (h, w), bilinearly resized to the image, over ``image``. Returns the Figure.

    ``vmin``/``vmax`` fix the colour scale (give several panels the same one to compare them)."""
    import cv2

    img = _as_image(image)
    heat = _numpy(heat).astype(np.float32).squeeze()
    if heat.ndim != 2:
        raise ValueError(f"heatmap_over: heat must be 2-D (h, w), got shape {heat.shape}")
    if heat.shape != img.shape[:2]:
        heat = cv2.resize(heat, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    if ax is None:
        fig = _new_figure(4, 4 * img.shape[0] / img.shape[1])
        ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img)
    handle = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    if colorbar:
        ax.figure.colorbar(handle, ax=ax, fraction=0.046)
    ax.axis("off")
    return ax.figure


# ------------------------------------------------------------------ attention explorer
def _grid_shape(n: int, image_shape: tuple[int, int]) -> tuple[int, int]:
    """Feature grid (h, w) with h * w = n and the image's aspect ratio."""
    h_img, w_img = image_shape
    h = max(1, int(round(np.sqrt(n * h_img / w_img))))
    for cand in sorted(range(1, n + 1), key=lambda c: abs(c - h)):
        if n % cand == 0:
            return cand, n // cand
    return 1, n


def _attention_lookup(attention: Any, query_shape: tuple[int, int], target_shape: tuple[int, int],
                      query_grid: tuple[int, int] | None, target_grid: tuple[int, int] | None
                      ) -> Callable[[int, int], np.ndarray]:
    """Turn a callable or an (Nq, Nk) matrix into ``heat(y, x) -> (h, w)`` for image pixel (y, x)."""
    if callable(attention):
        return lambda y, x: _numpy(attention(y, x))
    matrix = _numpy(attention).squeeze()
    if matrix.ndim != 2:
        raise ValueError(f"query_attention: attention must be (Nq, Nk) or a function (y, x) -> heat, got {matrix.shape}")
    qh, qw = query_grid or _grid_shape(matrix.shape[0], query_shape)
    th, tw = target_grid or _grid_shape(matrix.shape[1], target_shape)
    if qh * qw != matrix.shape[0] or th * tw != matrix.shape[1]:
        raise ValueError(f"query_attention: grids {qh}x{qw} / {th}x{tw} do not match attention {matrix.shape}")

    def lookup(y: int, x: int) -> np.ndarray:
        row = int(np.clip(y * qh // query_shape[0], 0, qh - 1)) * qw + int(np.clip(x * qw // query_shape[1], 0, qw - 1))
        return matrix[row].reshape(th, tw)

    return lookup


def _draw_query(fig, query: np.ndarray, target: np.ndarray, lookup, points: Sequence[tuple[int, int]]) -> None:
    axes = fig.subplots(len(points), 2, squeeze=False)
    for (y, x), (ax_q, ax_t) in zip(points, axes):
        ax_q.imshow(query)
        ax_q.plot([x], [y], marker="+", color="white", markersize=14, mew=3)
        ax_q.plot([x], [y], marker="+", color="red", markersize=12, mew=1.5)
        ax_q.set_title(f"query (y={y}, x={x})", fontsize=9)
        ax_q.axis("off")
        heatmap_over(target, lookup(y, x), ax=ax_t)
        ax_t.set_title("attention on target", fontsize=9)
    fig.tight_layout()


def query_attention(query_image: Any, target_image: Any, attention_fn_or_matrix: Any,
                    points: Sequence[tuple[int, int]] = ((0, 0),), interactive: bool | None = False,
                    query_grid: tuple[int, int] | None = None, target_grid: tuple[int, int] | None = None):
    """Pick a query pixel, see its attention/similarity over another frame.

    attention_fn_or_matrix: ``fn(y, x) -> heat (h, w)`` for an image pixel, or a matrix (Nq, Nk)
    over feature grids (``query_grid`` / ``target_grid``, inferred from the image aspect ratio when
    omitted; a batch axis of 1 is squeezed). points: ``[(y, x), ...]`` in query-image pixels.
    Returns a static Figure (one row per point: marker on the query, heatmap on the target) or,
    with ``interactive=True`` and ipywidgets installed, a widget with y/x sliders.
    """
    query, target = _as_image(query_image), _as_image(target_image)
    lookup = _attention_lookup(attention_fn_or_matrix, query.shape[:2], target.shape[:2], query_grid, target_grid)
    points = [tuple(int(v) for v in p) for p in points]
    width = 6.5
    row_height = width / 2 * max(query.shape[0] / query.shape[1], target.shape[0] / target.shape[1]) + 0.4
    if not (is_interactive(interactive) and _has_ipywidgets()):
        fig = _new_figure(width, row_height * len(points))
        _draw_query(fig, query, target, lookup, points)
        return fig
    import ipywidgets as widgets

    y0, x0 = points[0]
    y_slider = widgets.IntSlider(value=y0, min=0, max=query.shape[0] - 1, description="y")
    x_slider = widgets.IntSlider(value=x0, min=0, max=query.shape[1] - 1, description="x")
    output = widgets.Output()

    def redraw(*_: Any) -> None:
        from IPython.display import display

        fig = _new_figure(width, row_height)
        _draw_query(fig, query, target, lookup, [(y_slider.value, x_slider.value)])
        output.clear_output(wait=True)
        with output:
            display(fig)

    y_slider.observe(redraw, names="value")
    x_slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([y_slider, x_slider]), output])


# ------------------------------------------------------------------ scrubber
def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _png(image: np.ndarray) -> bytes:
    import cv2

    _, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    return buf.tobytes()


def scrubber(frames: Any, masks: Any = None, interactive: bool | None = None, fps: int = 8,
             alpha: float = 0.5, max_static: int = 12):
    """Browse a video: ipywidgets Play + frame slider when interactive, else a static contact sheet.

    ``interactive=None`` asks :func:`voslab.jupyter.is_interactive` (False in scripts, CI and
    papermill). The static sheet shows at most ``max_static`` evenly spaced frames.
    """
    frames = [_as_image(f) for f in frames]
    masks = None if masks is None else list(masks)
    tiles = frames if masks is None else [overlay(f, m, alpha) for f, m in zip(frames, masks)]
    if not (is_interactive(interactive) and _has_ipywidgets()):
        keep = np.unique(np.linspace(0, len(frames) - 1, min(max_static, len(frames))).round().astype(int))
        return contact_sheet([tiles[i] for i in keep], ncols=min(6, len(keep)), titles=[f"frame {i}" for i in keep])
    import ipywidgets as widgets

    play = widgets.Play(value=0, min=0, max=len(tiles) - 1, interval=int(1000 / fps), description="Play")
    slider = widgets.IntSlider(value=0, min=0, max=len(tiles) - 1, description="frame")
    widgets.jslink((play, "value"), (slider, "value"))
    image = widgets.Image(value=_png(tiles[0]), format="png", width=min(640, tiles[0].shape[1]))

    def show(change: Any) -> None:
        image.value = _png(tiles[change["new"]])

    slider.observe(show, names="value")
    return widgets.VBox([widgets.HBox([play, slider]), image])


# ------------------------------------------------------------------ comparisons and curves
def _frame_j(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame J, averaged over the GT object ids (binary if the GT is {0, 1}). (T,)"""
    from voslab.metrics import jaccard

    ids = [k for k in np.unique(gt) if k not in (0, VOID_LABEL)] or [1]
    return np.mean([jaccard(gt == k, pred == k) for k in ids], axis=0)


def compare(frames: Any, pred: Any, gt: Any, max_frames: int = 6, alpha: float = 0.5, tile_size: float = 2.4):
    """Rows of frame | prediction | ground truth, with the per-frame J in the titles. Figure."""
    frames = np.stack([_as_image(f) for f in frames])
    pred, gt = np.stack([_as_ids(m) for m in pred]), np.stack([_as_ids(m) for m in gt])
    if not (len(frames) == len(pred) == len(gt)):
        raise ValueError(f"compare: {len(frames)} frames, {len(pred)} predictions, {len(gt)} GT masks; give one each")
    j = _frame_j(pred, gt)
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    h, w = frames.shape[1:3]
    fig = _new_figure(3 * tile_size * w / h, tile_size * len(keep) + 0.3)
    axes = fig.subplots(len(keep), 3, squeeze=False)
    for row, t in zip(axes, keep):
        for ax, tile, title in zip(
            row,
            (frames[t], overlay(frames[t], pred[t], alpha, outline=True), overlay(frames[t], gt[t], alpha, outline=True)),
            (f"frame {t}", f"prediction  J={j[t]:.3f}", "ground truth"),
        ):
            ax.imshow(tile)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"mean J = {np.mean(j):.3f} over {len(j)} frames", fontsize=10)
    fig.tight_layout()
    return fig


def _smooth(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard-style), NaNs kept out."""
    out, avg, weight = np.empty_like(values), 0.0, 0.0
    for i, v in enumerate(values):  # a scalar loop over a short history, not a hot path
        if np.isfinite(v):
            avg = smoothing * avg + (1 - smoothing) * v
            weight = smoothing * weight + (1 - smoothing)
        out[i] = avg / weight if weight > 0 else np.nan
    return out


def plot_curves(history: Any, log: bool = False, smoothing: float = 0.0, keys: Sequence[str] | None = None,
                title: str | None = None):
    """Training curves from ``{"loss": [...], ...}`` (or an object with ``as_dict()``). Figure.

    log: log-scale y axis. smoothing in [0, 1): EMA weight; the raw curve stays visible, faint.
    Curves with NaN gaps (``val_*`` of ``fit(validate=...)``) are drawn through their recorded points.
    """
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    if not isinstance(history, Mapping):
        raise TypeError(f"plot_curves: history must be a dict of lists (or have as_dict()), got {type(history)}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"plot_curves: smoothing must be in [0, 1), got {smoothing}")
    series = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()
              if (keys is None or k in keys) and np.ndim(v) == 1 and len(v) > 0}
    if not series:
        raise ValueError(f"plot_curves: no curve to plot in keys {list(history)}")
    fig = _new_figure(6, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, values) in enumerate(series.items()):
        colour = f"C{i}"
        steps = np.arange(len(values))
        finite = np.isfinite(values)
        if not finite.all():  # a curve recorded now and then (e.g. val_* every validate_every steps)
            ax.plot(steps[finite], values[finite], "o-", ms=3, color=colour, label=name)
        elif smoothing > 0:
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=1)
            ax.plot(steps, _smooth(values, smoothing), color=colour, label=f"{name} (EMA {smoothing})")
        else:
            ax.plot(steps, values, color=colour, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ video
def write_overlay_video(path: str | Path, frames: Any, masks: Any = None, fps: int = 12, alpha: float = 0.5,
                        outline: bool = True) -> Path:
    """Write frames (with mask overlays) as an .mp4 (imageio-ffmpeg, H.264) or a .gif. Returns the path.
    For long videos use :class:`OverlayVideoWriter`, which takes one frame at a time."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [_as_image(f) for f in frames]
    masks = None if masks is None else list(masks)
    tiles = frames if masks is None else [overlay(f, m, alpha, outline) for f, m in zip(frames, masks)]
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, tiles, duration=1000 / fps, loop=0)
        return path
    with OverlayVideoWriter(path, fps=fps) as writer:
        for tile in tiles:
            writer.append(tile)
    return path


class OverlayVideoWriter:
    """Streaming .mp4 (imageio-ffmpeg, H.264) or .gif writer: ``append(frame, mask=None)`` one frame at a time,
    so memory does not grow with the video's length. Use as a context manager (closes the file).

        >>> with OverlayVideoWriter("out.mp4", fps=24) as w:
        ...     for frame, mask in zip(frames, masks):
        ...         w.append(frame, mask)
    """

    def __init__(self, path: str | Path, fps: float = 12, alpha: float = 0.5, outline: bool = True):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.alpha, self.outline = alpha, outline
        if self.path.suffix.lower() == ".gif":
            self._writer = imageio.get_writer(self.path, mode="I", duration=1000 / fps, loop=0)
        else:
            self._writer = imageio.get_writer(self.path, fps=fps, codec="libx264", macro_block_size=1,
                                              format="FFMPEG", ffmpeg_log_level="error")

    def append(self, frame: Any, mask: Any = None) -> None:
        tile = _as_image(frame) if mask is None else overlay(frame, mask, self.alpha, self.outline)
        h, w = tile.shape[:2]
        pad = ((0, h % 2), (0, w % 2), (0, 0))  # H.264 (yuv420p) needs even sizes
        self._writer.append_data(np.pad(tile, pad, mode="edge"))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "OverlayVideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
