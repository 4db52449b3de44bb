"""One video of a dataset (`Sequence`) and a named list of them (`SequenceList`).

A `Sequence` holds file paths only and reads on demand, so building a dataset of thousands of videos
costs nothing until a frame is asked for. It serves DAVIS, YouTube-VOS, converted FBMS/SegTrack-v2,
voslab's synthetic set and a user's own video alike:

    seq.frame(i)   uint8 (H, W, 3)          seq.frames()  uint8 (T, H, W, 3)
    seq.mask(i)    uint8 (H, W) or None     seq.masks()   uint8 (T, H, W)
    seq.flow(i, "forward")  float32 (H, W, 2)   (from a ``Flow/`` folder when the dataset has one)
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence as SequenceABC
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from voslab.data.io import read_flo, read_image, read_mask
from voslab.errors import VOSDataError

__all__ = ["Sequence", "SequenceList", "first_frame_objects", "given_masks", "VOID_ID"]

VOID_ID = 255  # DAVIS-2017 "void" label: pixels ignored by the metrics and the losses
FLOW_DIRECTIONS = ("forward", "backward")


class Sequence:
    """A lazily read video: frame paths, optional per-frame mask paths, optional flow folders.

    Args:
        name: the video's name (its folder name in the dataset).
        frame_paths: one image per frame, in temporal order.
        mask_paths: one entry per frame, ``None`` where the frame is not annotated (sparse
            annotations: YouTube-VOS, FBMS, semi-supervised test sets). ``None`` = no annotations.
        flow_dirs: ``{"forward": folder, "backward": folder}`` holding ``<frame stem>.flo`` files.
        binary: map every non-zero mask value to 1 (DAVIS-2016 convention, masks in {0, 1}).
        objects_meta: optional per-object metadata ``{id: {...}}`` (YouTube-VOS ``meta.json``).
    """

    def __init__(self, name: str, frame_paths: SequenceABC[str | Path],
                 mask_paths: SequenceABC[str | Path | None] | None = None,
                 flow_dirs: dict[str, str | Path] | None = None, binary: bool = False,
                 objects_meta: dict[int, dict] | None = None):
        self.name = str(name)
        self.frame_paths = [Path(p) for p in frame_paths]
        if not self.frame_paths:
            raise VOSDataError(f"sequence {self.name!r} has no frames; check its JPEGImages folder")
        if mask_paths is None:
            mask_paths = [None] * len(self.frame_paths)
        if len(mask_paths) != len(self.frame_paths):
            raise VOSDataError(f"sequence {self.name!r}: {len(mask_paths)} mask paths for "
                               f"{len(self.frame_paths)} frames; give one entry (or None) per frame")
        self.mask_paths = [None if p is None else Path(p) for p in mask_paths]
        self.flow_dirs = {k: Path(v) for k, v in (flow_dirs or {}).items()}
        self.binary = binary
        self.objects_meta = dict(objects_meta or {})

    def __repr__(self) -> str:
        return (f"Sequence({self.name!r}, frames={len(self)}, annotated={len(self.annotated_indices)}, "
                f"binary={self.binary})")

    def __len__(self) -> int:
        return len(self.frame_paths)

    # ---------------------------------------------------------------- frames
    @cached_property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the first frame (read from the image header only)."""
        path = self.frame_paths[0]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: first frame of sequence {self.name!r} is missing")
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception as err:
            raise VOSDataError(f"{path}: cannot decode the image ({err}); the file is corrupt, "
                               "re-download or regenerate it") from err
        return height, width

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``uint8 (H, W, 3)``."""
        path = self.frame_paths[self._index(i)]
        image = read_image(path)
        if image.shape[:2] != self.size:
            raise VOSDataError(f"{path}: frame is {image.shape[1]}x{image.shape[0]} but frame 0 of "
                               f"{self.name!r} is {self.size[1]}x{self.size[0]}; all frames of a video must "
                               "have one size (re-extract the frames)")
        return image

    def frames(self, indices: SequenceABC[int] | None = None) -> np.ndarray:
        """All frames (or ``indices``) stacked: ``uint8 (T, H, W, 3)``."""
        indices = range(len(self)) if indices is None else indices
        return np.stack([self.frame(i) for i in indices])

    def require_frames(self, n: int = 2) -> None:
        """Raise when the video has fewer than ``n`` frames (temporal models need >= 2)."""
        if len(self) < n:
            raise VOSDataError(f"sequence {self.name!r} ({self.frame_paths[0].parent}) has {len(self)} "
                               f"frame(s) but at least {n} are required; use a longer video or a "
                               "single-image model")

    # ---------------------------------------------------------------- masks
    @property
    def annotated_indices(self) -> list[int]:
        """Indices of the frames that have an annotation file."""
        return [i for i, p in enumerate(self.mask_paths) if p is not None]

    def has_mask(self, i: int) -> bool:
        return self.mask_paths[self._index(i)] is not None

    def mask(self, i: int) -> np.ndarray | None:
        """Mask of frame ``i``: ``uint8 (H, W)`` ({0, 1} when binary, else ids with 255 = void),
        or ``None`` when the frame is not annotated."""
        path = self.mask_paths[self._index(i)]
        if path is None:
            return None
        mask = read_mask(path)
        if mask.shape != self.size:
            raise VOSDataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the frames of "
                               f"{self.name!r} are {self.size[1]}x{self.size[0]}; annotations and "
                               "JPEGImages must come from the same resolution folder")
        if self.binary:
            mask = (mask > 0).astype(np.uint8)
        return mask

    def require_mask(self, i: int) -> np.ndarray:
        """Mask of frame ``i``; raise when the frame has no annotation."""
        mask = self.mask(i)
        if mask is None:
            annotated = self.annotated_indices
            raise VOSDataError(f"{self.name!r}: frame {i} ({self.frame_paths[self._index(i)].name}) has no "
                               f"annotation but one is required; annotated frames: "
                               f"{_short_list(annotated)}. Use seq.annotated_indices to pick frames.")
        return mask

    def masks(self, indices: SequenceABC[int] | None = None, fill: int | None = None) -> np.ndarray:
        """Masks stacked: ``uint8 (T, H, W)``. Unannotated frames raise, or are filled with ``fill``
        (e.g. ``fill=255`` marks them void)."""
        indices = range(len(self)) if indices is None else indices
        if fill is None:
            return np.stack([self.require_mask(i) for i in indices])
        empty = np.full(self.size, fill, dtype=np.uint8)
        return np.stack([m if (m := self.mask(i)) is not None else empty for i in indices])

    @cached_property
    def object_first_frames(self) -> dict[int, int]:
        """``{object id: index of the first annotated frame where it appears}`` (void excluded).

        Objects that enter late are kept; ids come from ``objects_meta`` when it lists them (cheap),
        else from one pass over the annotated masks.
        """
        if not self.binary and self.objects_meta and all("first_frame" in m for m in self.objects_meta.values()):
            return {int(k): int(m["first_frame"]) for k, m in sorted(self.objects_meta.items())}
        return self._scan_first_frames()

    def _scan_first_frames(self) -> dict[int, int]:
        first: dict[int, int] = {}
        saw_void = False
        for i in self.annotated_indices:
            values = np.unique(self.mask(i))
            saw_void |= bool((values == VOID_ID).any())
            for obj in values:
                if obj not in (0, VOID_ID):
                    first.setdefault(int(obj), i)
        if not first and saw_void:
            warnings.warn(f"{self.name!r}: masks hold only 0 and 255 (void), so the video has no objects; "
                          "binary {0, 255} masks (DAVIS-2016 style) must be read with year=2016", stacklevel=3)
        return dict(sorted(first.items()))

    @property
    def object_ids(self) -> list[int]:
        """Sorted ids of the objects annotated anywhere in the video (0 and 255 excluded)."""
        return list(self.object_first_frames)

    def check_object_id(self, obj_id: int) -> None:
        """Raise when ``obj_id`` is not an object of this video."""
        if int(obj_id) not in self.object_first_frames:
            raise VOSDataError(f"{self.name!r}: unknown object id {obj_id}; this video has objects "
                               f"{self.object_ids} (0 = background, 255 = void)")

    def object_mask(self, i: int, obj_id: int) -> np.ndarray | None:
        """Boolean ``(H, W)`` mask of one object in frame ``i`` (None when not annotated)."""
        self.check_object_id(obj_id)
        mask = self.mask(i)
        return None if mask is None else mask == obj_id

    # ---------------------------------------------------------------- flow
    @property
    def has_flow(self) -> bool:
        return any(d.is_dir() for d in self.flow_dirs.values())

    def flow(self, i: int, direction: str = "forward") -> np.ndarray:
        """Stored optical flow of frame ``i``: ``float32 (H, W, 2)`` (dx, dy).

        Forward flow maps frame i to i+1, backward flow maps it to i-1.
        """
        if direction not in FLOW_DIRECTIONS:
            raise ValueError(f"direction must be one of {FLOW_DIRECTIONS}, got {direction!r}")
        folder = self.flow_dirs.get(direction)
        if folder is None:
            raise FileNotFoundError(f"{self.name!r} has no stored {direction} flow (no Flow/{direction} "
                                    "folder in the dataset); compute it with voslab.flow.video_flow(seq)")
        path = folder / f"{self.frame_paths[self._index(i)].stem}.flo"
        flow = read_flo(path)
        if flow.shape[:2] != self.size:
            raise VOSDataError(f"{path}: flow is {flow.shape[1]}x{flow.shape[0]} but the frames are "
                               f"{self.size[1]}x{self.size[0]}; recompute the flow at frame resolution")
        return flow

    # ---------------------------------------------------------------- helpers
    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"frame index {i} out of range for {self.name!r} with {n} frames")
        return int(i) % n


def first_frame_objects(seq: Sequence) -> list[int]:
    """Object ids in the first frame's mask (the semi-supervised reference); raise if there are none."""
    path = seq.mask_paths[0]
    if path is None:
        raise VOSDataError(f"{seq.name!r}: frame 0 ({seq.frame_paths[0].name}) has no annotation; "
                           "semi-supervised VOS needs a first-frame mask (add Annotations/.../"
                           f"{seq.frame_paths[0].stem}.png)")
    mask = seq.mask(0)
    ids = [int(v) for v in np.unique(mask) if v not in (0, VOID_ID)]
    if not ids:
        raise VOSDataError(f"{path}: the first-frame mask is empty (only background/void); semi-supervised "
                           "VOS needs at least one object there; fix the annotation or start the video at "
                           "the frame where the object appears")
    return ids


def given_masks(seq: Sequence) -> dict[int, np.ndarray]:
    """The semi-supervised input of a video: {frame: uint8 mask of the objects that first appear there}
    (frame 0: its whole mask; a late entrant's mask at its first annotated frame, as DAVIS-2017 and
    YouTube-VOS give it). Void and ids of other objects are 0."""
    first = seq.mask(0)
    if first is None:
        raise ValueError(f"{seq.name!r}: frame 0 has no annotation; semi-supervised VOS needs the first-frame mask")
    given = {0: np.where(first == VOID_ID, 0, first).astype(np.uint8)}
    for obj, t in seq.object_first_frames.items():
        if t > 0:
            mask = seq.mask(t)
            given.setdefault(t, np.zeros_like(mask))
            given[t][mask == obj] = obj
    return given


class SequenceList(SequenceABC):
    """A list of `Sequence` indexed by position or by name; ``.names`` gives the names in order."""

    def __init__(self, sequences: SequenceABC[Sequence], source: str = ""):
        self.sequences = list(sequences)
        self.source = source
        self._by_name = {s.name: s for s in self.sequences}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self.sequences)

    def __contains__(self, item: object) -> bool:
        return item in self._by_name if isinstance(item, str) else item in self.sequences

    def __getitem__(self, key):  # int, slice or name
        if isinstance(key, str):
            if key not in self._by_name:
                raise KeyError(f"no sequence named {key!r} in {self.source or 'this dataset'}; "
                               f"available: {_short_list(self.names)}")
            return self._by_name[key]
        if isinstance(key, slice):
            return SequenceList(self.sequences[key], self.source)
        return self.sequences[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self)} sequences: {_short_list(self.names)})"


def _short_list(items: list, n: int = 8) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"
