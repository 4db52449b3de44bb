"""Video I/O: write a tiny H.264 mp4, stream it back with decord, turn it into a DAVIS sequence."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voslab.data.davis import DAVIS
from voslab.data.video import VideoReader, video_to_sequence, write_video
from voslab.errors import VOSDataError

H, W, T = 48, 64, 14


def make_frames(n: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Flat grey level per frame plus a bright square moving right: uint8 (n, h, w, 3)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t] = 15 * t
        frames[t, 16:32, 2 + 3 * t:18 + 3 * t] = 250
    return frames


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, iter(make_frames()), fps=10, quality=9)  # a generator: streamed, not a list
    return path


def test_stream_back_matches_written_content(mp4: Path) -> None:
    reader = VideoReader(mp4)
    assert len(reader) == T and reader.fps == pytest.approx(10) and reader.size == (H, W)
    expected = make_frames().astype(int)
    decoded = np.concatenate(list(reader.iter_chunks(4)))  # (T, H, W, 3)
    assert decoded.shape == (T, H, W, 3)
    assert np.abs(decoded.astype(int) - expected).mean() < 4  # lossy codec, content preserved
    # the moving square is found where it was drawn, in every frame
    square_col = (decoded[:, 24, :, :].mean(-1) > 200).argmax(axis=1)  # (T,) first bright column
    np.testing.assert_allclose(square_col, 2 + 3 * np.arange(T), atol=1)
    np.testing.assert_array_equal(reader.read(5), decoded[5])
    np.testing.assert_array_equal(reader.read(-1), decoded[-1])
    np.testing.assert_array_equal(np.stack(list(reader)), decoded)


def test_iter_chunks_never_decodes_more_than_a_chunk(mp4: Path) -> None:
    reader = VideoReader(mp4)
    requested: list[int] = []
    real = reader._reader

    class Spy:
        def __len__(self) -> int:
            return len(real)

        def get_batch(self, indices):
            requested.append(len(indices))
            return real.get_batch(indices)

    reader._reader = Spy()
    chunks = list(reader.iter_chunks(5, every=2))
    assert [len(c) for c in chunks] == [5, 2] and max(requested) <= 5
    assert sum(requested) == len(range(0, T, 2))


def test_resize_while_decoding(mp4: Path) -> None:
    reader = VideoReader(mp4, size=(24, 32))
    assert reader.read(0).shape == (24, 32, 3) and reader.size == (24, 32)


def test_video_to_sequence_goes_through_davis_reader(mp4: Path, tmp_path: Path) -> None:
    seq = video_to_sequence(mp4, tmp_path / "own", "clip", every=3)
    assert len(seq) == len(range(0, T, 3)) and seq.mask(0) is None
    again = DAVIS(tmp_path / "own", split=["clip"])["clip"]
    assert len(again) == len(seq) and again.size == (H, W)
    expected = make_frames()[::3].astype(int)
    assert np.abs(again.frames().astype(int) - expected).mean() < 5
    with pytest.raises(VOSDataError, match="already holds frames"):
        video_to_sequence(mp4, tmp_path / "own", "clip")


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    path = write_video(tmp_path / "odd.mp4", make_frames(3, 31, 45), fps=5)
    reader = VideoReader(path)
    assert len(reader) == 3 and reader.size == (32, 46)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such video"):
        VideoReader(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    with pytest.raises(VOSDataError, match="bad.mp4"):
        VideoReader(tmp_path / "bad.mp4")
    with pytest.raises(VOSDataError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    with pytest.raises(VOSDataError, match="one size"):
        write_video(tmp_path / "mixed.mp4", [make_frames(1)[0], make_frames(1, 32, 32)[0]])
    with pytest.raises(VOSDataError, match="uint8"):
        write_video(tmp_path / "float.mp4", [np.zeros((8, 8, 3), np.float32)])


def test_one_decoder_thread_by_default(mp4: Path, monkeypatch) -> None:
    """decord's automatic threads decode ahead of a slower consumer and memory grows with the video's
    length (benchmarks/bench_video.py): the streaming reader asks for one thread unless told otherwise."""
    import decord

    seen = []
    real = decord.VideoReader

    def spy(*args, **kwargs):
        seen.append(kwargs.get("num_threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(decord, "VideoReader", spy)
    VideoReader(mp4)
    VideoReader(mp4, num_threads=0)
    assert seen == [1, 0]
