"""Speed of the synthetic dataset generator, per scenario, and the cpu-preset budget.

    python benchmarks/bench_synthetic.py                       # every scenario, 72x128 and 240p, + budget
    python benchmarks/bench_synthetic.py --scenarios transient_lookalikes mixed --n-videos 40
    python benchmarks/bench_synthetic.py --budget-videos 0     # skip the 300-video split
    python benchmarks/bench_synthetic.py --sizes 72x128 --budget-scenarios classic many_objects mixed

Prints, per scenario and size, videos/second for rendering only (in memory; wall time and CPU time,
12 frames each by default), then the budget line: a 300-video split at 72x128 written to disk in
the DAVIS layout under the voslab cache (the cpu preset's train split, as ensure() writes it), which
must take under 30 s on 2 cores.
Run it with OMP_NUM_THREADS=1 on a shared machine; one process.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from voslab.data import synthetic
from voslab.utils import Timer, cache_dir

SIZES = {"72x128": (72, 128), "240p": (240, 427)}
BUDGET_S = 30.0


def render_rate(scenario: str, size: tuple[int, int], n: int, n_frames: int) -> tuple[float, float]:
    """(videos per wall second, videos per CPU second) rendering ``n`` videos in memory."""
    cpu = time.process_time()
    with Timer() as wall:
        for i in range(n):
            synthetic.render_video(synthetic.video_seed(0, "bench", i), n_frames, size, 1.0, scenario)
    return n / wall.seconds, n / max(time.process_time() - cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=list(synthetic.SCENARIOS), choices=synthetic.SCENARIOS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--n-videos", type=int, default=20, help="videos rendered per scenario at 72x128 "
                        "(a quarter of them, at least 2, at 240p)")
    parser.add_argument("--n-frames", type=int, default=12)
    parser.add_argument("--budget-videos", type=int, default=300, help="videos of the budget split (0: skip)")
    parser.add_argument("--budget-scenarios", nargs="+", default=["mixed"], choices=synthetic.SCENARIOS)
    args = parser.parse_args()

    print(f"{'scenario':22s} {'size':>7s} {'videos/s':>9s} {'videos/CPU-s':>13s}   "
          f"({args.n_frames} frames, difficulty 1)")
    for scenario in args.scenarios:
        for name in args.sizes:
            n = args.n_videos if name == "72x128" else max(2, args.n_videos // 4)
            wall, cpu = render_rate(scenario, SIZES[name], n, args.n_frames)
            print(f"{scenario:22s} {name:>7s} {wall:9.1f} {cpu:13.1f}", flush=True)

    for scenario in args.budget_scenarios if args.budget_videos > 0 else []:
        n = args.budget_videos
        cpu = time.process_time()
        # in the voslab cache, where ensure() writes (a crowded /tmp can be 40x slower per file created)
        with tempfile.TemporaryDirectory(dir=cache_dir("bench"), prefix="synthetic-") as root, Timer() as write:
            synthetic.generate(root, "train", n_videos=n, n_frames=args.n_frames, size=SIZES["72x128"],
                               scenario=scenario)
        cpu = time.process_time() - cpu
        verdict = "within" if write.seconds < BUDGET_S else "OVER"
        print(f"budget      : {n} {scenario} videos at 72x128 x {args.n_frames} frames written in "
              f"{write.seconds:.1f} s wall ({cpu:.1f} s CPU) = {n / write.seconds:.1f} videos/s; "
              f"{verdict} the {BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
