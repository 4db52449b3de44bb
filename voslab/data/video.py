"""Video files: stream frames with decord, write H.264 with imageio-ffmpeg, turn a video into a
DAVIS-layout sequence so a user's own clip goes through the same reader as DAVIS.

Long videos are never loaded whole: `VideoReader.iter_chunks` decodes ``n`` frames at a time with
``get_batch`` and `write_video` pipes frames to ffmpeg one by one.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from voslab.data.davis import write_sequence
from voslab.data.sequence import Sequence
from voslab.errors import VOSDataError

__all__ = ["VideoReader", "write_video", "video_to_sequence"]


def _decord():
    try:
        import decord
    except ImportError as err:  # optional native dependency
        raise ImportError("reading videos needs decord: `pip install decord` (or extract frames with ffmpeg "
                          "into JPEGImages/<name>/ and use voslab.data.DAVIS)") from err
    return decord


class VideoReader:
    """Random access and chunked streaming over a video file (decord, CPU).

    Args:
        path: video file (mp4, avi, mov, ...).
        size: optional ``(H, W)`` to resize to while decoding.
        num_threads: decoder threads. 1 by default: with more (decord's 0 = automatic) the decoder
            runs ahead of a slower consumer and the process's memory grows with the video's length
            (2000 frames of 480p decoded and written as JPEGs: peak 1.1 GB with automatic threads,
            0.4-0.7 GB with one, at the same speed; ``benchmarks/bench_video.py``).
    """

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None, num_threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file (check the path)")
        decord = _decord()
        height, width = size if size is not None else (-1, -1)
        try:
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), width=width, height=height,
                                              num_threads=num_threads)
        except Exception as err:  # decord raises DECORDError for unreadable containers
            raise VOSDataError(f"{self.path}: cannot open the video ({err}); the file is corrupt or the codec "
                               "is unsupported, re-encode it with `ffmpeg -i in -c:v libx264 out.mp4`") from err
        if len(self._reader) == 0:
            raise VOSDataError(f"{self.path}: the video has no frames")

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def fps(self) -> float:
        return float(self._reader.get_avg_fps())

    @cached_property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the decoded frames."""
        return tuple(self.read(0).shape[:2])

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``uint8 (H, W, 3)`` RGB."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for {self.path} with {n} frames")
        return self._reader[int(i) % n].asnumpy()

    def read_batch(self, indices: Iterable[int]) -> np.ndarray:
        """Frames at ``indices``: ``uint8 (N, H, W, 3)``."""
        return self._reader.get_batch(list(indices)).asnumpy()

    def iter_chunks(self, n: int = 32, every: int = 1) -> Iterator[np.ndarray]:
        """Yield ``uint8 (<=n, H, W, 3)`` chunks of every ``every``-th frame, in order."""
        if n < 1 or every < 1:
            raise ValueError(f"iter_chunks needs n >= 1 and every >= 1, got n={n}, every={every}")
        indices = range(0, len(self), every)
        for start in range(0, len(indices), n):
            yield self.read_batch(indices[start:start + n])

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.iter_chunks():
            yield from chunk

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, frames={len(self)}, fps={self.fps:.2f})"


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 12, quality: int = 7) -> Path:
    """Stream ``uint8 (H, W, 3)`` frames into an H.264 (libx264, yuv420p) video.

    Odd heights/widths are padded by one replicated row/column (yuv420p needs even sizes).
    """
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer, shape, count = None, None, 0
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise VOSDataError(f"write_video({path}): frame {count} is {frame.dtype} {frame.shape}; expected "
                                   "uint8 (H, W, 3)")
            frame = _pad_to_even(frame)
            if writer is None:
                shape = frame.shape
                writer = imageio_ffmpeg.write_frames(str(path), (shape[1], shape[0]), fps=fps, codec="libx264",
                                                     pix_fmt_out="yuv420p", quality=quality, macro_block_size=1)
                writer.send(None)  # start ffmpeg
            elif frame.shape != shape:
                raise VOSDataError(f"write_video({path}): frame {count} is {frame.shape[:2]}, the first was "
                                   f"{shape[:2]}; resize all frames to one size")
            writer.send(np.ascontiguousarray(frame))
            count += 1
    finally:
        if writer is not None:
            writer.close()
    if count == 0:
        raise VOSDataError(f"write_video({path}): no frames given")
    return path


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def video_to_sequence(path: str | Path, out_root: str | Path, name: str | None = None, every: int = 1,
                      size: tuple[int, int] | None = None, quality: int = 95, chunk: int = 32) -> Sequence:
    """Extract every ``every``-th frame of a video into ``out_root/JPEGImages/<name>/00000.jpg ...``
    (DAVIS flat layout, no annotations), streaming ``chunk`` frames at a time; returns the `Sequence`.

    Read it later with ``DAVIS(out_root, split=[name])``.
    """
    reader = VideoReader(path, size=size)
    frames = (frame for block in reader.iter_chunks(chunk, every=every) for frame in block)
    return write_sequence(out_root, name or Path(path).stem, frames, quality=quality)
