"""Speed of the synthetic dataset generator at the default size (96x160, 12 frames, difficulty 1).

    python benchmarks/bench_synthetic.py [--n-videos 100]

Prints videos/second for rendering only (in memory) and for a full split written to disk.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from voslab.data import synthetic
from voslab.utils import Timer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-videos", type=int, default=100)
    parser.add_argument("--n-frames", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 160))
    args = parser.parse_args()
    n, size = args.n_videos, tuple(args.size)
    cpu = time.process_time()
    with Timer() as render:
        for i in range(n):
            synthetic.render_video(synthetic.video_seed(0, "bench", i), args.n_frames, size)
    cpu = time.process_time() - cpu
    with tempfile.TemporaryDirectory() as root, Timer() as write:
        synthetic.generate(root, "bench", n_videos=n, n_frames=args.n_frames, size=size)
    print(f"render only : {n} videos in {render.seconds:.1f} s = {n / render.seconds:.1f} videos/s "
          f"(CPU time {cpu:.1f} s = {n / cpu:.1f} videos/CPU-s; wall time suffers on a busy machine)")
    print(f"write split : {n} videos in {write.seconds:.1f} s = {n / write.seconds:.1f} videos/s "
          f"({n * args.n_frames} frames, {args.n_frames} frames of {size[0]}x{size[1]} each)")


if __name__ == "__main__":
    main()
