"""YouTube-VOS reader on a tiny official-layout fixture: sparse annotations, meta.json, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voslab.data.io import write_image, write_mask
from voslab.data.sequence import first_frame_objects
from voslab.data.youtubevos import YouTubeVOS, meta_from_annotations, read_meta, write_meta
from voslab.errors import VOSDataError

H, W, T = 16, 20, 11  # 11 frames, annotated every 5th: 0, 5, 10


def ids_at(t: int) -> np.ndarray:
    """Object 1 throughout, object 3 (ids need not be contiguous) from frame 5 on."""
    ids = np.zeros((H, W), np.uint8)
    ids[1:6, 1:6] = 1
    if t >= 5:
        ids[8:14, 10:18] = 3
    return ids


@pytest.fixture
def ytvos(tmp_path: Path) -> Path:
    root = tmp_path / "youtube-vos"
    train = root / "train"
    for vid in ("0a1b2c", "ffee99"):
        for t in range(T):
            write_image(train / "JPEGImages" / vid / f"{t:05d}.jpg", np.full((H, W, 3), 10 * t, np.uint8))
        for t in range(0, T, 5):
            write_mask(train / "Annotations" / vid / f"{t:05d}.png", ids_at(t))
    objects = {1: {"category": "cat", "frames": ["00000", "00005", "00010"]},
               3: {"category": "hat", "frames": ["00005", "00010"]}}
    write_meta(train / "meta.json", {"0a1b2c": objects, "ffee99": objects})
    return root


def test_sparse_sequences_with_meta(ytvos: Path) -> None:
    ds = YouTubeVOS(ytvos, "train")
    assert ds.names == ["0a1b2c", "ffee99"] and len(ds) == 2
    seq = ds["0a1b2c"]
    assert len(seq) == T and seq.size == (H, W)
    assert seq.annotated_indices == [0, 5, 10]
    assert seq.mask(3) is None
    np.testing.assert_array_equal(seq.mask(5), ids_at(5))
    assert seq.object_ids == [1, 3] and seq.object_first_frames == {1: 0, 3: 5}
    assert seq.objects_meta[3]["category"] == "hat" and seq.objects_meta[3]["first_frame"] == 5
    np.testing.assert_array_equal(seq.masks(fill=255)[[0, 1]], np.stack([ids_at(0), np.full((H, W), 255)]))
    assert ds.categories()["ffee99"] == {1: "cat", 3: "hat"}
    assert first_frame_objects(seq) == [1]


def test_meta_round_trip_and_from_annotations(ytvos: Path) -> None:
    meta = read_meta(ytvos / "train/meta.json")
    assert meta["0a1b2c"][3] == {"category": "hat", "frames": ["00005", "00010"]}
    built = meta_from_annotations(ytvos / "train", category="cat")
    assert built["0a1b2c"][1]["frames"] == ["00000", "00005", "00010"]
    assert built["0a1b2c"][3]["frames"] == ["00005", "00010"]


def test_valid_split_first_appearance_only(tmp_path: Path) -> None:
    """valid: each object is annotated only on the frame where it first appears."""
    valid = tmp_path / "valid"
    for t in range(T):
        write_image(valid / "JPEGImages/v1" / f"{t:05d}.jpg", np.zeros((H, W, 3), np.uint8))
    first = np.where(ids_at(0) == 1, 1, 0).astype(np.uint8)
    late = np.where(ids_at(5) == 3, 3, 0).astype(np.uint8)
    write_mask(valid / "Annotations/v1/00000.png", first)
    write_mask(valid / "Annotations/v1/00005.png", late)
    write_meta(valid / "meta.json", {"v1": {1: {"category": "cat", "frames": [f"{t:05d}" for t in range(T)]},
                                            3: {"category": "hat", "frames": ["00005", "00006"]}}})
    seq = YouTubeVOS(tmp_path, "valid")["v1"]
    assert seq.annotated_indices == [0, 5] and seq.object_first_frames == {1: 0, 3: 5}


def test_split_folder_given_directly_and_without_meta(ytvos: Path) -> None:
    (ytvos / "train/meta.json").unlink()
    ds = YouTubeVOS(ytvos / "train", "train")
    assert ds["ffee99"].object_first_frames == {1: 0, 3: 5}  # read from the masks instead


def test_errors(ytvos: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download_youtubevos.py"):
        YouTubeVOS(tmp_path / "missing")
    with pytest.raises(VOSDataError, match="not found"):
        YouTubeVOS(ytvos, videos=["nope"])
    with pytest.raises(VOSDataError, match="unknown object id 2"):
        YouTubeVOS(ytvos)["0a1b2c"].object_mask(0, 2)
    meta = read_meta(ytvos / "train/meta.json")
    meta["gone"] = {}
    write_meta(ytvos / "train/meta.json", meta)
    with pytest.raises(VOSDataError, match="incompletely extracted"):
        YouTubeVOS(ytvos)
    (ytvos / "train/meta.json").write_text('{"vids": {}}')
    with pytest.raises(VOSDataError, match="meta.json"):
        YouTubeVOS(ytvos)
