"""DAVIS-2016/2017 reader (official and flat layouts) and results writer.

Layouts understood (``resolution=None`` detects them):

official (``resolution="480p"`` or ``"Full-Resolution"``/``"1080p"``)::

    JPEGImages/480p/<seq>/00000.jpg     Annotations/480p/<seq>/00000.png
    ImageSets/480p/train.txt   (DAVIS-2016: lines "/JPEGImages/480p/bear/00000.jpg /Annotations/...")
    ImageSets/2017/train.txt   (DAVIS-2017: one sequence name per line)

flat (``resolution=""``: voslab's synthetic set, the shared 240p data, converted datasets, own videos)::

    JPEGImages/<seq>/00000.jpg    Annotations/<seq>/00000.png    ImageSets/<split>.txt
    Flow/forward/<seq>/00000.flo  Flow/backward/<seq>/00000.flo   (optional)

Splits: ``split`` is a name looked up in ``ImageSets/<year>/``, ``ImageSets/<resolution>/`` then
``ImageSets/``; a list of sequence names; or ``None`` for every sequence folder. When the dataset has
no ``ImageSets`` folder at all it defines no splits, so every sequence folder is used whatever
``split`` says; when it has one but no file for ``split``, a `VOSDataError` lists the splits it has.

Masks: ``year=2016`` binarises (``> 0 -> 1``, masks in {0, 1}); ``year=2017`` keeps palette ids
(0 = background, 1..K objects, 255 = void).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence as SequenceABC
from pathlib import Path

import numpy as np

from voslab.data.io import read_image, write_image, write_mask
from voslab.data.sequence import Sequence, SequenceList, first_frame_objects
from voslab.errors import VOSDataError

__all__ = ["DAVIS", "write_masks", "write_sequence", "write_imageset", "parse_imageset", "first_frame_objects",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESOLUTION_FOLDERS = ("480p", "Full-Resolution", "1080p")
DOWNLOAD_HINT = ("download it with `python data_scripts/download_davis.py --year {year} --root <folder>` "
                 "or pass root=<folder containing JPEGImages/>")


class DAVIS(SequenceList):
    """DAVIS dataset as a list of `Sequence` (``len``, ``ds[0]``, ``ds["bear"]``, iteration, ``.names``).

    Args:
        root: folder holding ``JPEGImages/`` (and ``Annotations/``, ``ImageSets/``).
        split: split name (``"train"``, ``"val"``, ...), list of sequence names, or None (all).
        year: 2016 (binary masks {0, 1}) or 2017 (instance ids, 255 = void).
        annotations: annotation folder name, e.g. ``"Annotations_binary"`` for synthetic
            unsupervised targets. A missing default ``"Annotations"`` folder means unlabelled
            frames (``mask(i)`` is None); a missing non-default folder raises.
        resolution: resolution sub-folder (``"480p"``, ``"Full-Resolution"``), ``""`` for the flat
            layout, None to detect (480p first).
    """

    def __init__(self, root: str | Path, split: str | SequenceABC[str] | None = "train", year: int = 2016,
                 annotations: str = "Annotations", resolution: str | None = None):
        if year not in (2016, 2017):
            raise ValueError(f"year must be 2016 (binary masks) or 2017 (instance ids), got {year!r}")
        self.root, self.year, self.annotations = Path(root).expanduser(), int(year), annotations
        self.resolution = self._find_resolution(resolution)
        self.image_dir = _join(self.root / "JPEGImages", self.resolution)
        self.mask_dir = self._find_mask_dir()
        self.split = split
        names = self._split_names(split)
        super().__init__([self._load_sequence(n) for n in names], source=str(self.root))

    # ---------------------------------------------------------------- layout
    def _find_resolution(self, resolution: str | None) -> str:
        images = self.root / "JPEGImages"
        if not images.is_dir():
            nested = [p.parent for p in self.root.glob("*/JPEGImages")] if self.root.is_dir() else []
            hint = f" (found {nested[0]}: pass root={str(nested[0])!r})" if nested else ""
            raise FileNotFoundError(f"DAVIS folder {images} not found{hint}; "
                                    + DOWNLOAD_HINT.format(year=self.year))
        if resolution is None:
            return next((r for r in RESOLUTION_FOLDERS if (images / r).is_dir()), "")
        if resolution and not (images / resolution).is_dir():
            present = sorted(p.name for p in images.iterdir() if p.is_dir())
            raise VOSDataError(f"{images / resolution} not found; resolution={resolution!r} is not in this "
                               f"dataset. Folders there: {present[:8]} (use resolution=None to detect, "
                               "'' for the flat layout)")
        return resolution

    def _find_mask_dir(self) -> Path | None:
        folder = self.root / self.annotations
        if not folder.is_dir():
            if self.annotations != "Annotations":
                raise FileNotFoundError(f"annotation folder {folder} not found; check annotations="
                                        f"{self.annotations!r} (folders in {self.root}: "
                                        f"{sorted(p.name for p in self.root.iterdir() if p.is_dir())})")
            return None  # unlabelled data: every mask(i) is None
        resolved = _join(folder, self.resolution)
        return resolved if resolved.is_dir() else folder

    def _split_names(self, split: str | SequenceABC[str] | None) -> list[str]:
        if split is None:
            return self._all_sequence_folders()
        if not isinstance(split, str):
            names = [str(n) for n in split]
            self._check_folders_exist(names, "the split list")
            return names
        imagesets = self.root / "ImageSets"
        if not imagesets.is_dir():
            return self._all_sequence_folders()  # the dataset defines no splits
        candidates = [imagesets / str(self.year), _join(imagesets, self.resolution), imagesets]
        for folder in candidates:
            path = folder / f"{split}.txt"
            if path.is_file():
                names = parse_imageset(path)
                self._check_folders_exist(names, str(path))
                return names
        available = sorted(str(p.relative_to(imagesets).with_suffix("")) for p in imagesets.rglob("*.txt"))
        raise VOSDataError(f"split {split!r} not found: no {split}.txt in "
                           f"{', '.join(str(c) for c in dict.fromkeys(candidates))}; available splits: "
                           f"{available} (as ImageSets/<folder>/<split>; check year=, or pass split=None for every sequence, or a list of names)")

    def _all_sequence_folders(self) -> list[str]:
        return sorted(p.name for p in self.image_dir.iterdir() if p.is_dir())

    def _check_folders_exist(self, names: list[str], listed_in: str) -> None:
        missing = [n for n in names if not (self.image_dir / n).is_dir()]
        if missing:
            raise VOSDataError(f"sequences {missing[:5]} listed in {listed_in} have no folder in "
                               f"{self.image_dir}; the download is incomplete (re-extract it) or the "
                               "split file belongs to another dataset")

    def _load_sequence(self, name: str) -> Sequence:
        frame_paths = sorted(p for p in (self.image_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frame_paths:
            raise VOSDataError(f"{self.image_dir / name} holds no frames ({'/'.join(IMAGE_SUFFIXES)}); "
                               "re-extract the dataset or remove the empty folder")
        mask_paths = self._mask_paths(name, frame_paths)
        flow_dirs = {d: self.root / "Flow" / d / name for d in ("forward", "backward")}
        flow_dirs = {d: p for d, p in flow_dirs.items() if p.is_dir()}
        return Sequence(name, frame_paths, mask_paths, flow_dirs=flow_dirs, binary=self.year == 2016)

    def _mask_paths(self, name: str, frame_paths: list[Path]) -> list[Path | None]:
        folder = None if self.mask_dir is None else self.mask_dir / name
        if folder is None or not folder.is_dir():
            return [None] * len(frame_paths)
        present = {p.stem: p for p in folder.glob("*.png")}
        return [present.get(p.stem) for p in frame_paths]

    # ---------------------------------------------------------------- results
    def write_results(self, out_root: str | Path, name: str, masks: np.ndarray | Iterable[np.ndarray]) -> Path:
        """Write predicted masks ``(T, H, W)`` of sequence ``name`` as ``out_root/<name>/<frame>.png``
        (the official results layout: one indexed PNG per frame, named like the frames)."""
        seq = self[name]
        masks = np.asarray(list(masks) if not isinstance(masks, np.ndarray) else masks)
        if masks.shape != (len(seq), *seq.size):
            raise VOSDataError(f"write_results({name!r}): masks have shape {masks.shape} but the sequence "
                               f"needs {(len(seq), *seq.size)} (T, H, W); resize predictions to the frame size")
        return write_masks(Path(out_root) / name, masks, names=[p.stem for p in seq.frame_paths])

    def __repr__(self) -> str:
        layout = self.resolution or "flat"
        return f"DAVIS(root={str(self.root)!r}, year={self.year}, split={self.split!r}, layout={layout!r}, {len(self)} sequences)"


def write_masks(folder: str | Path, masks: np.ndarray | Iterable[np.ndarray],
                names: SequenceABC[str] | None = None) -> Path:
    """Write masks (``(T, H, W)`` or an iterable of ``(H, W)``) as indexed DAVIS-palette PNGs
    ``folder/00000.png, ...`` (or ``folder/<names[t]>.png``). Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for t, mask in enumerate(masks):
        stem = f"{t:05d}" if names is None else names[t]
        write_mask(folder / f"{stem}.png", np.asarray(mask))
        count += 1
    if names is not None and count != len(names):
        raise VOSDataError(f"write_masks({folder}): {count} masks for {len(names)} frame names")
    return folder


def write_sequence(out_root: str | Path, name: str, frames: Iterable[np.ndarray | str | Path],
                   masks: Mapping[int, np.ndarray] | None = None, quality: int = 95) -> Sequence:
    """Write one video into the flat DAVIS layout and return it as a `Sequence`:
    ``out_root/JPEGImages/<name>/00000.jpg ...`` and ``out_root/Annotations/<name>/<t>.png`` for each
    frame index ``t`` in ``masks`` (sparse annotations are fine).

    ``frames`` holds ``uint8 (H, W, 3)`` arrays or image paths (JPEGs are copied byte for byte,
    other formats re-encoded). Used by the converters and `voslab.data.video.video_to_sequence`.
    """
    image_dir = Path(out_root) / "JPEGImages" / name
    if image_dir.is_dir() and any(image_dir.iterdir()):
        raise VOSDataError(f"{image_dir} already holds frames; choose another name/output folder or delete it")
    image_dir.mkdir(parents=True, exist_ok=True)
    frame_paths = []
    for t, frame in enumerate(frames):
        path = image_dir / f"{t:05d}.jpg"
        if isinstance(frame, (str, Path)) and Path(frame).suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(frame, path)
        else:
            write_image(path, read_image(frame) if isinstance(frame, (str, Path)) else np.asarray(frame), quality)
        frame_paths.append(path)
    mask_paths: list[Path | None] = [None] * len(frame_paths)
    for t, mask in sorted((masks or {}).items()):
        if not 0 <= t < len(frame_paths):
            raise VOSDataError(f"write_sequence({name!r}): mask for frame {t} but the video has "
                               f"{len(frame_paths)} frames")
        mask_paths[t] = Path(out_root) / "Annotations" / name / f"{t:05d}.png"
        write_mask(mask_paths[t], mask)
    return Sequence(name, frame_paths, mask_paths)


def write_imageset(root: str | Path, split: str, names: Iterable[str]) -> Path:
    """Write ``root/ImageSets/<split>.txt`` (one sequence name per line)."""
    path = Path(root) / "ImageSets" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def parse_imageset(path: str | Path) -> list[str]:
    """Sequence names of an ImageSets file, in order, without duplicates.

    Accepts one name per line (DAVIS-2017, flat) and DAVIS-2016's frame lists
    (``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``).
    """
    names: dict[str, None] = {}
    for line in Path(path).read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        if token:
            names[Path(token).parent.name if "/" in token else token] = None
    return list(names)


def _join(folder: Path, sub: str) -> Path:
    return folder / sub if sub else folder
