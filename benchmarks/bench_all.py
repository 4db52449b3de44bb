"""Every model side by side: inference time per frame and peak memory at 240p and 480p, and the
metrics' speed-up against the official DAVIS evaluation algorithm.

Each (model, preset, size) is measured in a fresh process (its own peak memory and thread count):
the preset's model (untrained weights: the cost does not depend on them), its paper's whole
inference protocol (``recipe.predict_sequence``: flow estimation for LVO and AGSS-VOS, the anchor
for AD-Net, the graph over frames for AGNN, the first-frame and previous-frame matching for FEELVOS)
on a synthetic video rendered at that size, with the preset's ``eval.inference_size`` set to it, so
the network really runs at 240p / 480p. A short warm-up video is predicted first and not timed.
Peak memory: ``voslab.profile`` (CPU: resident set size growth, sampled every millisecond; CUDA:
``max_memory_allocated``) above the level after the model was built, over the warm-up and the timed
video (the warm-up allocates the buffers the timed video then reuses).

    python benchmarks/bench_all.py                          # cpu and real presets, CPU (and CUDA when present)
    python benchmarks/bench_all.py --presets real --sizes 240x427 --frames 4 --threads 2
    python benchmarks/bench_all.py --json bench_all.json    # also keep the numbers

The last table is ``bench_metrics.py``'s synthetic 480p case (J+F of ``voslab.metrics.evaluate``
vs the official algorithm, re-implemented there step by step).
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from fresh_process import devices_to_run, measure_in_fresh_process, parse_sizes

SIZES = "240x427,480x854"


def _video_config(size: tuple[int, int], n_frames: int, seed: int) -> dict:
    return {"n_videos": 1, "n_frames": n_frames, "size": size, "difficulty": 1.0, "seed": seed, "scenario": "classic"}


def _preset_at(name: str, preset: str, size: tuple[int, int], n_frames: int, seed: int) -> dict:
    """The preset with a one-video synthetic val split at ``size`` and inference at ``size``."""
    from voslab import presets

    cfg = copy.deepcopy(presets.get(name, preset))
    cfg["data"] = {"val": _video_config(size, n_frames, seed)}
    cfg.setdefault("eval", {})["inference_size"] = tuple(size)
    return cfg


def _measure(name: str, preset: str, size: tuple[int, int], frames: int, device: str, threads: int,
             max_gb: float) -> dict:
    """ms per frame and peak MiB of ``name``'s inference protocol on one synthetic video."""
    import functools
    import resource

    from voslab import inference, profile, zoo

    if max_gb > 0:  # a clean MemoryError / RuntimeError instead of the kernel's out-of-memory killer
        limit = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    recipe = zoo.get(name)
    cfg = _preset_at(name, preset, size, frames, seed=11)
    warm_cfg = _preset_at(name, preset, size, 3, seed=12)
    model = recipe.build_model(cfg).to(device).eval()
    video = recipe.dataset(cfg, "val")[0]
    warm = recipe.dataset(warm_cfg, "val")[0]
    with profile.measure(device) as memory:  # from here: the warm-up allocates what the timed run reuses
        inference.predict(model, warm, functools.partial(recipe.predict_sequence, cfg=warm_cfg))
        with profile.measure(device) as cost:
            inference.predict(model, video, functools.partial(recipe.predict_sequence, cfg=cfg))
    return {"model": name, "preset": preset, "size": list(size), "device": device, "threads": threads,
            "frames": frames, "ms_per_frame": cost.per_frame_ms(len(video)), "peak_mib": memory.peak_mib,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "backbone": cfg["model"].get("backbone", "-"), "task": recipe.task}


def metrics_speedup(repeat: int) -> dict:
    """J+F of voslab.metrics vs the official algorithm on bench_metrics.py's synthetic 480p case."""
    import bench_metrics

    r = bench_metrics.bench_case({"synthetic": bench_metrics.synthetic_sequence(50, 3, salt=0.0)}, repeat)
    return {"case": "synthetic 480x854, 3 objects, 50 frames", "official_ms": r["official J+F"],
            "voslab_ms": r["voslab J+F"], "speedup": r["official J+F"] / r["voslab J+F"],
            "max_abs_diff": max(r["J"], r["F"], r["stats"])}


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main() -> None:
    from voslab import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(zoo.available()), help="comma-separated zoo names")
    parser.add_argument("--presets", default="cpu,real", help="comma-separated presets (gpu: the paper's setting)")
    parser.add_argument("--sizes", default=SIZES, help="comma-separated HxW list")
    parser.add_argument("--frames", type=int, default=4, help="frames of the timed video")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-gb", type=float, default=12.0,
                        help="address-space limit of each measurement (GB; 0: none): a model that needs more is "
                             "reported as out of memory instead of being killed")
    parser.add_argument("--metrics-repeat", type=int, default=3, help="0 skips the metrics comparison")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes)
    devices = devices_to_run(args.device)

    print(f"inference per frame, whole protocol; torch {torch.__version__}, {args.threads} CPU threads, "
          f"{args.frames} timed frames after a 3-frame warm-up")
    print("| device | model | task | preset | backbone | params (M) | input HxW | ms / frame | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, start = [], time.perf_counter()
    for device in devices:
        for preset in args.presets.split(","):
            for name in args.models.split(","):
                for size in sizes:
                    r = measure_in_fresh_process(_measure, name, preset, size, args.frames, device, args.threads,
                                                  args.max_gb if device == "cpu" else 0)
                    rows.append({"model": name, "preset": preset, "size": list(size), "device": device, **r})
                    if "error" in r:
                        error = r["error"]
                        if "memory" in error.lower() or "alloc" in error.lower():
                            error = f"out of memory (> {args.max_gb:g} GB address space)"
                        r["error"] = error
                        print(f"| {device} | {name} | - | {preset} | - | - | {size[0]}x{size[1]} | {error} | - |")
                        continue
                    print(f"| {device} | {name} | {r['task']} | {preset} | {r['backbone']} | {r['params_m']:.2f} | "
                          f"{size[0]}x{size[1]} | {r['ms_per_frame']:.0f} | {_cell(r['peak_mib'], '.0f')} |",
                          flush=True)
    result = {"rows": rows, "seconds": time.perf_counter() - start}
    if args.metrics_repeat > 0:
        m = metrics_speedup(args.metrics_repeat)
        result["metrics"] = m
        print(f"\nmetrics, {m['case']}: official {m['official_ms']:.3f} ms vs voslab {m['voslab_ms']:.3f} ms per "
              f"(object, frame) for J+F: {m['speedup']:.1f}x faster, max abs diff {m['max_abs_diff']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
