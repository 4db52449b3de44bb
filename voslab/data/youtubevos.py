"""YouTube-VOS reader (official layout) and a ``meta.json`` writer.

Layout of one split (``train``, ``valid``, ``test``)::

    <root>/<split>/JPEGImages/<video>/00000.jpg 00005.jpg ...
    <root>/<split>/Annotations/<video>/00000.png ...      (palette PNGs, pixel value = object id)
    <root>/<split>/meta.json   {"videos": {<video>: {"objects": {"1": {"category": "cat",
                                                                       "frames": ["00000", "00005"]}}}}}

Annotations are sparse: in ``train`` every 5th frame of the 30 fps video is annotated; in ``valid``
only the frame where each object first appears. Each video is a `voslab.data.sequence.Sequence`
whose ``mask(i)`` is None on unannotated frames and whose ``objects_meta`` is
``{id: {"category", "frames", "first_frame"}}`` (``first_frame`` = index into the frame list).
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence as SequenceABC
from pathlib import Path

import numpy as np

from voslab.data.davis import IMAGE_SUFFIXES
from voslab.data.io import read_mask
from voslab.data.sequence import VOID_ID, Sequence, SequenceList
from voslab.errors import VOSDataError

__all__ = ["YouTubeVOS", "read_meta", "write_meta", "meta_from_annotations"]

DOWNLOAD_HINT = ("YouTube-VOS needs registration: download the split zip from the challenge site, then run "
                 "`python data_scripts/download_youtubevos.py --archive <zip> --root <folder>`")


class YouTubeVOS(SequenceList):
    """One YouTube-VOS split as a list of `Sequence` (``len``, int/name indexing, ``.names``).

    Args:
        root: folder holding ``<split>/`` (or the split folder itself).
        split: ``"train"``, ``"valid"``, ``"test"`` (the folder name).
        videos: optional list of video names to keep (default: every video folder).
    """

    def __init__(self, root: str | Path, split: str = "train", videos: SequenceABC[str] | None = None):
        self.root, self.split = Path(root).expanduser(), split
        self.split_dir = self._find_split_dir()
        self.meta = read_meta(self.split_dir / "meta.json") if (self.split_dir / "meta.json").is_file() else {}
        names = self._video_names(videos)
        super().__init__([self._load_video(n) for n in names], source=str(self.split_dir))

    def _find_split_dir(self) -> Path:
        for folder in (self.root / self.split, self.root):
            if (folder / "JPEGImages").is_dir():
                return folder
        raise FileNotFoundError(f"YouTube-VOS split folder {self.root / self.split / 'JPEGImages'} not found; "
                                + DOWNLOAD_HINT)

    def _video_names(self, videos: SequenceABC[str] | None) -> list[str]:
        image_dir = self.split_dir / "JPEGImages"
        present = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
        if videos is None:
            missing = sorted(set(self.meta) - set(present))
            if missing:
                raise VOSDataError(f"{self.split_dir / 'meta.json'} lists {len(missing)} videos with no folder "
                                   f"in {image_dir} (e.g. {missing[:3]}); the archive is incompletely extracted, "
                                   "re-extract it")
            return present
        unknown = [v for v in videos if v not in present]
        if unknown:
            raise VOSDataError(f"videos {unknown[:5]} not found in {image_dir}; available: {present[:5]} ...")
        return list(videos)

    def _load_video(self, name: str) -> Sequence:
        frame_paths = sorted(p for p in (self.split_dir / "JPEGImages" / name).iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES)
        ann_dir = self.split_dir / "Annotations" / name
        present = {p.stem: p for p in ann_dir.glob("*.png")} if ann_dir.is_dir() else {}
        mask_paths = [present.get(p.stem) for p in frame_paths]
        stems = [p.stem for p in frame_paths]
        objects = {obj: dict(info, first_frame=_first_index(stems, info["frames"]))
                   for obj, info in self.meta.get(name, {}).items() if info.get("frames")}
        return Sequence(name, frame_paths, mask_paths, binary=False, objects_meta=objects)

    def categories(self) -> dict[str, dict[int, str]]:
        """``{video: {object id: category}}`` from ``meta.json``."""
        return {v: {o: i.get("category", "") for o, i in objs.items()} for v, objs in self.meta.items()}


def _first_index(stems: list[str], frames: SequenceABC[str]) -> int:
    """Index of the first frame at or after the object's first listed frame (stems sort in time)."""
    return min(bisect.bisect_left(stems, str(frames[0])), len(stems) - 1)


def read_meta(path: str | Path) -> dict[str, dict[int, dict]]:
    """Parse ``meta.json`` into ``{video: {object id (int): {"category", "frames"}}}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        videos = raw["videos"]
        return {vid: {int(obj): dict(info) for obj, info in v.get("objects", {}).items()}
                for vid, v in videos.items()}
    except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as err:
        raise VOSDataError(f"{path}: not a YouTube-VOS meta.json ({err!r}); expected "
                           '{"videos": {<video>: {"objects": {"1": {"category": ..., "frames": [...]}}}}}; '
                           "re-extract the archive") from err


def write_meta(path: str | Path, videos: Mapping[str, Mapping[int, Mapping]]) -> Path:
    """Write ``{video: {object id: {"category": str, "frames": [stem, ...]}}}`` as an official
    ``meta.json`` (ids become strings, as in the release)."""
    payload = {"videos": {vid: {"objects": {str(int(obj)): {"category": str(info.get("category", "")),
                                                             "frames": [str(f) for f in info.get("frames", [])]}
                                            for obj, info in sorted(objs.items())}}
                          for vid, objs in videos.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def meta_from_annotations(split_dir: str | Path, category: str = "object") -> dict[str, dict[int, dict]]:
    """Build the ``write_meta`` mapping from the annotation PNGs of a split folder
    (every object gets ``category``; ``frames`` = the annotated frames where it is visible)."""
    videos: dict[str, dict[int, dict]] = {}
    for ann_dir in sorted(p for p in (Path(split_dir) / "Annotations").iterdir() if p.is_dir()):
        objects: dict[int, dict] = {}
        for png in sorted(ann_dir.glob("*.png")):
            for obj in np.unique(read_mask(png)):
                if obj not in (0, VOID_ID):
                    objects.setdefault(int(obj), {"category": category, "frames": []})["frames"].append(png.stem)
        videos[ann_dir.name] = objects
    return videos
