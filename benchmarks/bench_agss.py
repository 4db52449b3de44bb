"""AGSS-VOS inference speed and peak memory per frame, at 240p and 480p, for K objects.

Measures one online step of ``predict_video`` after the first frame: the network forward for all K
objects in one pass (the reference features cached), and separately DIS flow of one frame pair
(``dis_preset`` of the model). ``--per-object`` also times the per-object baseline (the whole
network once per object). Configs: the cpu preset's model and the real preset's (MobileNetV2,
untrained weights: speed only). Peak memory on CPU: growth of the process's resident set during the
timed forwards, each configuration in a fresh process.

    python benchmarks/bench_agss.py                      # 1 thread, 3 repeats, K = 4
    python benchmarks/bench_agss.py --objects 1 8 --per-object --sizes 240p

Measured (1 thread, busy 2-core machine, 3 repeats, K = 4): cpu preset model 147 ms at 240p, 292 ms
at 480p (+ DIS 27 / 78 ms); real preset model (MobileNetV2) 544 / 2624 ms (+ DIS "fast" 5 / 21 ms); peak
RSS growth 0-22 MiB. Single shot vs per object, cpu model at 240p: K=8 232 vs 335 ms (K=1: 51 vs 15 ms,
the same network: the spread is the machine's load). With the tiny backbone the K-batched first stage
at full resolution is a large share of the network, so the single shot is far from flat here.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from voslab.flow import compute_flow
from voslab.models.agss import AGSS, PRESETS, AGSSConfig

from fresh_process import measure_in_fresh_process


SIZES = {"240p": (240, 427), "480p": (480, 854)}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(preset: str, size: tuple[int, int], K: int, per_object: bool, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model_cfg = {k: v for k, v in PRESETS[preset]["model"].items() if k != "pretrained"}
    model = AGSS(AGSSConfig(**model_cfg)).eval()
    image = torch.rand(1, 3, *size)
    prev = torch.zeros(1, K, *size)
    g = torch.Generator().manual_seed(K)
    for k in range(K):
        y, x = (int(torch.randint(0, s - s // 6, (1,), generator=g)) for s in size)
        prev[0, k, y:y + size[0] // 6, x:x + size[1] // 6] = 1
    frames = (np.random.default_rng(0).random((2, *size, 3)) * 255).astype(np.uint8)
    with torch.inference_mode():
        ref = model.reference_per_object(image, prev) if per_object else model.reference(image, prev.amax(1, keepdim=True))
        model(image, prev, ref, per_object=per_object)  # warm-up
        before = _peak_rss_mib()
        start = time.perf_counter()
        for _ in range(repeats):
            model(image, prev, ref, per_object=per_object)
        ms = 1000 * (time.perf_counter() - start) / repeats
        growth = _peak_rss_mib() - before
    start = time.perf_counter()
    for _ in range(repeats):
        compute_flow(frames[1], frames[0], "dis", model.cfg.dis_preset)
    flow_ms = 1000 * (time.perf_counter() - start) / repeats
    return {"ms_per_frame": ms, "flow_ms": flow_ms, "peak_rss_growth_mib": growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--presets", nargs="+", default=["cpu", "real"])
    parser.add_argument("--objects", nargs="+", type=int, default=[4])
    parser.add_argument("--per-object", action="store_true", help="also time the per-object baseline")
    args = parser.parse_args()
    print(f"AGSS-VOS online step, CPU, {args.threads} thread(s), {args.repeats} repeats")
    for preset in args.presets:
        for name in args.sizes:
            for K in args.objects:
                for per_object in ([False, True] if args.per_object else [False]):
                    r = measure_in_fresh_process(_measure, preset, SIZES[name], K, per_object, args.repeats,
                                                 args.threads)
                    mode = "per object " if per_object else "single shot"
                    if "error" in r:
                        print(f"{preset:>5} preset model @ {name}, K={K:>2}, {mode}: {r['error']}", flush=True)
                        continue
                    mode = "per object " if per_object else "single shot"
                    print(f"{preset:>5} preset model @ {name}, K={K:>2}, {mode}: network {r['ms_per_frame']:.0f} ms/frame "
                          f"+ DIS {r['flow_ms']:.0f} ms, peak RSS growth {r['peak_rss_growth_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
