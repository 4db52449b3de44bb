"""Convert SegTrack v2 to the flat DAVIS layout with instance ids.

Input (the extracted ``SegTrackv2/`` folder)::

    <src>/JPEGImages/<seq>/<frame>.png|bmp|jpg
    <src>/GroundTruth/<seq>/<frame>.png               one object
    <src>/GroundTruth/<seq>/<obj>/<frame>.png         several objects (folders 1, 2, ...)

Output: ``<out>/JPEGImages/<seq>/00000.jpg``, ``<out>/Annotations/<seq>/00000.png`` (object k of the
sorted object folders -> id k; where objects overlap the later one wins), ``<out>/ImageSets/<split>.txt``.
Label files are matched to frames by name, or by order when the names differ but the counts agree.

    python data_scripts/convert_segtrackv2.py --src SegTrackv2 --out data/segtrackv2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from voslab.data.davis import IMAGE_SUFFIXES, write_imageset, write_sequence
from voslab.data.io import read_image
from voslab.errors import VOSDataError


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def object_folders(gt_dir: Path) -> list[Path]:
    """One folder per object: the sub-folders (sorted numerically) or ``gt_dir`` itself."""
    subs = [p for p in gt_dir.iterdir() if p.is_dir()]
    return sorted(subs, key=lambda p: (int(p.name) if p.name.isdigit() else 1 << 30, p.name)) if subs else [gt_dir]


def match_labels(frames: list[Path], labels: list[Path], where: Path) -> list[Path]:
    """Label file of each frame: by stem, else by order when the counts agree."""
    by_stem = {p.stem: p for p in labels}
    if all(f.stem in by_stem for f in frames):
        return [by_stem[f.stem] for f in frames]
    if len(labels) == len(frames):
        return labels
    raise VOSDataError(f"{where}: {len(labels)} label files for {len(frames)} frames and their names differ; "
                       "make one label per frame with the frame's name")


def foreground(path: Path) -> np.ndarray:
    """Binary object mask of a SegTrack label image (any channel > 127): ``bool (H, W)``."""
    return (read_image(path) > 127).any(axis=-1)


def convert_sequence(src: Path, name: str, out: Path) -> int:
    """Convert one sequence; returns its number of objects."""
    frames = list_images(src / "JPEGImages" / name)
    if not frames:
        raise VOSDataError(f"{src / 'JPEGImages' / name}: no frames")
    gt_dir = src / "GroundTruth" / name
    if not gt_dir.is_dir():
        raise VOSDataError(f"{gt_dir} not found; every SegTrack v2 sequence needs GroundTruth/<seq>/")
    masks = None
    folders = object_folders(gt_dir)
    for obj_id, folder in enumerate(folders, start=1):
        for t, label in enumerate(match_labels(frames, list_images(folder), folder)):
            fg = foreground(label)  # (H, W)
            if masks is None:
                masks = np.zeros((len(frames), *fg.shape), dtype=np.uint8)  # (T, H, W)
            if fg.shape != masks.shape[1:]:
                raise VOSDataError(f"{label}: label is {fg.shape[1]}x{fg.shape[0]} but the others are "
                                   f"{masks.shape[2]}x{masks.shape[1]}")
            masks[t][fg] = obj_id
    write_sequence(out, name, frames, dict(enumerate(masks)))
    return len(folders)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--src", type=Path, required=True, help="SegTrackv2 folder (JPEGImages/, GroundTruth/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (DAVIS layout)")
    parser.add_argument("--split", default="all", help="name of the ImageSets file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    image_root = args.src / "JPEGImages"
    if not image_root.is_dir():
        print(f"error: {image_root} not found; point --src at the extracted SegTrackv2 folder", file=sys.stderr)
        return 2
    names = sorted(p.name for p in image_root.iterdir() if p.is_dir())
    for name in names:
        print(f"{name}: {convert_sequence(args.src, name, args.out)} object(s)")
    write_imageset(args.out, args.split, names)
    print(f"wrote {len(names)} sequences to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
