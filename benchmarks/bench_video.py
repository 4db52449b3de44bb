"""Own video: peak memory and time of turning an mp4 into JPEG frames (decord -> ``video_to_sequence``),
the first step of ``voslab predict VIDEO.mp4``, against the video's length and decord's thread count.

A 480p test video is generated (a moving pattern, ``write_video``); each (frames, threads) case
runs in a fresh process and reports its peak resident set size (``ru_maxrss``).

    python benchmarks/bench_video.py                       # 500 and 2000 frames, threads 0 (auto) and 1
    python benchmarks/bench_video.py --frames 2000 --threads 1
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from fresh_process import measure_in_fresh_process


def make_video(path: Path, n_frames: int, size=(480, 854)) -> Path:
    from voslab.data.video import write_video

    rng = np.random.default_rng(0)
    base = (rng.random((*size, 3)) * 255).astype(np.uint8)

    def frames():
        for t in range(n_frames):
            frame = np.roll(base, 3 * t, axis=1)
            frame[100:200, (5 * t) % 700:(5 * t) % 700 + 100] = 255
            yield frame

    return write_video(path, frames(), fps=24)


def _extract(video: str, threads: int) -> dict:
    from voslab.data import video as video_module

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        reader = video_module.VideoReader(video, num_threads=threads)
        frames = (f for block in reader.iter_chunks(32) for f in block)
        seq = video_module.write_sequence(out, "clip", frames)
        n = len(seq)
    return {"frames": n, "seconds": time.perf_counter() - start,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="500,2000", help="comma-separated video lengths")
    parser.add_argument("--threads", default="0,1", help="decord decoder threads to compare (0 = automatic)")
    args = parser.parse_args()
    print("| frames (480p) | decord threads | seconds | peak MiB (process) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(v) for v in args.frames.split(",")):
            path = make_video(Path(folder) / f"clip{n}.mp4", n)
            for threads in (int(v) for v in args.threads.split(",")):
                r = measure_in_fresh_process(_extract, str(path), threads)
                print(f"| {r.get('frames', n)} | {threads} | {r.get('seconds', float('nan')):.1f} | "
                      f"{r.get('peak_mib', float('nan')):.0f} |", flush=True)


if __name__ == "__main__":
    main()
