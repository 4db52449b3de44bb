"""Convert FBMS-59 (Freiburg-Berkeley Motion Segmentation) to the flat DAVIS layout.

Input (one of ``Trainingset/`` or ``Testset/``)::

    <src>/<seq>/<seq>_0001.jpg ...                 frames
    <src>/<seq>/GroundTruth/<seq>_0001_gt.pgm ...  sparse labels (.pgm/.png grey, or .ppm colour)

Output::

    <out>/JPEGImages/<seq>/00000.jpg ...  <out>/Annotations/<seq>/00000.png (annotated frames only)
    <out>/ImageSets/<split>.txt

Each distinct grey value (or colour) of a sequence's ground truth becomes one instance id 1..K,
consistently across frames; the background value is the most common value on the label borders
(override with ``--background``). A label file is matched to the frame carrying the same number
in its name. Read the result with ``DAVIS(out, split, year=2016)`` (moving objects = foreground,
the FBMS protocol) or ``year=2017`` (instances).

    python data_scripts/convert_fbms.py --src FBMS/Testset --out data/fbms-test --split test
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from voslab.data.davis import IMAGE_SUFFIXES, write_imageset, write_sequence
from voslab.data.io import read_image
from voslab.errors import VOSDataError

LABEL_SUFFIXES = (".png", ".ppm", ".pgm")  # preference order when one frame has several label files


def frame_number(path: Path) -> int | None:
    """The last integer in a file name (``bear01_0012_gt.pgm`` -> 12)."""
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def label_codes(path: Path) -> np.ndarray:
    """One int per pixel identifying its grey value or colour: ``int64 (H, W)``."""
    rgb = read_image(path).astype(np.int64)  # (H, W, 3); grey images come back with R = G = B
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def find_labels(gt_dir: Path) -> dict[int, Path]:
    """``{frame number: label file}``, keeping one file per frame (.png > .ppm > .pgm)."""
    labels: dict[int, Path] = {}
    files = sorted((p for p in gt_dir.iterdir() if p.suffix.lower() in LABEL_SUFFIXES),
                   key=lambda p: LABEL_SUFFIXES.index(p.suffix.lower()))
    for path in files:
        number = frame_number(path)
        if number is not None:
            labels.setdefault(number, path)
    return labels


def border_mode(codes: list[np.ndarray]) -> int:
    """Most frequent code on the image borders (the background of a label image)."""
    border = np.concatenate([np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]]) for c in codes])
    values, counts = np.unique(border, return_counts=True)
    return int(values[counts.argmax()])


def codes_to_ids(codes: list[np.ndarray], background: int) -> list[np.ndarray]:
    """Map codes to instance ids 1..K (sorted by code) shared by all frames; background -> 0."""
    objects = np.setdiff1d(np.unique(np.concatenate([np.unique(c) for c in codes])), [background])
    if len(objects) > 254:
        raise VOSDataError(f"{len(objects)} distinct label values (> 254 objects); are the labels JPEG-compressed?")
    lookup = np.concatenate([[background], objects])  # sorted codes except the background first
    order = np.argsort(lookup)
    ids = []
    for c in codes:
        index = order[np.searchsorted(lookup[order], c)]  # (H, W) position in lookup = id
        ids.append(index.astype(np.uint8))
    return ids


def convert_sequence(seq_dir: Path, out: Path, background: int | None) -> int:
    """Convert one FBMS sequence; returns the number of annotated frames written."""
    frames = sorted((p for p in seq_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: (frame_number(p) or 0, p.name))
    if not frames:
        raise VOSDataError(f"{seq_dir}: no frames ({'/'.join(IMAGE_SUFFIXES)}); is --src the Trainingset folder?")
    gt_dir = seq_dir / "GroundTruth"
    labels = find_labels(gt_dir) if gt_dir.is_dir() else {}
    index_of = {frame_number(p): t for t, p in enumerate(frames)}
    unmatched = sorted(n for n in labels if n not in index_of)
    if unmatched:
        raise VOSDataError(f"{gt_dir}: label files {[labels[n].name for n in unmatched[:3]]} match no frame number "
                           f"in {seq_dir}; rename them <seq>_<frame number>_gt.pgm")
    times = sorted(index_of[n] for n in labels)
    codes = [label_codes(labels[n]) for n in sorted(labels, key=index_of.get)]
    if codes:
        bg = border_mode(codes) if background is None else background
        masks = dict(zip(times, codes_to_ids(codes, bg)))
    else:
        masks = {}
    write_sequence(out, seq_dir.name, frames, masks)
    return len(masks)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--src", type=Path, required=True, help="FBMS Trainingset/ or Testset/ folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (DAVIS layout)")
    parser.add_argument("--split", default="train", help="name of the ImageSets file to write")
    parser.add_argument("--background", type=int, default=None,
                        help="background label code (grey value, or R*65536+G*256+B); default: border majority")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.src.is_dir():
        print(f"error: {args.src} not found; point --src at the extracted FBMS Trainingset/ or Testset/",
              file=sys.stderr)
        return 2
    seq_dirs = sorted(p for p in args.src.iterdir() if p.is_dir())
    names = []
    for seq_dir in seq_dirs:
        annotated = convert_sequence(seq_dir, args.out, args.background)
        names.append(seq_dir.name)
        print(f"{seq_dir.name}: {annotated} annotated frames")
    write_imageset(args.out, args.split, names)
    print(f"wrote {len(names)} sequences to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
