"""FEELVOS inference speed and peak memory per frame, at 240p and 480p.

Measures the online step of ``predict_video`` for one frame after the first: backbone + stride-4
decoder + embedding, global matching to the first frame (its embeddings cached), local matching to
the previous frame (window k of the preset), the dynamic head for K objects (3: background + 2).
Configs: the cpu preset's model and the real preset's (MobileNetV2, untrained weights: speed only).
Peak memory on CPU: growth of the process's resident set during the timed forwards, each
configuration in a fresh process.

    python benchmarks/bench_feelvos.py                   # 1 thread, 3 repeats
    python benchmarks/bench_feelvos.py --repeats 5 --sizes 240p

Measured (1 thread, busy 2-core machine, 3 repeats): cpu preset model 101 ms at 240p (grid 60x107, k=4),
1362 ms at 480p; real preset model (MobileNetV2) 180 / 2236 ms; peak RSS growth 14-47 MiB. At 480p the
global matching (25 680 x 25 680 distances per object) dominates.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from voslab.models.feelvos import PRESETS, FEELVOS, FEELVOSConfig, labels_to_grid, one_hot

from fresh_process import measure_in_fresh_process


SIZES = {"240p": (240, 427), "480p": (480, 854)}
K = 3


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(preset: str, size: tuple[int, int], repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model_cfg = {k: v for k, v in PRESETS[preset]["model"].items() if k != "pretrained"}
    model = FEELVOS(FEELVOSConfig(**model_cfg)).eval()
    first, prev, cur = (torch.rand(1, 3, *size) for _ in range(3))
    labels = torch.zeros(1, *size, dtype=torch.long)
    labels[:, size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] = 1
    labels[:, size[0] // 2:, size[1] // 2:] = 2
    with torch.inference_mode():
        _, ref_emb = model.embed(first)
        _, prev_emb = model.embed(prev)
        small = labels_to_grid(labels, ref_emb.shape[-2:])
        prob = one_hot(small, K)

        def step():
            features, emb = model.embed(cur)
            g = model.global_map(emb, ref_emb, small, K)
            loc = model.local_map(emb, prev_emb, small, K)
            return model.head_logits(features, [g, loc, prob]).softmax(1)

        step()  # warm-up
        before = _peak_rss_mib()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        ms = 1000 * (time.perf_counter() - start) / repeats
    return {"ms_per_frame": ms, "peak_rss_growth_mib": _peak_rss_mib() - before, "grid": tuple(ref_emb.shape[-2:]),
            "window": model.cfg.window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--presets", nargs="+", default=["cpu", "real"])
    args = parser.parse_args()
    print(f"FEELVOS online step, CPU, {args.threads} thread(s), K={K} objects, {args.repeats} repeats")
    for preset in args.presets:
        for name in args.sizes:
            r = measure_in_fresh_process(_measure, preset, SIZES[name], args.repeats, args.threads)
            if "error" in r:
                print(f"{preset:>5} preset model @ {name}: {r['error']}")
                continue
            print(f"{preset:>5} preset model @ {name} (grid {r['grid'][0]}x{r['grid'][1]}, k={r['window']}): "
                  f"{r['ms_per_frame']:.0f} ms/frame, peak RSS growth {r['peak_rss_growth_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
