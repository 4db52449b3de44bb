"""LVO inference speed and peak memory per frame, at 240p and 480p (CPU, one thread by default).

Times the network of ``predict_sequence`` on a clip of T frames (both streams on every frame, the
bidirectional ConvGRU over the clip, the classifier), excluding the DIS flow (timed separately:
OpenCV, one call per frame pair) and the optional CRF. Reported per frame. Peak memory: the growth
of the process's peak resident set size during the timed forwards, each configuration in a fresh
process.

    python benchmarks/bench_lvo.py                      # cpu and real presets' models, 240p and 480p
    python benchmarks/bench_lvo.py --frames 8 --repeats 2 --threads 1
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from voslab.flow import compute_flow
from voslab.models.lvo import PRESETS, build_model

from fresh_process import measure_in_fresh_process


SIZES = {"240p": (240, 427), "480p": (480, 854)}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run(preset: str, size: tuple[int, int], frames: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model_cfg = dict(PRESETS[preset]["model"])
    model_cfg["pretrained"] = False  # speed only: random weights, same architecture
    model = build_model({"model": model_cfg}).eval()
    video = torch.rand(1, frames, 3, *size)
    flow = torch.randn(1, frames, 2, *size)
    with torch.inference_mode():
        model(video[:, :2], flow[:, :2])  # warm-up
        before = _peak_rss()
        start = time.perf_counter()
        for _ in range(repeats):
            model(video, flow)
        seconds = (time.perf_counter() - start) / repeats
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    b = np.roll(a, 3, axis=1)
    start = time.perf_counter()
    for _ in range(3):
        compute_flow(a, b)
    flow_ms = (time.perf_counter() - start) / 3 * 1000
    return {"ms": seconds / frames * 1000, "mib": (_peak_rss() - before) / 2**20, "flow_ms": flow_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "real"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"| model (preset) | size | network ms/frame | DIS flow ms/frame | peak RSS growth MiB |  (CPU, {args.threads} thread(s), "
          f"clips of {args.frames} frames)")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        for name in args.sizes:
            size = SIZES.get(name) or tuple(int(v) for v in name.split("x"))
            r = measure_in_fresh_process(_run, preset, size, args.frames, args.repeats, args.threads)
            if "error" in r:
                print(f"| lvo ({preset}) | {name} | {r['error']} | | |", flush=True)
                continue
            print(f"| lvo ({preset}) | {name} | {r['ms']:.1f} | {r['flow_ms']:.1f} | {r['mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
