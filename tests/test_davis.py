"""DAVIS reader and Sequence: official 2016/2017 layouts, flat layout, errors, results writer, real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from voslab.data.davis import DAVIS, parse_imageset, write_masks, write_sequence
from voslab.data.io import read_flo, read_mask, write_flo, write_image, write_mask
from voslab.data.sequence import Sequence, first_frame_objects
from voslab.errors import VOSDataError
from voslab.utils import shared_data_dir

SHARED = shared_data_dir()
H, W = 24, 32


def smooth_frame(t: int) -> np.ndarray:
    """A smooth image (JPEG-friendly) that differs per frame: uint8 (H, W, 3)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(x * 6 + t * 10) % 256, (y * 8) % 256, np.full_like(x, 40 * t % 256)], -1).astype(np.uint8)


def box_mask(t: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4:12, 2 + t:10 + t] = value
    return mask


@pytest.fixture
def davis2016(tmp_path: Path) -> Path:
    """Official DAVIS-2016 layout: 480p folders, grey {0, 255} masks, frame-list ImageSets."""
    root = tmp_path / "DAVIS"
    for seq, n in (("bear", 4), ("cow", 3)):
        for t in range(n):
            write_image(root / "JPEGImages/480p" / seq / f"{t:05d}.jpg", smooth_frame(t))
            (root / "Annotations/480p" / seq).mkdir(parents=True, exist_ok=True)
            Image.fromarray(box_mask(t), mode="L").save(root / "Annotations/480p" / seq / f"{t:05d}.png")
    sets = root / "ImageSets/480p"
    sets.mkdir(parents=True)
    line = "/JPEGImages/480p/{s}/{t:05d}.jpg /Annotations/480p/{s}/{t:05d}.png\n"
    (sets / "train.txt").write_text("".join(line.format(s="bear", t=t) for t in range(4)))
    (sets / "val.txt").write_text("".join(line.format(s="cow", t=t) for t in range(3)))
    return root


def ids_2017(t: int) -> np.ndarray:
    """Object 1 everywhere, object 2 from frame 2 on, a void band on every frame."""
    ids = np.zeros((H, W), np.uint8)
    ids[2:8, 2:8] = 1
    if t >= 2:
        ids[14:20, 20:28] = 2
    ids[:, -2:] = 255
    return ids


@pytest.fixture
def davis2017(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS2017"
    for t in range(4):
        write_image(root / "JPEGImages/480p/dogs" / f"{t:05d}.jpg", smooth_frame(t))
        write_mask(root / "Annotations/480p/dogs" / f"{t:05d}.png", ids_2017(t))
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/train.txt").write_text("dogs\n")
    return root


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """Flat layout (synthetic / shared 240p style) with stored flow for one sequence."""
    root = tmp_path / "flat"
    for seq, n in (("a", 3), ("b", 2), ("c", 1)):
        write_sequence(root, seq, [smooth_frame(t) for t in range(n)], {t: box_mask(t, 1) for t in range(n)})
    flow = np.random.default_rng(0).normal(size=(H, W, 2)).astype(np.float32)
    for t in range(3):
        write_flo(root / "Flow/forward/a" / f"{t:05d}.flo", flow + t)
    (root / "ImageSets").mkdir()
    (root / "ImageSets/train.txt").write_text("a\nb\n")
    (root / "ImageSets/val.txt").write_text("c\n")
    return root


# ------------------------------------------------------------------ layouts
def test_davis2016_official_layout(davis2016: Path) -> None:
    train, val = DAVIS(davis2016, "train"), DAVIS(davis2016, "val")
    assert train.names == ["bear"] and val.names == ["cow"] and train.resolution == "480p"
    seq = train["bear"]
    assert train[0] is seq and list(train) == [seq] and "bear" in train and len(seq) == 4
    assert seq.size == (H, W)
    frames, masks = seq.frames(), seq.masks()
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    expected = np.stack([box_mask(t) > 0 for t in range(4)]).astype(np.uint8)
    np.testing.assert_array_equal(masks, expected)  # binarised {0, 255} -> {0, 1}
    assert np.abs(frames.astype(int) - np.stack([smooth_frame(t) for t in range(4)])).mean() < 3  # JPEG
    assert seq.object_ids == [1]


def test_parse_imageset_both_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
                                    "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
                                    "/JPEGImages/480p/boat/00000.jpg /Annotations/480p/boat/00000.png\n")
    (tmp_path / "b.txt").write_text("dogs\n\ncats\n")
    assert parse_imageset(tmp_path / "a.txt") == ["bear", "boat"]
    assert parse_imageset(tmp_path / "b.txt") == ["dogs", "cats"]


def test_davis2017_palette_ids_late_object_and_void(davis2017: Path) -> None:
    seq = DAVIS(davis2017, "train", year=2017)["dogs"]
    np.testing.assert_array_equal(seq.masks(), np.stack([ids_2017(t) for t in range(4)]))
    assert seq.object_ids == [1, 2]
    assert seq.object_first_frames == {1: 0, 2: 2}
    assert first_frame_objects(seq) == [1]  # object 2 enters late
    np.testing.assert_array_equal(seq.object_mask(3, 2), ids_2017(3) == 2)
    with pytest.raises(VOSDataError, match=r"available splits: \['2017/train'\]"):
        DAVIS(davis2017, "train", year=2016)  # DAVIS-2016 splits live in ImageSets/2016 or ImageSets/480p
    binary = DAVIS(davis2017, ["dogs"], year=2016)["dogs"].mask(0)
    np.testing.assert_array_equal(binary, (ids_2017(0) > 0).astype(np.uint8))


def test_flat_layout_splits_and_flow(flat: Path) -> None:
    assert DAVIS(flat, "train").names == ["a", "b"] and DAVIS(flat, "train").resolution == ""
    assert DAVIS(flat, "val").names == ["c"]
    assert DAVIS(flat, None).names == ["a", "b", "c"]
    assert DAVIS(flat, ["c", "a"]).names == ["c", "a"]
    seq = DAVIS(flat, "train")["a"]
    assert seq.has_flow
    np.testing.assert_array_equal(seq.flow(2, "forward"), read_flo(flat / "Flow/forward/a/00002.flo"))
    with pytest.raises(FileNotFoundError, match="video_flow"):
        seq.flow(0, "backward")
    with pytest.raises(ValueError, match="direction"):
        seq.flow(0, "sideways")


def test_synthetic_style_annotation_folder(flat: Path) -> None:
    for t in range(3):
        write_mask(flat / "Annotations_binary/a" / f"{t:05d}.png", box_mask(t, 255))
    seq = DAVIS(flat, ["a"], annotations="Annotations_binary")[0]
    assert set(np.unique(seq.masks())) == {0, 1}
    with pytest.raises(FileNotFoundError, match="Annotations_nope"):
        DAVIS(flat, "train", annotations="Annotations_nope")


def test_no_imagesets_uses_every_folder_and_missing_split_raises(flat: Path) -> None:
    with pytest.raises(VOSDataError, match=r"split 'test' not found.*available splits: \['train', 'val'\]"):
        DAVIS(flat, "test")
    for f in (flat / "ImageSets").iterdir():
        f.unlink()
    (flat / "ImageSets").rmdir()
    assert DAVIS(flat, "val").names == ["a", "b", "c"]  # no ImageSets: the dataset defines no split


def test_sparse_annotations(flat: Path) -> None:
    (flat / "Annotations/a/00001.png").unlink()
    seq = DAVIS(flat, "train")["a"]
    assert seq.mask(1) is None and seq.annotated_indices == [0, 2]
    with pytest.raises(VOSDataError, match="frame 1 .*has no annotation"):
        seq.masks()
    filled = seq.masks(fill=255)
    assert (filled[1] == 255).all() and (filled[0] == box_mask(0, 1)).all()


def test_unlabelled_dataset_has_no_masks(flat: Path) -> None:
    import shutil

    shutil.rmtree(flat / "Annotations")
    seq = DAVIS(flat, "train")[0]
    assert seq.mask(0) is None and seq.object_ids == []


# ------------------------------------------------------------------ errors
def test_missing_root_suggests_download_script(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download_davis.py"):
        DAVIS(tmp_path / "nowhere")


def test_root_one_level_too_high_is_pointed_out(davis2016: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass root="):
        DAVIS(davis2016.parent)


def test_bad_year_and_resolution(davis2016: Path) -> None:
    with pytest.raises(ValueError, match="year"):
        DAVIS(davis2016, year=2018)
    with pytest.raises(VOSDataError, match="Full-Resolution"):
        DAVIS(davis2016, resolution="Full-Resolution")


def test_split_listing_missing_folder(flat: Path) -> None:
    (flat / "ImageSets/train.txt").write_text("a\nghost\n")
    with pytest.raises(VOSDataError, match="ghost"):
        DAVIS(flat, "train")


def test_mask_frame_size_mismatch_names_file(flat: Path) -> None:
    write_mask(flat / "Annotations/a/00001.png", np.zeros((H + 2, W), np.uint8))
    seq = DAVIS(flat, "train")["a"]
    with pytest.raises(VOSDataError, match=r"Annotations/a/00001.png.*same resolution"):
        seq.mask(1)


def test_corrupt_frame_names_file(flat: Path) -> None:
    (flat / "JPEGImages/a/00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    seq = DAVIS(flat, "train")["a"]
    seq.frame(0)
    with pytest.raises(VOSDataError, match=r"JPEGImages/a/00001.jpg"):
        seq.frame(1)


def test_frame_size_change_inside_video(flat: Path) -> None:
    write_image(flat / "JPEGImages/a/00002.jpg", np.zeros((H, W + 4, 3), np.uint8))
    with pytest.raises(VOSDataError, match="one size"):
        DAVIS(flat, "train")["a"].frames()


def test_unknown_object_id(davis2017: Path) -> None:
    seq = DAVIS(davis2017, "train", year=2017)[0]
    with pytest.raises(VOSDataError, match=r"unknown object id 7.*\[1, 2\]"):
        seq.object_mask(0, 7)


def test_one_frame_video_and_empty_first_mask(flat: Path) -> None:
    ds = DAVIS(flat, None)
    ds["c"].require_frames(1)
    with pytest.raises(VOSDataError, match="at least 2"):
        ds["c"].require_frames(2)
    ds["a"].require_frames(2)
    write_mask(flat / "Annotations/b/00000.png", np.zeros((H, W), np.uint8))
    with pytest.raises(VOSDataError, match="first-frame mask is empty"):
        first_frame_objects(DAVIS(flat, None)["b"])
    (flat / "Annotations/b/00000.png").unlink()
    with pytest.raises(VOSDataError, match="has no annotation"):
        first_frame_objects(DAVIS(flat, None)["b"])


def test_index_errors(flat: Path) -> None:
    ds = DAVIS(flat, "train")
    with pytest.raises(KeyError, match="available"):
        ds["zzz"]
    with pytest.raises(IndexError):
        ds["a"].frame(3)
    assert ds["a"].frame(-1).shape == (H, W, 3)


def test_binary_masks_read_as_2017_warn(davis2016: Path) -> None:
    with pytest.warns(UserWarning, match="year=2016"):
        assert DAVIS(davis2016, "train", year=2017)[0].object_ids == []


# ------------------------------------------------------------------ writing results
def test_write_results_round_trip(davis2017: Path, tmp_path: Path) -> None:
    ds = DAVIS(davis2017, "train", year=2017)
    pred = np.stack([ids_2017(t) for t in range(4)])
    folder = ds.write_results(tmp_path / "results" / "method", "dogs", pred)
    assert folder == tmp_path / "results/method/dogs"
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:05d}.png" for t in range(4)]
    assert Image.open(folder / "00003.png").mode == "P"
    np.testing.assert_array_equal(np.stack([read_mask(folder / f"{t:05d}.png") for t in range(4)]), pred)
    with pytest.raises(VOSDataError, match=r"\(T, H, W\)"):
        ds.write_results(tmp_path / "r2", "dogs", pred[:, :-1])


def test_write_masks_from_iterable(tmp_path: Path) -> None:
    masks = [box_mask(t, t + 1) for t in range(3)]
    write_masks(tmp_path / "out", iter(masks))
    np.testing.assert_array_equal(read_mask(tmp_path / "out/00002.png"), masks[2])


def test_sequence_from_paths_validates_lengths(tmp_path: Path) -> None:
    with pytest.raises(VOSDataError, match="one entry"):
        Sequence("x", [tmp_path / "a.jpg"], [None, None])
    with pytest.raises(VOSDataError, match="no frames"):
        Sequence("x", [])


# ------------------------------------------------------------------ real data (skipped when absent)
@pytest.mark.skipif(not (SHARED / "davis2016-train-240p").is_dir(), reason="shared DAVIS data absent")
def test_real_davis2016_train_240p() -> None:
    ds = DAVIS(SHARED / "davis2016-train-240p", "train")
    assert len(ds) == 30
    bear = ds["bear"]
    assert len(bear) == 82 and bear.size == (240, 427)
    masks = bear.masks()
    assert masks.shape == (82, 240, 427) and set(np.unique(masks)) == {0, 1}
    assert bear.frame(81).shape == (240, 427, 3)


@pytest.mark.skipif(not (SHARED / "davis2016-480p-sample").is_dir(), reason="shared DAVIS data absent")
def test_real_davis2016_480p_sample() -> None:
    ds = DAVIS(SHARED / "davis2016-480p-sample", "train")
    assert ds.resolution == "480p" and ds.names == ["bear", "boat"]
    for seq in ds:
        masks = seq.masks()
        assert masks.shape == (5, 480, 854) and set(np.unique(masks)) == {0, 1}
        assert masks.mean() > 0.01  # each frame's object is there
