"""Time and memory of FEELVOS global/local matching at DAVIS 480p embedding size.

    python benchmarks/bench_matching.py [--size 120 214] [--channels 100] [--objects 1 3 10] [--repeats 2]

Embeddings at 1/4 of 480x854 (120x214 = 25,680 positions), C = 100, reference = the whole frame.
Each configuration runs in a fresh subprocess so that memory numbers do not mix.

Memory measure (honest, coarse): on CPU, the growth of the process's peak resident set size
(``resource.getrusage(...).ru_maxrss``) during the first call, after the inputs were made — i.e. the
extra memory the call needed at its peak, as the OS saw it (allocator caching may hide reuse).
On CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.
Times: median wall time of ``--repeats`` calls after that first call.

Variants: global ``chunked`` (default chunk: 2^24-float blocks) vs ``unchunked`` (chunk = all query
positions, i.e. the full distance matrix); local ``unfold`` (the library) vs ``naive`` (full distance
matrix masked to the window; skipped when its estimated need exceeds --naive-limit-gb).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def make_inputs(h: int, w: int, c: int, n_objects: int, device: str):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(1, c, h, w, generator=g).to(device)
    ref = torch.randn(1, c, h, w, generator=g).to(device)
    # objects = vertical stripes over a background half
    labels = torch.zeros(1, h, w, dtype=torch.long)
    stripes = torch.arange(w) * (n_objects - 1) // w + 1 if n_objects > 1 else torch.zeros(w, dtype=torch.long)
    labels[:, h // 2:, :] = stripes
    return query, ref, labels.to(device)


def run_one(kind: str, variant: str, n_objects: int, h: int, w: int, c: int, repeats: int, device: str) -> dict:
    from voslab.nn import matching as M

    query, ref, labels = make_inputs(h, w, c, n_objects, device)
    if kind == "global":
        chunk = h * w if variant == "unchunked" else None
        fn = lambda: M.global_matching(query, ref, labels, n_objects, chunk_size=chunk)  # noqa: E731
    elif variant == "unfold":
        fn = lambda: M.local_matching(query, ref, labels, n_objects, window=15)  # noqa: E731
    else:
        fn = lambda: M.local_matching_naive(query, ref, labels, n_objects, window=15)  # noqa: E731
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        first = time.perf_counter() - start
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return {"kind": kind, "variant": variant, "objects": n_objects, "first_s": first,
            "median_s": statistics.median(times) if times else first, "peak_mb": peak / 2**20,
            "shape": list(out.shape)}


def naive_local_gb(h: int, w: int, n_objects: int) -> float:
    """Rough need of local_matching_naive per (HW)^2 entry: float distances (4 B), int64 dy/dx offsets
    (16 B), window masks (~4 B), and per object a mask and a masked float copy (5 B). Measured at
    120x214, K=1: 18.9 GB peak, this formula: 19 GB."""
    n = (h * w) ** 2
    return (4 + 16 + 4 + 5 * n_objects) * n / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(120, 214))
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--objects", type=int, nargs="+", default=(1, 3, 10))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-limit-gb", type=float, default=16.0)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "VARIANT", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    h, w = args.size
    if args.one:
        kind, variant, k = args.one
        print(json.dumps(run_one(kind, variant, int(k), h, w, args.channels, args.repeats, args.device)))
        return 0

    print(f"# matching at {h}x{w} embeddings, C={args.channels}, device={args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print("| kind | variant | objects | first call (s) | median (s) | peak extra memory (MB) |")
    print("|---|---|---|---|---|---|")
    for kind, variants in (("global", ("chunked", "unchunked")), ("local", ("unfold", "naive"))):
        for k in args.objects:
            for variant in variants:
                if variant == "naive" and naive_local_gb(h, w, k) > args.naive_limit_gb:
                    print(f"| {kind} | {variant} | {k} | skipped: needs ~{naive_local_gb(h, w, k):.0f} GB | | |")
                    continue
                cmd = [sys.executable, __file__, "--size", str(h), str(w), "--channels", str(args.channels),
                       "--repeats", str(args.repeats), "--device", args.device, "--one", kind, variant, str(k)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"| {kind} | {variant} | {k} | failed: {done.stderr.strip().splitlines()[-1]} | | |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {kind} | {variant} | {k} | {r['first_s']:.2f} | {r['median_s']:.2f} | {r['peak_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
