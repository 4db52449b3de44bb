"""Download and unpack DAVIS-2016 or DAVIS-2017 (trainval, 480p) into the official layout.

    python data_scripts/download_davis.py --year 2016 --root data/DAVIS2016
    python data_scripts/download_davis.py --year 2017 --root data/DAVIS2017
    python data_scripts/download_davis.py --year 2016 --root data/DAVIS2016 --archive DAVIS-data.zip

The DAVIS authors publish no checksums for these zips, so none is checked by default; pass
``--sha256`` to pin the file you expect (``voslab.data.download.sha256sum`` prints one). Interrupted
downloads resume. Licence: DAVIS is CC BY-NC 4.0 (non-commercial); cite Perazzi et al. 2016 /
Pont-Tuset et al. 2017.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voslab.data.davis import DAVIS
from voslab.data.download import download, extract_dataset

URLS = {
    2016: "https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-data.zip",
    2017: "https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--year", type=int, choices=sorted(URLS), default=2016)
    parser.add_argument("--root", type=Path, required=True, help="folder to create (will hold JPEGImages/)")
    parser.add_argument("--archive", type=Path, help="use an already downloaded zip instead of downloading")
    parser.add_argument("--url", help="download from this URL (a mirror) instead of the official one")
    parser.add_argument("--sha256", help="expected sha256 of the zip (not published by DAVIS; optional)")
    parser.add_argument("--download-dir", type=Path, help="where to keep the zip (default: <root>/..)")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.root / "JPEGImages").is_dir():
        print(f"{args.root} already holds JPEGImages/; checking it")
    else:
        archive = args.archive
        if archive is None:
            url = args.url or URLS[args.year]
            folder = args.download_dir or args.root.resolve().parent
            folder.mkdir(parents=True, exist_ok=True)
            print(f"downloading {url} (no official checksum published"
                  f"{'; checking the given --sha256' if args.sha256 else ''})")
            archive = download(url, folder, sha256=args.sha256, progress=not args.no_progress)
        print(f"extracting {archive} -> {args.root}")
        extract_dataset(archive, args.root, marker="JPEGImages")
        if args.archive is None and not args.keep_archive:
            archive.unlink()
    summary = describe(args.root, args.year)
    print(summary)
    return 0


def describe(root: Path, year: int) -> str:
    """Check the layout by reading it with voslab's reader; one line per split found."""
    lines = []
    for split in ("train", "val"):
        try:
            ds = DAVIS(root, split=split, year=year)
        except Exception as err:  # a missing split is reported, not fatal
            lines.append(f"  {split}: not available ({err})")
            continue
        frames = sum(len(s) for s in ds)
        lines.append(f"  {split}: {len(ds)} sequences, {frames} frames ({ds.resolution or 'flat'} layout)")
    return f"DAVIS-{year} at {root}:\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
