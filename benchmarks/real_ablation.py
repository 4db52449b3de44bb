"""A mechanism on vs off on real video: several seeds of a model's `real` preset, per arm, scored on
the held-out DAVIS-2016 sequences, with the paired verdict of ``voslab.stats.paired_effect``.

Each arm is the preset with some ``--set`` overrides; every (arm, seed) is trained with
``Recipe.train`` and scored like ``voslab evaluate MODEL --preset real --dataset davis2016 --split val``.
All runs share one process, so the frozen backbone's features are computed once (the cache of
``voslab.models._real``; cached features are float16, so runs after the first see features rounded
to float16 where the first computed them in float32).

    python benchmarks/real_ablation.py adnet --seeds 0 1 2 \\
        --arm full --arm base:model.variant=base --arm no-flips:train.augment=False --out adnet-real.jsonl

The first arm is compared with each other one: per-video J-Mean and J&F-Mean (averaged over seeds),
a bootstrap interval over the held-out videos and the verdict. ``--out`` gets one JSON line per run
(appended; runs already there are skipped, so an interrupted comparison resumes).
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from voslab import presets, stats, zoo
from voslab.cli import apply_overrides
from voslab.inference import evaluate_model


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``"base:model.variant=base,train.steps=400"`` -> ("base", ["model.variant=base", "train.steps=400"])."""
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def run_one(recipe, cfg: dict, seed: int, data_root) -> dict:
    """Train one seed of ``cfg`` and score it on the held-out split -> a JSON-able record."""
    start = time.perf_counter()
    model, history = recipe.train(cfg, data_root, seed=seed, progress=False)
    train_s = time.perf_counter() - start
    results, _ = evaluate_model(model.eval(), recipe.dataset(cfg, "val", data_root),
                                functools.partial(recipe.predict_sequence, cfg=cfg), recipe.protocol("davis2016"),
                                progress=False)
    return {"train_s": round(train_s, 1), "final_loss": history.losses[-1], "summary": results.summary,
            "rows": results.rows}


def per_video(records: list[dict], key: str) -> list[dict]:
    """[{video: score} per seed]."""
    return [{row["sequence"]: row[key] for row in r["rows"]} for r in records]


def report(runs: dict[str, list[dict]]) -> None:
    print("| arm | seeds | J-Mean per seed | J-Mean | F-Mean | J&F-Mean | train min (mean) |")
    print("|---|---|---|---|---|---|---|")
    for arm, records in runs.items():
        mean = {k: np.mean([r["summary"][k] for r in records]) for k in ("J-Mean", "F-Mean", "J&F-Mean")}
        seeds = " / ".join(f"{r['summary']['J-Mean']:.3f}" for r in records)
        minutes = np.mean([r["train_s"] for r in records]) / 60
        print(f"| {arm} | {len(records)} | {seeds} | {mean['J-Mean']:.3f} | {mean['F-Mean']:.3f} | "
              f"{mean['J&F-Mean']:.3f} | {minutes:.1f} |")
    first, *others = runs
    for other in others:
        seeds = sorted({r["seed"] for r in runs[first]} & {r["seed"] for r in runs[other]})
        a = [r for r in runs[first] if r["seed"] in seeds]
        b = [r for r in runs[other] if r["seed"] in seeds]
        for key in ("J-Mean", "J&F-Mean"):
            effect = stats.paired_effect(per_video(a, key), per_video(b, key))
            print(f"{first} vs {other}, {key} ({len(seeds)} seeds): {effect.describe()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--preset", default="real")
    parser.add_argument("--arm", action="append", required=True,
                        help="NAME or NAME:SECTION.KEY=VALUE,... (repeatable; the first is compared with the others)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", default=None, help="a DAVIS-2016-layout folder (default: the preset's copy)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines, one per run (resumes)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = zoo.get(args.model)
    done = {}
    if args.out is not None and args.out.is_file():
        for line in args.out.read_text().splitlines():
            record = json.loads(line)
            done[(record["arm"], record["seed"])] = record
    arms = [parse_arm(a) for a in args.arm]
    runs: dict[str, list[dict]] = {name: [] for name, _ in arms}
    for seed in args.seeds:  # seed-major: an interrupted run still leaves paired seeds
        for name, sets in arms:
            record = done.get((name, seed))
            if record is None:
                cfg = apply_overrides(copy.deepcopy(presets.get(args.model, args.preset)), sets)
                record = {"arm": name, "set": sets, "seed": seed, **run_one(recipe, cfg, seed, args.data_root)}
                print(f"{name} seed {seed}: J-Mean {record['summary']['J-Mean']:.3f}  "
                      f"J&F-Mean {record['summary']['J&F-Mean']:.3f}  ({record['train_s'] / 60:.1f} min)", flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
            runs[name].append(record)
    report(runs)


if __name__ == "__main__":
    main()
