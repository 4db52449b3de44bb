"""AD-Net inference speed and peak memory per frame, at 240p and 480p.

Measures the inference path of ``predict_sequence``: the anchor is embedded once, then each frame
costs one backbone pass + the three branches + the head (batch of one frame). Backbones: the cpu
preset's (``tiny``) and the gpu preset's (``deeplabv3_resnet101``, or ``mobilenet_v2`` when
torchvision is absent, as ``build_model`` falls back).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak
resident set size during the timed forwards, each configuration in a fresh process.

    python benchmarks/bench_adnet.py                # CPU (and CUDA when available)
    python benchmarks/bench_adnet.py --repeats 5 --device cpu --sizes 240x427
"""
from __future__ import annotations

import argparse
import importlib.util
import resource
import time

import torch

from voslab.models.adnet import PRESETS, build_model

from fresh_process import devices_to_run, measure_in_fresh_process, parse_sizes

SIZES = {"240p": (240, 427), "480p": (480, 854)}


def _backbones() -> dict[str, dict]:
    """Model configs to time: the cpu preset's, and the gpu preset's (or its fallback)."""
    gpu = dict(PRESETS["gpu"]["model"])
    if importlib.util.find_spec("torchvision") is None:
        gpu["backbone"] = "mobilenet_v2"
    return {"cpu preset": dict(PRESETS["cpu"]["model"]), "gpu preset": gpu}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _measure(model_cfg: dict, size: tuple[int, int], device: str, repeats: int, threads: int) -> dict:
    """ms per frame and peak memory (MiB) of the anchor-cached inference path."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model({"model": model_cfg}).to(device).eval()
    anchor = torch.rand(1, 3, *size, device=device)
    frame = torch.rand(1, 3, *size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        anchor_emb = model.embed(anchor)
        model.head(anchor_emb, model.embed(frame), size)  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        start = time.perf_counter()
        for _ in range(repeats):
            model.head(anchor_emb, model.embed(frame), size)
        sync()
        elapsed = (time.perf_counter() - start) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss: KiB on Linux
    n = anchor_emb.shape[-2] * anchor_emb.shape[-1]
    return {"ms": 1000 * elapsed, "peak_mib": max(peak, 0) / 2**20, "positions": n,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "backbone": model_cfg["backbone"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--sizes", default="240x427,480x854", help="comma-separated HxW list")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes)
    devices = devices_to_run(args.device)

    print(f"AD-Net (variant full) inference per frame, anchor embedded once; torch {torch.__version__}, "
          f"{args.threads} CPU threads, {args.repeats} repeats")
    print("| device | preset | backbone | params (M) | input HxW | positions N | ms / frame | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for device in devices:
        for label, cfg in _backbones().items():
            for size in sizes:
                r = measure_in_fresh_process(_measure, cfg, size, device, args.repeats, args.threads)
                if "error" in r:
                    print(f"| {device} | {label} | {cfg['backbone']} | - | {size[0]}x{size[1]} | - | {r['error']} | - |")
                    continue
                print(f"| {device} | {label} | {r['backbone']} | {r['params_m']:.2f} | {size[0]}x{size[1]} | "
                      f"{r['positions']} | {r['ms']:.1f} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
