"""AGNN inference speed and peak memory per frame, at 240p and 480p.

Measures the inference path of ``predict_sequence``: every frame is embedded once, then each frame
costs its own graph (node 0 plus N'-1 = 2 other frames of the video, whose embeddings are reused):
K rounds of message passing over the N' nodes (N'(N'-1) inter-attention maps of P x P, N' intra-
attention maps, gates, ConvGRU) and node 0's readout. So ms / frame = one backbone pass + one graph.
Models: the cpu preset's (tiny backbone, C = 32, K = 3) and the real preset's (MobileNetV2 at OS 16,
C = 128, random weights: the speed does not depend on them).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak
resident set size during the timed forwards, each configuration in a fresh process.

    python benchmarks/bench_agnn.py                 # CPU (and CUDA when available)
    python benchmarks/bench_agnn.py --repeats 5 --device cpu --sizes 240x427 --threads 1
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from voslab.models.agnn import PRESETS, build_model

from fresh_process import devices_to_run, measure_in_fresh_process, parse_sizes

SIZES = {"240p": (240, 427), "480p": (480, 854)}


def _models() -> dict[str, dict]:
    real = dict(PRESETS["real"]["model"], pretrained=False)
    return {"cpu preset": dict(PRESETS["cpu"]["model"]), "real preset": real}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _measure(model_cfg: dict, size: tuple[int, int], device: str, repeats: int, threads: int) -> dict:
    """ms per frame and peak memory (MiB) of the embed-once, one-graph-per-frame inference path."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model({"model": model_cfg}).to(device).eval()
    n = model.cfg.n_frames
    frame = torch.rand(1, 3, *size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def one_frame(others):
        h0 = torch.cat([model.embed(frame), others])[None]  # (1, N', C, h, w): node 0 new, the others cached
        return model.readout(model.propagate(h0)[:, :1], h0[:, :1], size)

    with torch.inference_mode():
        others = model.embed(torch.rand(n - 1, 3, *size, device=device))  # (N'-1, C, h, w)
        one_frame(others)  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        start = time.perf_counter()
        for _ in range(repeats):
            one_frame(others)
        sync()
        elapsed = (time.perf_counter() - start) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss: KiB on Linux
    return {"ms": 1000 * elapsed, "peak_mib": max(peak, 0) / 2**20, "positions": others.shape[-2] * others.shape[-1],
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "backbone": model_cfg["backbone"],
            "k": model.cfg.iterations, "nodes": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--sizes", default="240x427,480x854", help="comma-separated HxW list")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes)
    devices = devices_to_run(args.device)

    print(f"AGNN inference per frame (one backbone pass + its graph, other nodes' embeddings cached); "
          f"torch {torch.__version__}, {args.threads} CPU threads, {args.repeats} repeats")
    print("| device | preset | backbone | params (M) | K | nodes | input HxW | positions P | ms / frame | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for label, cfg in _models().items():
            for size in sizes:
                r = measure_in_fresh_process(_measure, cfg, size, device, args.repeats, args.threads)
                if "error" in r:
                    print(f"| {device} | {label} | {cfg['backbone']} | - | - | - | {size[0]}x{size[1]} | - | {r['error']} | - |")
                    continue
                print(f"| {device} | {label} | {r['backbone']} | {r['params_m']:.2f} | {r['k']} | {r['nodes']} | "
                      f"{size[0]}x{size[1]} | {r['positions']} | {r['ms']:.1f} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
