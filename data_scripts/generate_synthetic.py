"""Write a split of voslab's procedural video dataset in the DAVIS layout.

    python data_scripts/generate_synthetic.py --root data/synthetic --split train --n-videos 100
    python data_scripts/generate_synthetic.py --root data/synthetic --split val --n-videos 20
    python data_scripts/generate_synthetic.py --root data/lookalikes --scenario transient_lookalikes
    python data_scripts/generate_synthetic.py --root data/mixed --scenario mixed --n-videos 48

Scenarios (see ``voslab.data.synthetic``): classic (default), transient_lookalikes, camouflage,
stop_and_go, static_start, identical_instances, occlude_reappear, corrupted_frames, many_objects,
mixed (each video one of the eight between classic and mixed, balanced). Each video's scenario
and per-frame facts are in ``meta/<seq>.json``.

Read it back with ``voslab.data.davis.DAVIS(root, split, year=2017)`` (instance ids) or
``DAVIS(root, split, year=2016, annotations="Annotations_binary")`` (moving objects only).
"""
from __future__ import annotations

import argparse
import time

from voslab.data import synthetic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="output dataset folder (created if missing)")
    parser.add_argument("--split", default="train", help="split name; seeds differ per split (default: train)")
    parser.add_argument("--n-videos", type=int, default=8)
    parser.add_argument("--n-frames", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 160), metavar=("H", "W"))
    parser.add_argument("--difficulty", type=float, default=1.0, help="0 easy, 1 default, >1 harder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default=synthetic.DEFAULT_SCENARIO, choices=synthetic.SCENARIOS,
                        help=f"what the videos isolate (default: {synthetic.DEFAULT_SCENARIO})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = synthetic.generate(args.root, split=args.split, n_videos=args.n_videos, n_frames=args.n_frames,
                              size=tuple(args.size), difficulty=args.difficulty, seed=args.seed,
                              scenario=args.scenario)
    seconds = time.perf_counter() - start
    print(f"wrote {args.n_videos} {args.scenario} videos ({args.split}) to {root} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
