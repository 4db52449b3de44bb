"""voslab.flow: DIS/Farneback on a shifted texture, caching, warping, consistency, colours."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np
import pytest
import torch

from voslab import flow as vflow


def _texture(h=96, w=128, seed=0):
    """Smooth random RGB texture (uint8), band-limited so sub-pixel shifts are well defined."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _shift(image, dx, dy):
    """frame1(p) = frame0(p - d): the content moves by +d, so the forward flow is +d."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method,preset,tol", [("dis", "medium", 0.2), ("dis", "fast", 0.2), ("farneback", "medium", 0.2)])
def test_shifted_texture_flow(method, preset, tol):
    frame0 = _texture()
    frame1 = _shift(frame0, 3.0, -2.0)
    flow = vflow.compute_flow(frame0, frame1, method, preset)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    err = np.abs(np.median(inner, axis=0) - [3.0, -2.0])
    assert err.max() < tol, (method, np.median(inner, axis=0))


def test_compute_flow_errors():
    with pytest.raises(ValueError, match="preset"):
        vflow.compute_flow(_texture(), _texture(), "dis", "slowest")
    with pytest.raises(ValueError, match="farneback"):
        vflow.compute_flow(_texture(), _texture(), "raft")
    with pytest.raises(ValueError, match="size"):
        vflow.compute_flow(_texture(), _texture(64, 64))


def test_warp_reconstructs_shifted_image():
    frame0 = torch.from_numpy(_texture().astype(np.float32) / 255).permute(2, 0, 1)[None]  # (1, 3, H, W)
    frame1 = torch.roll(frame0, shifts=(2, 5), dims=(2, 3))  # content moved by dx=5, dy=2
    backward = torch.zeros(1, 2, 96, 128)
    backward[:, 0], backward[:, 1] = -5.0, -2.0  # frame 1 -> frame 0
    recon = vflow.warp(frame0, backward)  # frame0 sampled at p - d = frame1(p)
    torch.testing.assert_close(recon[..., 2:, 5:], frame1[..., 2:, 5:])
    assert recon[..., :2, :].abs().max() < 1e-5  # sampled outside: zeros padding
    border = vflow.warp(frame0, backward, padding_mode="border")
    torch.testing.assert_close(border[..., 0, 0], frame0[..., 0, 0])
    half = torch.full((1, 2, 96, 128), 0.5)
    expected = (frame0[..., :-1, :-1] + frame0[..., 1:, :-1] + frame0[..., :-1, 1:] + frame0[..., 1:, 1:]) / 4
    torch.testing.assert_close(vflow.warp(frame0, half)[..., :-1, :-1], expected)  # bilinear, align_corners


def test_forward_backward_consistency_marks_out_of_frame():
    fw = torch.zeros(1, 2, 10, 20)
    fw[:, 0] = 4.0
    bw = torch.zeros(1, 2, 10, 20)
    bw[:, 0] = -4.0
    valid = vflow.forward_backward_consistency(fw, bw)
    assert valid.shape == (1, 1, 10, 20)
    assert valid[..., :15].eq(1).all() and valid[..., 16:].eq(0).all()  # pixels that leave the frame
    bad = vflow.forward_backward_consistency(fw, torch.zeros_like(bw))
    assert bad.sum() == 0  # backward flow disagrees everywhere


def _hue(rgb):
    return colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))[0] * 360


def test_flow_to_color_directions():
    flow = np.zeros((1, 5, 2), np.float32)
    flow[0, 0] = (1, 0)  # right
    flow[0, 1] = (0, 1)  # down
    flow[0, 2] = (-1, 0)  # left
    flow[0, 3] = (0, -1)  # up
    colors = vflow.flow_to_color(flow)
    assert colors.dtype == np.uint8 and colors.shape == (1, 5, 3)
    hues = [_hue(c) for c in colors[0, :4]]
    assert hues[0] < 15 or hues[0] > 345  # red
    assert 40 < hues[1] < 70  # yellow/orange
    assert 180 < hues[2] < 215  # cyan/azure
    assert 245 < hues[3] < 290  # blue/violet
    np.testing.assert_array_equal(colors[0, 4], [255, 255, 255])  # no motion = white
    dim = vflow.flow_to_color(flow * 0.5, max_flow=1.0)  # half magnitude: paler
    assert dim[0, 0].min() > colors[0, 0].min()


def _write_sequence(root, name="clip", n=3):
    from voslab.data.sequence import Sequence

    frame0 = _texture(48, 64)
    paths = []
    for i in range(n):
        path = root / "JPEGImages" / name / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _shift(frame0, 2.0 * i, 0)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        paths.append(path)
    return Sequence(name, paths)


def test_video_flow_caches_flo_files(tmp_path, monkeypatch):
    seq = _write_sequence(tmp_path)
    flows = vflow.video_flow(seq, "forward", "dis", preset="fast")
    assert flows.shape == (3, 48, 64, 2)
    assert np.all(flows[-1] == 0)  # the last frame has no next frame
    assert abs(np.median(flows[0, 8:-8, 8:-8, 0]) - 2.0) < 0.3
    folder = tmp_path / "Flow" / "dis-fast" / "forward" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["00000.flo", "00001.flo", "00002.flo"]

    def boom(*args, **kwargs):
        raise AssertionError("should read the cache")

    monkeypatch.setattr(vflow, "compute_flow", boom)
    np.testing.assert_array_equal(vflow.video_flow(seq, "forward", "dis", preset="fast"), flows)
    monkeypatch.undo()
    backward = vflow.video_flow(seq, "backward", "dis", preset="fast", cache=False)
    assert np.all(backward[0] == 0) and abs(np.median(backward[2, 8:-8, 8:-8, 0]) + 2.0) < 0.3
    assert not (tmp_path / "Flow" / "dis-fast" / "backward").exists()
    with pytest.raises(ValueError, match="direction"):
        vflow.video_flow(seq, "sideways")
