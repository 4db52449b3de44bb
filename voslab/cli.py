"""The ``voslab`` command line (also ``python -m voslab``).

    voslab list                                        models, tasks and presets
    voslab generate --split train --root data/syn --preset smoke
    voslab train adnet --preset cpu                    -> weights in the voslab cache
    voslab evaluate adnet --ckpt W.pt --preset cpu     -> per-sequence table and J&F
    voslab predict adnet --ckpt W.pt --input video.mp4 --out masks/ --overlay-video overlay.mp4

Real video (the ``real`` presets: ImageNet MobileNetV2 on DAVIS-2016 frames at 240p; without
--data-root they read the shared DAVIS copy, see voslab.models._common.BASE_PRESETS):

    voslab train adnet --preset real --data-root DAVIS
    voslab evaluate adnet --preset real --dataset davis2016 --data-root DAVIS --split val
    voslab predict video.mp4 --model adnet --preset real   -> video-adnet/ (masks + overlay.mp4)

Change a preset value with --set (repeatable; cached separately, so give it to train and evaluate):

    voslab train adnet --preset real --set model.variant=base     AD-Net without anchor diffusion

Without --ckpt, evaluate and predict use the weights `voslab train` cached for the preset.

User errors (a wrong path, model or preset) print one message and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from voslab.errors import TrainingDivergedError, VOSDataError

__all__ = ["main", "build_parser", "apply_overrides", "UsageError"]


class UsageError(Exception):
    """A mistake in the command line that the user can fix (reported without a traceback)."""


# ----------------------------------------------------------------------------- shared helpers
def _recipe(name: str):
    from voslab import zoo

    try:
        return zoo.get(name)
    except zoo.UnknownModelError as e:
        raise UsageError(f"{e} (see `voslab list`)") from None


def _preset(recipe, name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``presets.get(model, preset)``, checked against the model's preset names, with the
    ``--set SECTION.KEY=VALUE`` overrides applied (see :func:`apply_overrides`)."""
    from voslab import presets

    if name not in recipe.presets:
        raise UsageError(f"model {recipe.name!r} has no preset {name!r}; choose one of {sorted(recipe.presets)}")
    return apply_overrides(presets.get(recipe.name, name), overrides)


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``["model.variant=base", "train.finetune.trainable_blocks=2", ...]`` to a preset dict
    (in place; returned). A value is read as a Python literal (``2``, ``1e-3``, ``(240, 427)``,
    ``True``, ``None``) when it parses as one, else kept as a string. Only existing sections may be
    changed (``data``, ``model``, ``train``, ``eval``); the model's own checks reject unknown keys.
    The overridden preset is a different cache key: train and evaluate with the same ``--set``."""
    import ast

    for item in overrides or ():
        key, sep, text = item.partition("=")
        path = [part for part in key.strip().split(".") if part]
        if not sep or len(path) < 2:
            raise UsageError(f"--set {item!r}: use SECTION.KEY=VALUE, e.g. --set model.variant=base")
        if path[0] not in cfg:
            raise UsageError(f"--set {item!r}: the preset has no section {path[0]!r}; sections: {sorted(cfg)}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        node = cfg
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {item!r}: {part!r} is {child!r}, not a section")
            node = child
        node[path[-1]] = value
    return cfg


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


def _data_root(cfg: dict[str, Any], data_root: str | None):
    """--data-root for the cache key: None for the preset's own data, else the absolute path."""
    from voslab.models._common import canonical_root

    return canonical_root(cfg, data_root)


def _checkpoint(args: argparse.Namespace, recipe, cfg: dict[str, Any], root) -> Path:
    """--ckpt, else the weights `voslab train MODEL --preset P [--data-root root]` cached (seed 0)."""
    if args.ckpt:
        return Path(args.ckpt)
    from voslab import checkpoints

    sets = list(getattr(args, "set", None) or ())
    training_sets = [item for item in sets if not item.strip().startswith("eval.")]
    roots = [root] if root is None else [root, None]  # --data-root, then the preset's own data
    # --set eval.* changes inference only: the cache key (Recipe.cache_key) leaves it out
    for key in (recipe.cache_key(cfg, r) for r in roots):
        path = checkpoints.checkpoint_path(recipe.name, key)
        if path.is_file():
            print(f"weights: {path}")
            return path
    shown = "".join(f" --set {item}" for item in sets)
    train_sets = "".join(f" --set {item}" for item in training_sets)
    raise UsageError(f"no --ckpt given and no cached weights for {recipe.name} --preset {args.preset}{shown}: train "
                     f"them with `voslab train {recipe.name} --preset {args.preset}{train_sets}` (add the same "
                     "--data-root), or pass --ckpt W.pt")


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
    from voslab.models._common import data_config, real_data_name

    config: dict[str, Any] = {}
    if args.preset:
        cfg = _preset(_recipe(args.model), args.preset)
        if real_data_name(cfg):
            raise UsageError(f"preset {args.preset!r} trains on real DAVIS frames: it has no synthetic data to generate")
        config.update(data_config(cfg, args.split))
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
    cfg = _preset(recipe, args.preset, args.set)
    train_cfg = cfg.setdefault("train", {})
    if args.steps is not None:
        train_cfg["steps"] = args.steps
    steps = int(train_cfg.get("steps", 1000))
    args.data_root = _data_root(cfg, args.data_root)
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
    from voslab.models._common import real_data_name

    own_data = real_data_name(cfg)  # a real preset reads its DAVIS copy by default
    if args.dataset != "synthetic" and args.data_root is None and not own_data:
        raise UsageError(f"--dataset {args.dataset} needs --data-root (the folder holding JPEGImages/)")
    year = 2017 if args.dataset == "davis2017" else None
    return recipe.dataset(cfg, args.split, args.data_root, year=year), recipe.protocol(args.dataset)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from voslab.inference import evaluate_model, save_predictions
    from voslab.utils import write_json

    recipe = _recipe(args.model)
    cfg = _preset(recipe, args.preset, args.set)
    args.split = args.split or cfg.get("eval", {}).get("split", "val")
    args.data_root = _data_root(cfg, args.data_root)
    dataset, protocol = _eval_dataset(args, recipe, cfg)
    args.ckpt = _checkpoint(args, recipe, cfg, args.data_root)
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
def _input_sequence(path: Path, first_mask: str | None, workdir: Path, size: tuple[int, int] | None = None):
    """A `Sequence` from a folder of frames or a video file (streamed by decord, chunk by chunk, into
    JPEGs in ``workdir``; resized to ``size`` while decoding when given)."""
    from voslab.data.davis import IMAGE_SUFFIXES
    from voslab.data.sequence import Sequence

    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise UsageError(f"--input {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif path.is_file():
        from voslab.data.video import video_to_sequence

        frames = video_to_sequence(path, workdir, size=size).frame_paths
    else:
        raise FileNotFoundError(f"--input {path} does not exist; give a folder of frames or a video file")
    masks = [first_mask] + [None] * (len(frames) - 1) if first_mask else None
    return Sequence(path.stem if path.is_file() else path.name, frames, masks)


def _predict_targets(args: argparse.Namespace) -> tuple[str, Path, Path, Path | None]:
    """(model, input, out folder, overlay video or None) from either form of `voslab predict`:
    ``predict VIDEO --model NAME`` (out defaults to ``<video>-<model>/``, with ``overlay.mp4`` in it)
    or ``predict NAME --input VIDEO --out DIR`` (an overlay only with --overlay-video)."""
    if args.model:
        if args.input:
            raise UsageError(f"give the input once: `voslab predict {args.target} --model {args.model}` "
                             f"(the positional argument is the input when --model is given)")
        model, source = args.model, Path(args.target)
        out = Path(args.out) if args.out else Path(f"{source.stem}-{model}")
        overlay = out / "overlay.mp4" if args.overlay_video is None else args.overlay_video
    else:
        if not args.input:
            raise UsageError(f"what should {args.target!r} segment? `voslab predict VIDEO --model NAME`, or "
                             f"`voslab predict {args.target} --input VIDEO --out DIR`")
        if not args.out:
            raise UsageError("--out DIR is required with --input (or use `voslab predict VIDEO --model NAME`)")
        model, source, out, overlay = args.target, Path(args.input), Path(args.out), args.overlay_video
    if overlay is not None and str(overlay).lower() == "none":
        overlay = None
    return model, source, out, None if overlay is None else Path(overlay)


def cmd_predict(args: argparse.Namespace) -> int:
    name, source, out_dir, overlay = _predict_targets(args)
    recipe = _recipe(name)
    cfg = _preset(recipe, args.preset, args.set)
    if recipe.task == "semi" and not args.first_mask:
        raise UsageError(f"{recipe.name} is semi-supervised: give the first frame's objects with --first-mask PNG")
    model = _load_model(recipe, cfg, _checkpoint(args, recipe, cfg, None), args.device)
    with tempfile.TemporaryDirectory(prefix="voslab-frames-") as workdir:
        seq = _input_sequence(source, args.first_mask, Path(workdir), tuple(args.size) if args.size else None)
        if args.first_mask:
            _check_first_mask(Path(args.first_mask), seq, source, semi=recipe.task == "semi")
        fps = args.fps or (_video_fps(source) if source.is_file() else 12)
        start = time.perf_counter()
        with _staged_outputs(out_dir, overlay) as (stage, staged_overlay):
            _predict_to_files(model, seq, recipe, cfg, stage / seq.name, staged_overlay, fps)
        seconds = time.perf_counter() - start
        print(f"{len(seq)} frames in {seconds:.1f} s; masks: {out_dir / seq.name}")
        if overlay is not None:
            print(f"overlay video: {overlay}")
    return 0


def _check_first_mask(path: Path, seq, source: Path, semi: bool) -> None:
    """A clear error for a --first-mask that cannot be used: unreadable, wrong size, no object."""
    import numpy as np

    from voslab.data.io import read_mask

    try:
        mask = read_mask(path)
    except (OSError, ValueError) as err:
        raise VOSDataError(f"--first-mask {path}: cannot read it as an image ({err}); give a PNG mask") from err
    height, width = seq.size
    if mask.shape != (height, width):
        raise VOSDataError(f"--first-mask {path} is {mask.shape[1]}x{mask.shape[0]} but the frames of {source} are "
                           f"{width}x{height}: draw the mask on the first frame at the video's size (or resize it "
                           f"to {width}x{height}; with --size H W, at that size)")
    if semi and not np.any((mask > 0) & (mask != 255)):
        raise VOSDataError(f"--first-mask {path} marks no object (all background/void): paint each object to "
                           "track with its id (1, 2, ...) on the first frame")


_OWNER = ".owner.json"  # in a staging folder: the process writing it, so a later run can tell it is abandoned


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_abandoned_stages(out_dir: Path) -> None:
    """Remove the staging folders (and staged overlays) of earlier runs into ``out_dir`` whose process
    is gone: a run killed with SIGKILL (or by the out-of-memory killer) cannot clean up after itself."""
    import shutil

    for stage in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            owner = json.loads((stage / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if owner.get("host") != socket.gethostname() or _process_alive(int(owner.get("pid", -1))):
            continue
        shutil.rmtree(stage, ignore_errors=True)
        if owner.get("overlay"):
            Path(owner["overlay"]).unlink(missing_ok=True)
        print(f"removed {stage}, left by an interrupted run (process {owner.get('pid')} is gone)", file=sys.stderr)


@contextlib.contextmanager
def _staged_outputs(out_dir: Path, overlay: Path | None):
    """Write into a temporary folder next to ``out_dir`` (and a temporary file next to ``overlay`` when
    it lies outside it); move everything into place only when the block succeeds, remove it otherwise,
    so an error never leaves half-written results. Yields (staging folder, staged overlay path or None)."""
    import shutil

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staged_overlay = outside = None
    if overlay is not None:
        try:
            staged_overlay = stage / overlay.resolve().relative_to(out_dir.resolve())
        except ValueError:  # the overlay goes elsewhere: stage it next to its target
            overlay.parent.mkdir(parents=True, exist_ok=True)
            outside = staged_overlay = overlay.with_name(f".{overlay.stem}.partial{overlay.suffix}")
    (stage / _OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                            "overlay": None if outside is None else str(outside.resolve())}))
    try:
        yield stage, staged_overlay
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if outside is not None:
            outside.unlink(missing_ok=True)
        raise
    out_dir.mkdir(parents=True, exist_ok=True)
    (stage / _OWNER).unlink()
    for entry in stage.iterdir():
        target = out_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.replace(target)
    stage.rmdir()
    if outside is not None:
        outside.replace(overlay)


def _predict_to_files(model, seq, recipe, cfg: dict[str, Any], mask_dir: Path, overlay: Path | None,
                      fps: float) -> None:
    """Segment ``seq`` and write its masks (``mask_dir/00000.png ...``) and overlay video as they come:
    streamed when the recipe has ``predict_stream`` (memory independent of the video's length), else
    from ``predict_sequence``'s whole (T, H, W) result."""
    from tqdm.auto import tqdm

    from voslab.data.davis import write_masks
    from voslab.inference import iter_predictions, predict
    from voslab.viz import OverlayVideoWriter

    if recipe.predict_stream is not None:
        masks = iter_predictions(model, seq, functools.partial(recipe.predict_stream, cfg=cfg))
    else:
        masks = enumerate(predict(model, seq, _predict_fn(recipe, cfg)))  # (T, H, W) uint8, all at once
    writer = None if overlay is None else OverlayVideoWriter(overlay, fps=fps)
    try:
        with tqdm(total=len(seq), desc=f"predict {seq.name}", unit="frame", file=sys.stderr, dynamic_ncols=True,
                  disable=None, leave=False) as bar:
            for t, mask in masks:
                write_masks(mask_dir, [mask], names=[f"{t:05d}"])
                if writer is not None:
                    writer.append(seq.frame(t), mask)
                bar.update(1)
    finally:
        if writer is not None:
            writer.close()


def _video_fps(path: Path) -> float:
    from voslab.data.video import VideoReader

    return VideoReader(path).fps


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
    p.add_argument("--data-root", help="DAVIS-layout training data, official (JPEGImages/480p) or flat layout "
                                       "(default: the preset's synthetic set; a real preset's shared DAVIS copy)")
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
    p.add_argument("--ckpt", help="weights file written by `voslab train` or load_or_train (default: the weights "
                                  "`voslab train` cached for the preset and --data-root)")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "davis2016", "davis2017"],
                   help="dataset kind (default: synthetic)")
    p.add_argument("--data-root", help="dataset folder (default: the preset's data: its cached synthetic set, "
                                       "or for a real preset the shared DAVIS copy)")
    p.add_argument("--split", help="split to evaluate (default: the preset's eval split, usually val)")
    p.add_argument("--max-sequences", type=int, help="evaluate only the first N sequences")
    p.add_argument("--save-masks", metavar="DIR", help="write the predicted masks as DAVIS PNGs")
    p.add_argument("--json", metavar="PATH", help="write summary and per-sequence scores as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment a folder of frames or a video file",
                       usage="voslab predict VIDEO --model MODEL [options]\n"
                             "       voslab predict MODEL --input VIDEO --out DIR [options]",
                       description="Segment a video (a folder of frames or a video file streamed by decord) "
                                   "and write DAVIS-palette masks and an overlay video. Example: "
                                   "`voslab predict clip.mp4 --model adnet --preset real` writes "
                                   "clip-adnet/clip/00000.png ... and clip-adnet/overlay.mp4.")
    p.add_argument("target", metavar="VIDEO|MODEL",
                   help="the video file or frame folder to segment (with --model), or the model name (with --input)")
    p.add_argument("--model", help="model name (see `voslab list`); the positional argument is then the input")
    p.add_argument("--preset", default="cpu",
                   help="smoke (CI), cpu (laptop), real (ImageNet backbone, DAVIS-trained) or gpu (paper); default: cpu")
    _set_arg(p)
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--ckpt", help="weights file (default: the weights `voslab train` cached for the preset)")
    p.add_argument("--input", help="folder of frames (sorted by name) or a video file (the MODEL form)")
    p.add_argument("--out", help="output folder for the masks (default with --model: <input name>-<model>/)")
    p.add_argument("--first-mask", help="first-frame object mask (PNG; semi-supervised models)")
    p.add_argument("--overlay-video", metavar="MP4",
                   help="write the frames with the masks overlaid (default with --model: <out>/overlay.mp4; "
                        "'none' skips it)")
    p.add_argument("--fps", type=float, help="overlay video frame rate (default: the video's, 12 for frames)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="decode a video file at this size (default: its own; masks are written at this size)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("assign", help="course assignments: student copies of the notebooks, and a grader",
                       description="`voslab assign student notebooks/ student/` writes copies without the "
                                   "solution cells; `voslab assign grade submissions/ --out grades/` runs every "
                                   "submitted notebook (smoke preset) and writes grades.csv, grades.md, mistakes.md.")
    assign = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = assign.add_parser("student", help="write student copies (solution cells removed)")
    a.add_argument("source", nargs="+", help="teacher notebooks, or folders of them")
    a.add_argument("out", help="folder for the student copies")
    a.set_defaults(func=cmd_assign_student)
    a = assign.add_parser("grade", help="run and score submitted notebooks")
    a.add_argument("submissions", help="one folder per student holding their notebooks, or <student>__<nb>.ipynb files")
    a.add_argument("--out", default="grades", help="folder for grades.csv, grades.md, mistakes.md (default: grades)")
    a.add_argument("--preset", default="smoke", help="preset the notebooks run with (default: smoke)")
    a.add_argument("--timeout", type=int, default=300, help="seconds per cell before a notebook is stopped (default: 300)")
    a.set_defaults(func=cmd_assign_grade)

    p = sub.add_parser("sweep", help="run a notebook over a grid of parameters (papermill)",
                       description="Run NOTEBOOK once per combination of the -p values, one folder per run under "
                                   "--out (executed notebook, results JSON, run.json). Done runs are skipped, so an "
                                   "interrupted sweep resumes; a failed run is recorded and the others go on. "
                                   "Example: voslab sweep notebooks/03_adnet.ipynb -p PRESET cpu -p SEED 0 1 2 --out runs/")
    p.add_argument("notebook", help="the notebook to run (its parameters cell declares what -p may set)")
    p.add_argument("-p", "--parameter", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter and one or more values (Python literals: 1, 0.5, True, None, [0, 1], or text)")
    p.add_argument("--out", default="runs", help="sweep folder (default: runs)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, each with one torch thread (default: 1)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell before a run fails (default: 3600)")
    p.add_argument("--force", action="store_true", help="run again the runs that are done")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="collect a sweep's results into tables and plots",
                       description="Read every run of a sweep folder; write report.csv (all runs), report.md (mean "
                                   "and 95%% CI over seeds per parameter group, failed runs) and one plot per metric.")
    p.add_argument("runs", help="the sweep folder")
    p.add_argument("--metric", action="append", help="metric to summarise (repeatable; default: J&F-Mean)")
    p.add_argument("--x", help="parameter on the plots' x axis (default: the first one that varies)")
    p.add_argument("--out", help="where the report goes (default: the sweep folder)")
    p.set_defaults(func=cmd_report)
    return parser


# ----------------------------------------------------------------------------- sweep / report
def cmd_sweep(args: argparse.Namespace) -> int:
    from voslab.sweep import SweepError, parse_grid, run_sweep

    try:
        grid = parse_grid(args.notebook, args.parameter)
    except SweepError as err:
        raise UsageError(str(err)) from None
    records = run_sweep(args.notebook, grid, args.out, jobs=args.jobs, timeout=args.timeout, force=args.force)
    failed = [r for r in records if r["status"] == "failed"]
    print(f"{len(records)} runs: {len(records) - len(failed)} done, {len(failed)} failed; "
          f"`voslab report {args.out}` summarises them")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from voslab.sweep import write_report

    paths = write_report(args.runs, metrics=args.metric or ["J&F-Mean"], out_dir=args.out, x=args.x)
    for path in paths.values():
        print(path)
    return 0


# ----------------------------------------------------------------------------- assign
def cmd_assign_student(args: argparse.Namespace) -> int:
    from voslab.assign import make_student_copies

    for path in make_student_copies(args.source, args.out):
        print(path)
    return 0


def cmd_assign_grade(args: argparse.Namespace) -> int:
    from voslab.assign import grade

    report = grade(args.submissions, args.out, preset=args.preset, timeout=args.timeout)
    for (student, nb), (passed, total) in sorted(report.scores().items()):
        print(f"{student:<20} {nb:<28} {passed} / {total}")
    print(f"tables: {Path(args.out) / 'grades.md'}, {Path(args.out) / 'grades.csv'}, {Path(args.out) / 'mistakes.md'}")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name (see `voslab list`)")
    p.add_argument("--preset", default="cpu",
                   help="smoke (CI), cpu (laptop), real (ImageNet backbone, DAVIS-trained) or gpu (paper); default: cpu")
    _set_arg(p)
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, ...")


def _set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one preset value (repeatable), e.g. --set model.variant=base (AD-Net without "
                        "anchor diffusion); weights are cached per changed preset, so pass the same --set to "
                        "train, evaluate and predict (eval.* changes inference only: evaluate and predict then "
                        "find the weights trained without it)")


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
