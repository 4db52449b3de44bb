"""voslab.viz: returned objects and pixel values, headless (Agg)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from voslab import viz  # noqa: E402
from voslab.data.io import DAVIS_PALETTE  # noqa: E402


def _video(t=4, h=24, w=32):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t, h, w), np.uint8)
    masks[:, 4:12, 4:12] = 1
    masks[:, 14:20, 18:28] = 2
    return frames, masks


def test_overlay_colours_at_mask_pixels():
    image = np.full((10, 12, 3), 100, np.uint8)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 2:5] = 1
    mask[6:9, 6:10] = 2
    mask[0, 0] = 255  # void stays uncoloured
    out = viz.overlay(image, mask, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[3, 3], np.round(0.5 * 100 + 0.5 * DAVIS_PALETTE[1]).astype(np.uint8))
    np.testing.assert_array_equal(out[7, 7], np.round(0.5 * 100 + 0.5 * DAVIS_PALETTE[2]).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[9, 0], [100, 100, 100])
    outlined = viz.overlay(image, mask, alpha=0.5, outline=True)
    np.testing.assert_array_equal(outlined[2, 2], DAVIS_PALETTE[1])  # contour in full colour
    np.testing.assert_array_equal(outlined[3, 3], out[3, 3])  # interior unchanged
    soft = viz.overlay(image.astype(np.float32) / 255, mask.astype(np.float32) * 0.9, alpha=1.0)
    np.testing.assert_array_equal(soft[3, 3], DAVIS_PALETTE[1])  # floats thresholded to {0, 1}
    with pytest.raises(ValueError, match="does not match"):
        viz.overlay(image, mask[:5])


def test_contact_sheet_and_compare_return_figures():
    frames, masks = _video()
    fig = viz.contact_sheet(frames, masks, ncols=3, titles=list("abcd"))
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.images]) == 4
    assert fig.axes[1].get_title() == "b"
    pred = masks.copy()
    pred[1] = 0
    fig = viz.compare(frames, pred, masks)
    assert isinstance(fig, Figure)
    titles = [a.get_title() for a in fig.axes]
    assert "prediction  J=1.000" in titles and "prediction  J=0.000" in titles


def test_contact_sheet_marks_frames():
    frames, masks = _video()
    marks = [[], ["lookalikes"], ["hidden", "stopped"], ["lookalikes"]]
    fig = viz.contact_sheet(frames, masks, alpha=0.0, outline=True, marks=marks, mark_colors={"hidden": "black"})
    tags = [[(t.get_text(), t.get_bbox_patch().get_facecolor()) for t in ax.texts] for ax in fig.axes]
    assert [[text for text, _ in tile] for tile in tags] == marks
    assert tags[1][0][1] == tags[3][0][1] != tags[2][1][1]  # one colour per label, shared by the tiles
    assert tags[2][0][1][:3] == (0.0, 0.0, 0.0)  # the given colour
    with pytest.raises(ValueError, match="one list per frame"):
        viz.contact_sheet(frames, masks, marks=marks[:2])


def test_heatmap_over_resizes_and_uses_given_axes():
    frames, _ = _video()
    fig = viz.heatmap_over(frames[0], np.arange(12.0).reshape(3, 4))
    assert isinstance(fig, Figure)
    assert fig.axes[0].images[-1].get_array().shape == (24, 32)
    other = viz.contact_sheet(frames[:2], ncols=2)
    assert viz.heatmap_over(frames[0], np.ones((24, 32)), ax=other.axes[0]) is other
    shared = viz.heatmap_over(frames[0], np.arange(12.0).reshape(3, 4), vmin=0.0, vmax=100.0)
    assert shared.axes[0].images[-1].get_clim() == (0.0, 100.0)


def test_query_attention_static_matrix_and_function():
    frames, _ = _video()
    attn = np.zeros((12, 12))  # 3x4 query grid, 3x4 target grid
    attn[5, 11] = 1.0  # query cell (1, 1) attends to target cell (2, 3)
    fig = viz.query_attention(frames[0], frames[1], attn, points=[(10, 10), (0, 0)])
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    heat = fig.axes[1].images[-1].get_array()
    assert np.unravel_index(np.argmax(heat), heat.shape)[0] >= 16  # bottom-right of the target
    assert fig.axes[0].lines  # the query marker
    fig = viz.query_attention(frames[0], frames[1], lambda y, x: np.ones((3, 4)) * y, points=[(5, 5)])
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="do not match"):
        viz.query_attention(frames[0], frames[1], attn, points=[(0, 0)], query_grid=(2, 2))


def test_scrubber_static_and_widget():
    frames, masks = _video()
    fig = viz.scrubber(frames, masks, interactive=False)
    assert isinstance(fig, Figure)
    import ipywidgets as widgets

    box = viz.scrubber(frames, masks, interactive=True)
    assert isinstance(box, widgets.VBox)
    play, slider = box.children[0].children
    image = box.children[1]
    first = image.value
    slider.value = 2
    assert image.value != first
    explorer = viz.query_attention(frames[0], frames[1], np.ones((12, 12)), points=[(1, 1)], interactive=True)
    assert isinstance(explorer, widgets.VBox)
    explorer.children[0].children[0].value = 20  # moving the y slider redraws without error


def test_plot_curves_log_and_smoothing():
    history = {"loss": list(np.linspace(2, 0.1, 50)), "lr": [0.1] * 50, "empty": []}
    fig = viz.plot_curves(history, log=True, smoothing=0.9)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 4  # raw + smoothed per curve
    smoothed = ax.lines[1].get_ydata()
    assert smoothed[0] == pytest.approx(2.0) and smoothed[-1] > history["loss"][-1]  # EMA lags
    with pytest.raises(ValueError, match="smoothing"):
        viz.plot_curves(history, smoothing=1.0)


def test_write_overlay_video(tmp_path):
    frames, masks = _video(t=5, h=23, w=31)  # odd sizes get padded for H.264
    path = viz.write_overlay_video(tmp_path / "out" / "clip.mp4", frames, masks, fps=5)
    assert path.is_file() and path.stat().st_size > 0
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    assert reader.count_frames() == 5
    gif = viz.write_overlay_video(tmp_path / "clip.gif", frames, masks)
    assert gif.stat().st_size > 0


def test_plot_curves_draws_sparse_validation_curves_through_their_points():
    val = [np.nan] * 10
    val[4], val[9] = 0.5, 0.3
    fig = viz.plot_curves({"loss": list(np.linspace(1, 0.1, 10)), "val_loss": val})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    xs, ys = lines["val_loss"].get_data()
    assert list(xs) == [4, 9] and list(ys) == [0.5, 0.3]
