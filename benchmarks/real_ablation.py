"""A mechanism on vs off on real video: several seeds of a model's `real` preset, per arm, scored on
the held-out DAVIS-2016 sequences, with the paired verdict of ``voslab.stats.paired_effect``.

Each arm is the preset with some ``--set`` overrides; every (arm, seed) is trained with
``Recipe.train`` and scored like ``voslab evaluate MODEL --preset real --dataset davis2016 --split val``.
All runs share one process, so the frozen backbone's features are computed once (the cache of
``voslab.models._real``; cached features are float16, so runs after the first see features rounded
to float16 where the first computed them in float32).

    python benchmarks/real_ablation.py adnet --seeds 0 1 2 \\
        --arm full --arm base:model.variant=base --arm no-flips:train.augment=False --out adnet-real.jsonl

``--eval-arm NAME:eval.KEY=VALUE,...`` scores the first arm's trained model of every seed again with
inference-only overrides (test-time mirror, a post-processing heuristic): no retraining, and the
pairing is exact (same weights). Weights are cached like ``voslab train`` caches them
(``Recipe.load_or_train``), so seed 0 of an unchanged preset is the checkpoint the CLI uses.

The first arm is compared with each other one: per-video J-Mean and J&F-Mean (averaged over seeds),
a bootstrap interval over the held-out videos and the verdict. ``--out`` gets one JSON line per run
(appended; runs already there are skipped, so an interrupted comparison resumes).
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import re
from pathlib import Path

import numpy as np
import torch

from voslab import presets, stats, zoo
from voslab.cli import apply_overrides
from voslab.inference import evaluate_model


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``"base:model.variant=base,train.steps=400"`` -> ("base", ["model.variant=base", "train.steps=400"]);
    a comma inside a value (``eval.scales=(0.75,1.0)``) does not split."""
    name, _, sets = text.partition(":")
    return name, [s for s in re.split(r",(?=[\w.]+=)", sets) if s]


def train_one(recipe, cfg: dict, seed: int, data_root) -> tuple:
    """Load or train (and cache) one seed of ``cfg`` -> (model in eval mode, training facts)."""
    model, history = recipe.load_or_train(cfg, data_root, seed=seed, progress=False)
    return model.eval(), {"train_s": round(history.seconds, 1), "final_loss": history.losses[-1]}


def score(recipe, model, cfg: dict, data_root) -> dict:
    """Score ``model`` on the held-out split with ``cfg``'s inference settings -> a JSON-able record."""
    results, _ = evaluate_model(model, recipe.dataset(cfg, "val", data_root),
                                functools.partial(recipe.predict_sequence, cfg=cfg), recipe.protocol("davis2016"),
                                progress=False)
    return {"summary": results.summary, "rows": results.rows}


def check_eval_only(name: str, sets: list[str]) -> None:
    """An eval arm may only change the ``eval`` section (anything else would need retraining)."""
    bad = [s for s in sets if not s.startswith("eval.")]
    if bad:
        raise SystemExit(f"--eval-arm {name}: {bad} are not eval.* settings; use --arm to retrain with them")


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
    parser.add_argument("--eval-arm", action="append", default=[],
                        help="NAME:eval.KEY=VALUE,... : the first arm's models scored with other inference settings")
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
    eval_arms = [parse_arm(a) for a in args.eval_arm]
    for name, sets in eval_arms:
        check_eval_only(name, sets)
    runs: dict[str, list[dict]] = {name: [] for name, _ in arms + eval_arms}
    for seed in args.seeds:  # seed-major: an interrupted run still leaves paired seeds
        for i, (name, sets) in enumerate(arms):
            cfg = apply_overrides(copy.deepcopy(presets.get(args.model, args.preset)), sets)
            todo = [(name, sets, cfg)] + ([(e, sets + e_sets, apply_overrides(copy.deepcopy(cfg), e_sets))
                                           for e, e_sets in eval_arms] if i == 0 else [])
            todo = [t for t in todo if (t[0], seed) not in done]
            if todo:
                model, facts = train_one(recipe, cfg, seed, args.data_root)
            for arm, arm_sets, arm_cfg in todo:
                record = {"arm": arm, "set": arm_sets, "seed": seed, **facts,
                          **score(recipe, model, arm_cfg, args.data_root)}
                print(f"{arm} seed {seed}: J-Mean {record['summary']['J-Mean']:.3f}  "
                      f"J&F-Mean {record['summary']['J&F-Mean']:.3f}  ({record['train_s'] / 60:.1f} min)", flush=True)
                done[(arm, seed)] = record
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
            for arm, *_ in [(name,)] + (eval_arms if i == 0 else []):
                runs[arm].append(done[(arm, seed)])
    report(runs)


if __name__ == "__main__":
    main()
