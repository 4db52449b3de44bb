"""The ``voslab`` command line (also ``python -m voslab``).

    voslab list                                        models, tasks and presets
    voslab generate --split train --root data/syn --preset smoke
    voslab train adnet --preset cpu                    -> weights in the voslab cache
    voslab evaluate adnet --ckpt W.pt --preset cpu     -> per-sequence table and J&F
    voslab predict adnet --ckpt W.pt --input video.mp4 --out masks/ --overlay-video overlay.mp4

User errors (a wrong path, model or preset) print one message and exit with status 2.
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from voslab.errors import TrainingDivergedError, VOSDataError

__all__ = ["main", "build_parser", "UsageError"]


class UsageError(Exception):
    """A mistake in the command line that the user can fix (reported without a traceback)."""


# ----------------------------------------------------------------------------- shared helpers
def _recipe(name: str):
    from voslab import zoo

    try:
        return zoo.get(name)
    except zoo.UnknownModelError as e:
        raise UsageError(f"{e} (see `voslab list`)") from None


def _preset(recipe, name: str) -> dict[str, Any]:
    """``presets.get(model, preset)``, checked against the model's preset names."""
    from voslab import presets

    if name not in recipe.presets:
        raise UsageError(f"model {recipe.name!r} has no preset {name!r}; choose one of {sorted(recipe.presets)}")
    return presets.get(recipe.name, name)


def _device(name: str):
    from voslab.utils import select_device

    return select_device(name)


def _load_model(recipe, cfg: dict[str, Any], ckpt: str, device: str):
    from voslab.checkpoints import load_weights

    model = recipe.build_model(cfg)
    load_weights(model, ckpt)
    return model.to(_device(device)).eval()


def _predict_fn(recipe, cfg: dict[str, Any]):
    return functools.partial(recipe.predict_sequence, cfg=cfg)


# ----------------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    from voslab import zoo

    names = zoo.available()
    if not names:
        print("no models registered")
        return 0
    for name in names:
        try:
            recipe = zoo.get(name)
        except Exception as e:  # a paper module under construction must not break `voslab list`
            print(f"{name:10s} (cannot import: {type(e).__name__}: {e})")
            continue
        print(f"{name:10s} {recipe.task:13s} {recipe.module.__name__}")
        for preset, cfg in recipe.presets.items():
            print(f"  {preset:7s} {_describe_preset(cfg)}")
    return 0


def _describe_preset(cfg: dict[str, Any]) -> str:
    train, model = cfg.get("train", {}), cfg.get("model", {})
    parts = [f"{k}={train[k]}" for k in ("steps", "batch_size", "lr") if k in train]
    if "size" in train:
        parts.append("size={}x{}".format(*train["size"]))
    if "backbone" in model:
        parts.append(f"backbone={model['backbone']}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    from voslab.data import synthetic
    from voslab.models._common import data_config

    config: dict[str, Any] = {}
    if args.preset:
        config.update(data_config(_preset(_recipe(args.model), args.preset), args.split))
    explicit = {"n_videos": args.n_videos, "n_frames": args.n_frames, "difficulty": args.difficulty,
                "seed": args.seed, "size": tuple(args.size) if args.size else None}
    config.update({k: v for k, v in explicit.items() if v is not None})
    root = synthetic.generate(args.root, split=args.split, **config)
    print(f"wrote synthetic split {args.split!r} to {root}")
    return 0


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from voslab import checkpoints, engine

    recipe = _recipe(args.model)
    cfg = _preset(recipe, args.preset)
    train_cfg = cfg.setdefault("train", {})
    if args.steps is not None:
        train_cfg["steps"] = args.steps
    steps = int(train_cfg.get("steps", 1000))
    key = recipe.cache_key(cfg, args.data_root, seed=args.seed)
    out = Path(args.out) if args.out else checkpoints.checkpoint_path(recipe.name, key)
    ckpt_dir = out.with_name(out.stem + ".train")
    ckpt_every = args.ckpt_every if args.ckpt_every is not None else max(1, steps // 10)

    start = time.perf_counter()
    model, history = recipe.train(
        cfg, args.data_root, seed=args.seed, device=args.device, ckpt_dir=ckpt_dir, ckpt_every=ckpt_every,
        resume=args.resume, progress=args.progress, log_every=args.log_every,
    )
    seconds = time.perf_counter() - start
    if not engine.is_main_process():  # under torchrun only rank 0 writes and reports
        return 0
    meta = checkpoints.training_metadata(recipe.name, key, history.seconds, history)
    root = None if args.data_root is None else str(args.data_root)
    checkpoints.save_model(out, model, cfg, preset=args.preset, seed=args.seed, data_root=root, **meta)
    final = history.losses[-1] if history.losses else float("nan")
    print(f"trained {recipe.name} ({args.preset}) for {steps} steps in {seconds:.1f} s, final loss {final:.4f}")
    print(f"weights: {out}")
    return 0


# ----------------------------------------------------------------------------- evaluate
def _eval_dataset(args: argparse.Namespace, recipe, cfg: dict[str, Any]):
    """(dataset, protocol) for ``--dataset`` / ``--data-root`` / ``--split``."""
    if args.dataset != "synthetic" and args.data_root is None:
        raise UsageError(f"--dataset {args.dataset} needs --data-root (the folder holding JPEGImages/)")
    year = 2017 if args.dataset == "davis2017" else None
    return recipe.dataset(cfg, args.split, args.data_root, year=year), recipe.protocol(args.dataset)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from voslab.inference import evaluate_model, save_predictions
    from voslab.utils import write_json

    recipe = _recipe(args.model)
    cfg = _preset(recipe, args.preset)
    args.split = args.split or cfg.get("eval", {}).get("split", "val")
    dataset, protocol = _eval_dataset(args, recipe, cfg)
    model = _load_model(recipe, cfg, args.ckpt, args.device)
    start = time.perf_counter()
    results, predictions = evaluate_model(model, dataset, _predict_fn(recipe, cfg), protocol,
                                          progress=not args.quiet, max_sequences=args.max_sequences)
    seconds = time.perf_counter() - start
    print(results.to_markdown())
    print(f"J&F-Mean {results.summary['J&F-Mean']:.3f}  ({len(predictions)} sequences, {seconds:.1f} s)")
    if args.save_masks:
        print(f"masks: {save_predictions(args.save_masks, predictions)}")
    if args.json:
        write_json(args.json, {"model": recipe.name, "preset": args.preset, "ckpt": str(args.ckpt),
                                "dataset": args.dataset, "split": args.split, "seconds": round(seconds, 3),
                                **results.to_dict()})
        print(f"results: {args.json}")
    return 0


# ----------------------------------------------------------------------------- predict
def _input_sequence(path: Path, first_mask: str | None, workdir: Path):
    """A `Sequence` from a folder of frames or a video file (frames extracted into ``workdir``)."""
    from voslab.data.davis import IMAGE_SUFFIXES
    from voslab.data.sequence import Sequence

    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise UsageError(f"--input {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif path.is_file():
        from voslab.data.video import video_to_sequence

        frames = video_to_sequence(path, workdir).frame_paths
    else:
        raise FileNotFoundError(f"--input {path} does not exist; give a folder of frames or a video file")
    masks = [first_mask] + [None] * (len(frames) - 1) if first_mask else None
    return Sequence(path.stem if path.is_file() else path.name, frames, masks)


def cmd_predict(args: argparse.Namespace) -> int:
    from voslab.inference import predict, save_predictions

    recipe = _recipe(args.model)
    cfg = _preset(recipe, args.preset)
    if recipe.task == "semi" and not args.first_mask:
        raise UsageError(f"{recipe.name} is semi-supervised: give the first frame's objects with --first-mask PNG")
    model = _load_model(recipe, cfg, args.ckpt, args.device)
    with tempfile.TemporaryDirectory(prefix="voslab-frames-") as workdir:
        seq = _input_sequence(Path(args.input), args.first_mask, Path(workdir))
        start = time.perf_counter()
        masks = predict(model, seq, _predict_fn(recipe, cfg))  # (T, H, W) uint8
        seconds = time.perf_counter() - start
        out = save_predictions(args.out, {seq.name: masks})
        print(f"{len(seq)} frames in {seconds:.1f} s; masks: {out / seq.name}")
        if args.overlay_video:
            from voslab.viz import write_overlay_video

            write_overlay_video(args.overlay_video, seq.frames(), masks, fps=args.fps)
            print(f"overlay video: {args.overlay_video}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voslab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="voslab: train, evaluate and run the video object segmentation models of five papers.",
        epilog="examples:\n  voslab list\n  voslab train adnet --preset smoke\n"
               "  voslab evaluate adnet --ckpt adnet.pt --preset smoke --json scores.json\n"
               "Run `voslab <command> --help` for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list the models and their presets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("generate", help="write a synthetic dataset split in the DAVIS layout",
                       description="Write a synthetic split (frames, instance masks, binary masks, flow) "
                                   "in the DAVIS layout. Sizes come from --preset or the explicit options "
                                   "(explicit options win).")
    p.add_argument("--root", required=True, help="output folder (DAVIS layout)")
    p.add_argument("--split", default="train", help="split name written to ImageSets/ (default: train)")
    p.add_argument("--preset", help="take the sizes from this preset of --model (smoke, cpu, gpu)")
    p.add_argument("--model", default="adnet", help="model whose preset to use (default: adnet)")
    p.add_argument("--n-videos", type=int, help="number of videos")
    p.add_argument("--n-frames", type=int, help="frames per video")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="frame size")
    p.add_argument("--difficulty", type=float, help="0 (easy) .. 1 (default) and above")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's, else 0)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train a model with a preset",
                       description="Train MODEL with a preset. Without --data-root the preset's synthetic "
                                   "data is generated (once, into the cache). Checkpoints go to "
                                   "<out>.train/ so an interrupted run continues with --resume.")
    _model_args(p)
    p.add_argument("--data-root", help="DAVIS-layout training data (default: the preset's synthetic set)")
    p.add_argument("--steps", type=int, help="override the preset's number of training steps")
    p.add_argument("--out", help="weights file (default: the voslab cache, where notebooks look)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.train/last.pt if present")
    p.add_argument("--ckpt-every", type=int, help="checkpoint period in steps (default: steps/10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "log", "none"],
                   help="progress display (default: bar in a terminal, log lines otherwise)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines (default: 10)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a trained model on a dataset split",
                       description="Run MODEL's inference protocol on every sequence of a split, print the "
                                   "per-sequence table and the overall J&F.")
    _model_args(p)
    p.add_argument("--ckpt", required=True, help="weights file written by `voslab train` (or load_or_train)")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "davis2016", "davis2017"],
                   help="dataset kind (default: synthetic)")
    p.add_argument("--data-root", help="dataset folder (default for synthetic: the preset's cached set)")
    p.add_argument("--split", help="split to evaluate (default: the preset's eval split, usually val)")
    p.add_argument("--max-sequences", type=int, help="evaluate only the first N sequences")
    p.add_argument("--save-masks", metavar="DIR", help="write the predicted masks as DAVIS PNGs")
    p.add_argument("--json", metavar="PATH", help="write summary and per-sequence scores as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment a folder of frames or a video file",
                       description="Segment a video (a folder of frames or a video file read with decord) "
                                   "and write DAVIS-palette masks, optionally an overlay video.")
    _model_args(p)
    p.add_argument("--ckpt", required=True, help="weights file written by `voslab train`")
    p.add_argument("--input", required=True, help="folder of frames (sorted by name) or a video file")
    p.add_argument("--out", required=True, help="output folder for the masks")
    p.add_argument("--first-mask", help="first-frame object mask (PNG; semi-supervised models)")
    p.add_argument("--overlay-video", metavar="MP4", help="also write the frames with the masks overlaid")
    p.add_argument("--fps", type=float, default=12, help="overlay video frame rate (default: 12)")
    p.set_defaults(func=cmd_predict)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name (see `voslab list`)")
    p.add_argument("--preset", default="cpu", help="smoke (CI), cpu (laptop) or gpu (paper); default: cpu")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, ...")


# ----------------------------------------------------------------------------- entry point
USER_ERRORS = (UsageError, VOSDataError, FileNotFoundError, NotADirectoryError, TrainingDivergedError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"voslab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (continue with --resume)" if args.command == "train" else ""
        print(f"voslab {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
