"""Unpack and check a YouTube-VOS split that you downloaded yourself.

YouTube-VOS is distributed after registration (CodaLab competition pages / Google Drive links on
https://youtube-vos.org), so voslab cannot fetch it. Download e.g. ``train.zip``, then:

    python data_scripts/download_youtubevos.py --archive ~/Downloads/train.zip --root data/youtube-vos

which unpacks it to ``<root>/<split>/{JPEGImages,Annotations,meta.json}`` and checks that every
video in ``meta.json`` has its frames. Read it with ``voslab.data.youtubevos.YouTubeVOS(root, split)``.
Licence: YouTube-VOS annotations CC BY 4.0; videos remain under YouTube's terms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voslab.data.download import extract_dataset
from voslab.data.youtubevos import YouTubeVOS

INSTRUCTIONS = """YouTube-VOS needs registration, so it cannot be downloaded automatically:
  1. register and open the dataset page linked from https://youtube-vos.org (VOS track, CodaLab);
  2. download the split archive (train.zip, valid.zip) to your machine;
  3. run: python data_scripts/download_youtubevos.py --archive <path/to/train.zip> --root <folder>"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--archive", type=Path, help="the split zip you downloaded (train.zip, valid.zip)")
    parser.add_argument("--root", type=Path, help="dataset folder; the split goes to <root>/<split>")
    parser.add_argument("--split", help="split name (default: the archive's file name, e.g. train)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.archive is None or args.root is None:
        print(INSTRUCTIONS)
        return 1
    if not args.archive.is_file():
        print(f"error: {args.archive} not found\n\n{INSTRUCTIONS}", file=sys.stderr)
        return 2
    split = args.split or args.archive.name.split(".")[0]
    target = args.root / split
    if (target / "JPEGImages").is_dir():
        print(f"{target} already holds JPEGImages/; checking it")
    else:
        print(f"extracting {args.archive} -> {target}")
        extract_dataset(args.archive, target, marker="JPEGImages")
    print(describe(args.root, split))
    return 0


def describe(root: Path, split: str) -> str:
    """Read the split with voslab's reader (raises on an inconsistent layout) and summarise it."""
    ds = YouTubeVOS(root, split)
    annotated = sum(len(s.annotated_indices) for s in ds)
    frames = sum(len(s) for s in ds)
    objects = sum(len(v) for v in ds.meta.values())
    meta = "meta.json found" if ds.meta else "no meta.json (objects will be read from the masks)"
    return (f"YouTube-VOS {split} at {ds.split_dir}: {len(ds)} videos, {frames} frames, "
            f"{annotated} annotated frames, {objects} objects; {meta}")


if __name__ == "__main__":
    sys.exit(main())
