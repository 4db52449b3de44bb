"""voslab.data.io: round trips, the DAVIS palette, .flo format and error messages."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from voslab.data import io
from voslab.errors import VOSDataError
from voslab.utils import shared_data_dir

SHARED = shared_data_dir()


def voc_colour(index: int) -> tuple[int, int, int]:
    """Reference PASCAL VOC colour of one index, written out bit by bit (the devkit's loop)."""
    r = g = b = 0
    c = index
    for j in range(8):
        r |= ((c >> 0) & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
    return r, g, b


def test_palette_matches_voc_colour_map():
    assert io.DAVIS_PALETTE.shape == (256, 3) and io.DAVIS_PALETTE.dtype == np.uint8
    assert [tuple(c) for c in io.DAVIS_PALETTE.tolist()] == [voc_colour(i) for i in range(256)]
    assert tuple(io.DAVIS_PALETTE[1]) == (128, 0, 0) and tuple(io.DAVIS_PALETTE[255]) == (224, 224, 192)


def test_mask_round_trip_is_indexed_png_with_palette(tmp_path):
    ids = np.random.default_rng(0).integers(0, 6, size=(7, 9)).astype(np.uint8)
    ids[0, 0] = 255
    path = tmp_path / "sub" / "00000.png"
    io.write_mask(path, ids)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    np.testing.assert_array_equal(io.read_mask(path), ids)


def test_read_mask_of_rgb_saved_mask_recovers_indices(tmp_path):
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(io.DAVIS_PALETTE[ids]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "rgb.png"), ids)


def test_read_mask_grey_values_as_stored(tmp_path):
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "grey.png"), grey)


def test_image_round_trip_png_exact_jpeg_close(tmp_path):
    rng = np.random.default_rng(1)
    smooth = np.repeat(np.linspace(0, 255, 32)[None, :, None], 24, 0).repeat(3, 2).astype(np.uint8)
    noisy = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    io.write_image(tmp_path / "a.png", noisy)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), noisy)
    io.write_image(tmp_path / "b.jpg", smooth, quality=95)
    back = io.read_image(tmp_path / "b.jpg")
    assert back.shape == (24, 32, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - smooth).mean() < 3


def test_write_image_rejects_float(tmp_path):
    with pytest.raises(VOSDataError, match="uint8"):
        io.write_image(tmp_path / "x.jpg", np.zeros((4, 4, 3), np.float32))


def test_flo_round_trip_and_header(tmp_path):
    flow = np.random.default_rng(2).normal(size=(5, 7, 2)).astype(np.float32)
    path = tmp_path / "f.flo"
    io.write_flo(path, flow)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH"  # the magic 202021.25 as little-endian float32
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [7, 5]  # width, height
    assert len(raw) == 12 + 5 * 7 * 2 * 4
    back = io.read_flo(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, flow)


def test_flo_wrong_magic_names_path(tmp_path):
    path = tmp_path / "bad.flo"
    path.write_bytes(np.array([1.0], "<f4").tobytes() + np.array([1, 1], "<i4").tobytes() + bytes(8))
    with pytest.raises(VOSDataError, match=r"bad\.flo.*magic"):
        io.read_flo(path)


def test_flo_truncated(tmp_path):
    path = tmp_path / "short.flo"
    io.write_flo(path, np.zeros((4, 4, 2), np.float32))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(VOSDataError, match="short.flo"):
        io.read_flo(path)


@pytest.mark.parametrize("reader", [io.read_image, io.read_mask, io.read_flo])
def test_missing_file_names_path(tmp_path, reader):
    with pytest.raises(FileNotFoundError, match="nothere"):
        reader(tmp_path / "nothere.xyz")


@pytest.mark.parametrize("reader", [io.read_image, io.read_mask])
def test_corrupt_image_names_path(tmp_path, reader):
    path = tmp_path / "broken.jpg"
    io.write_image(path, np.full((16, 16, 3), 128, np.uint8))
    path.write_bytes(b"not an image at all" + path.read_bytes()[40:])
    with pytest.raises(VOSDataError, match="broken.jpg"):
        reader(path)


def test_reads_real_davis_mask_when_present():
    folder = SHARED / "davis2016-480p-sample" / "Annotations" / "480p"
    files = sorted(folder.glob("*/*.png")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"shared DAVIS sample not found under {folder}")
    mask = io.read_mask(files[0])
    assert mask.ndim == 2 and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1, 255}


def test_jpeg_chroma_subsampling_option(tmp_path):
    colourful = np.random.default_rng(3).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    io.write_image(tmp_path / "full.jpg", colourful, subsampling="4:4:4")
    io.write_image(tmp_path / "half.jpg", colourful)
    full = np.abs(io.read_image(tmp_path / "full.jpg").astype(int) - colourful).mean()
    half = np.abs(io.read_image(tmp_path / "half.jpg").astype(int) - colourful).mean()
    assert full < half
