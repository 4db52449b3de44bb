"""Tests for the ``voslab`` command line, with a tiny fake zoo recipe and a tiny DAVIS-layout set.

The helpers at the top (``make_squares_dataset``, ``fake_recipe_module``) are reused by
test_inference.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from voslab import checkpoints, cli, engine, metrics, zoo
from voslab.data.davis import DAVIS, write_imageset, write_sequence
from voslab.data.io import read_mask

SIZE = (24, 32)


# ----------------------------------------------------------------------------- fake data and recipe
def square_video(seed: int, n_frames: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A bright square moving over dark noise: frames uint8 (T, H, W, 3), masks uint8 (T, H, W)."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    frames = rng.integers(0, 60, size=(n_frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((n_frames, h, w), np.uint8)
    y, x = rng.integers(2, 8), rng.integers(2, 8)
    for t in range(n_frames):
        masks[t, y + t: y + t + 10, x + 2 * t: x + 2 * t + 12] = 1
    frames[masks.astype(bool)] = 220
    return frames, masks


def make_squares_dataset(root) -> tuple:
    """DAVIS flat layout with splits train (a, b) and val (c, d); returns root."""
    for i, name in enumerate("abcd"):
        frames, masks = square_video(i)
        write_sequence(root, name, frames, masks=dict(enumerate(masks)))
    write_imageset(root, "train", ["a", "b"])
    write_imageset(root, "val", ["c", "d"])
    return root


class FrameSet(Dataset):
    """Every annotated frame of a DAVIS split: {"image": (3, H, W) [0, 1], "mask": (1, H, W) {0, 1}}."""

    def __init__(self, videos):
        self.images = torch.cat([torch.from_numpy(s.frames()).permute(0, 3, 1, 2) for s in videos]).float() / 255
        self.masks = torch.cat([torch.from_numpy(s.masks()) for s in videos]).float()[:, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i]}


def fake_recipe_module() -> types.ModuleType:
    """A zoo recipe module: a per-pixel MLP (1x1 convs) that learns 'bright = foreground'."""
    mod = types.ModuleType("fake_recipe")
    mod.TASK = "unsupervised"
    mod.PRESETS = {
        "smoke": {"data": {}, "model": {"width": 4},
                  "train": {"steps": 30, "batch_size": 4, "lr": 0.1}, "eval": {"split": "val"}},
        "cpu": {"data": {}, "model": {"width": 8},
                "train": {"steps": 100, "batch_size": 4, "lr": 0.1}, "eval": {"split": "val"}},
    }

    def build_model(cfg):
        w = cfg["model"]["width"]
        return nn.Sequential(nn.Conv2d(3, w, 1), nn.Tanh(), nn.Conv2d(w, 1, 1))

    def train_dataset(cfg, root=None):
        return FrameSet(DAVIS(root, "train", year=2016))

    def training_step(model, batch, cfg):
        logits = model(batch["image"])  # (B, 1, H, W)
        return {"loss": F.binary_cross_entropy_with_logits(logits, batch["mask"]),
                "fg": (logits > 0).float().mean()}

    def configure_optimizer(model, cfg):
        opt = torch.optim.Adam(model.parameters(), lr=cfg["train"]["lr"])
        return opt, engine.poly_schedule(opt, cfg["train"]["steps"])

    def predict_sequence(model, seq, cfg):
        x = torch.from_numpy(seq.frames()).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
        return (model(x)[:, 0] > 0).numpy().astype(np.uint8)  # (T, H, W)

    for fn in (build_model, train_dataset, training_step, configure_optimizer, predict_sequence):
        setattr(mod, fn.__name__, fn)
    return mod


@pytest.fixture(scope="module")
def fake_zoo():
    zoo.register("fake", fake_recipe_module())
    yield "fake"
    zoo.REGISTRY.pop("fake", None)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return make_squares_dataset(tmp_path_factory.mktemp("squares") / "data")


@pytest.fixture(scope="module")
def trained(fake_zoo, squares, tmp_path_factory):
    """Weights of the fake model trained once with `voslab train` (shared by the predict tests)."""
    weights = tmp_path_factory.mktemp("trained") / "w.pt"
    code = cli.main(["train", "fake", "--preset", "smoke", "--data-root", str(squares), "--out", str(weights),
                     "--device", "cpu", "--progress", "none"])
    assert code == 0
    return weights


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- parsing and help
def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ("list", "generate", "train", "evaluate", "predict"):
        assert command in text


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "generate"])
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0 and "--" in capsys.readouterr().out


def test_parse_train_options():
    args = cli.build_parser().parse_args(["train", "adnet", "--preset", "smoke", "--steps", "5", "--resume"])
    assert (args.model, args.preset, args.steps, args.resume, args.device) == ("adnet", "smoke", 5, True, "auto")
    with pytest.raises(SystemExit) as exc:  # argparse usage errors also exit with 2
        cli.build_parser().parse_args(["train"])
    assert exc.value.code == 2


def test_python_dash_m_runs():
    proc = subprocess.run([sys.executable, "-m", "voslab", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "evaluate" in proc.stdout


# ----------------------------------------------------------------------------- list and user errors
def test_list_shows_models_and_presets(capsys, fake_zoo):
    code, out, _ = run(capsys, "list")
    assert code == 0
    fake_line = next(line for line in out.splitlines() if line.startswith("fake"))
    assert "unsupervised" in fake_line
    assert "smoke   steps=30 batch_size=4 lr=0.1" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["train", "fake", "--preset", "huge"], "no preset 'huge'"),
    (["evaluate", "fake", "--preset", "smoke", "--ckpt", "missing.pt", "--dataset", "davis2016",
      "--data-root", "{data}"], "missing.pt does not exist"),
    (["evaluate", "fake", "--preset", "smoke", "--ckpt", "x.pt", "--dataset", "davis2016"], "needs --data-root"),
    (["predict", "fake", "--preset", "smoke", "--ckpt", "x.pt", "--input", "nowhere", "--out", "o"],
     "does not exist"),
    (["train", "fake", "--preset", "smoke", "--set", "steps=3"], "use SECTION.KEY=VALUE"),
    (["train", "fake", "--preset", "smoke", "--set", "optim.lr=3"], "no section 'optim'"),
])
def test_user_errors_exit_2_without_traceback(capsys, fake_zoo, squares, argv, message):
    code, _, err = run(capsys, *[a.format(data=squares) for a in argv])
    assert code == 2
    assert message in err and "Traceback" not in err


def test_set_overrides_preset_values():
    cfg = {"model": {"variant": "full"}, "train": {"steps": 10, "finetune": {"trainable_blocks": 0}}}
    out = cli.apply_overrides(cfg, ["model.variant=base", "train.finetune.trainable_blocks=2", "train.lr=1e-3",
                                    "train.size=(240, 427)", "model.name=two words"])
    assert out is cfg and cfg["model"] == {"variant": "base", "name": "two words"}
    assert cfg["train"] == {"steps": 10, "finetune": {"trainable_blocks": 2}, "lr": 1e-3, "size": (240, 427)}


# ----------------------------------------------------------------------------- round trip
def test_train_then_evaluate_round_trip(capsys, fake_zoo, squares, tmp_path):
    weights = tmp_path / "fake.pt"
    code, out, err = run(capsys, "train", "fake", "--preset", "smoke", "--data-root", squares, "--out", weights,
                         "--device", "cpu", "--progress", "none")
    assert code == 0, err
    assert f"weights: {weights}" in out and "for 30 steps" in out
    code, out, err = run(capsys, "train", "fake", "--preset", "smoke", "--data-root", squares, "--out",
                         tmp_path / "short.pt", "--device", "cpu", "--progress", "none", "--set", "train.steps=3")
    assert code == 0 and "for 3 steps" in out, err
    state = torch.load(weights, weights_only=True)
    assert state["config"]["train"]["steps"] == 30 and state["meta"]["steps"] == 30
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["config"]["model"] == {"width": 4} and sidecar["preset"] == "smoke"
    assert (tmp_path / "fake.train" / "last.pt").is_file()

    code, out, err = run(capsys, "evaluate", "fake", "--preset", "smoke", "--ckpt", weights, "--dataset",
                         "davis2016", "--data-root", squares, "--save-masks", tmp_path / "masks",
                         "--json", tmp_path / "scores.json", "--quiet")
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["split"] == "val" and [r["sequence"] for r in scores["rows"]] == ["c", "d"]
    assert scores["summary"]["J&F-Mean"] > 0.9  # the task is easy: bright = foreground
    assert f"J&F-Mean {scores['summary']['J&F-Mean']:.3f}" in out and "| c |" in out

    # the saved masks are the predictions, and the scores are those of the metrics on them
    model = fake_recipe_module().build_model({"model": {"width": 4}})
    checkpoints.load_weights(model, weights)
    val = DAVIS(squares, "val", year=2016)
    pairs = {}
    for seq in val:
        with torch.no_grad():
            pred = (model(torch.from_numpy(seq.frames()).permute(0, 3, 1, 2).float() / 255)[:, 0] > 0)
        saved = np.stack([read_mask(tmp_path / "masks" / seq.name / f"{t:05d}.png") for t in range(len(seq))])
        np.testing.assert_array_equal(saved, pred.numpy().astype(np.uint8))
        pairs[seq.name] = (seq.masks(), saved)
    assert metrics.evaluate(pairs, "davis2016").summary["J&F-Mean"] == pytest.approx(scores["summary"]["J&F-Mean"])


def test_evaluate_with_eval_overrides_finds_the_cached_weights(capsys, fake_zoo, squares, tmp_path, monkeypatch):
    """--set eval.* changes inference only: `voslab evaluate` finds the weights `voslab train` cached
    without it; a --set of another section names other weights (and says how to train them)."""
    monkeypatch.setenv("VOSLAB_CACHE", str(tmp_path / "cache"))
    code, out, err = run(capsys, "train", "fake", "--preset", "smoke", "--data-root", squares, "--device", "cpu",
                         "--progress", "none", "--set", "train.steps=3")
    assert code == 0, err
    cached = out.split("weights: ")[1].split()[0]
    code, out, err = run(capsys, "evaluate", "fake", "--preset", "smoke", "--dataset", "davis2016", "--data-root",
                         squares, "--quiet", "--set", "train.steps=3", "--set", "eval.split=train")
    assert code == 0, err
    assert f"weights: {cached}" in out and "| a |" in out  # the train split, scored with the cached weights
    code, out, err = run(capsys, "evaluate", "fake", "--preset", "smoke", "--dataset", "davis2016", "--data-root",
                         squares, "--quiet", "--set", "train.steps=4", "--set", "eval.split=train")
    assert code == 2 and "--set train.steps=4`" in err and "eval.split=train`" not in err


def test_train_resume_continues_from_checkpoint(capsys, fake_zoo, squares, tmp_path):
    weights = tmp_path / "w.pt"
    common = ["train", "fake", "--preset", "smoke", "--data-root", squares, "--out", weights, "--device", "cpu",
              "--steps", "12", "--ckpt-every", "4"]
    assert run(capsys, *common, "--progress", "none")[0] == 0
    reference = torch.load(weights, weights_only=True)["model"]
    code, out, _ = run(capsys, *common, "--progress", "log", "--resume")  # finished: nothing left to do
    assert code == 0 and "resuming from" in out and "at step 12" in out
    for k, v in torch.load(weights, weights_only=True)["model"].items():
        assert torch.equal(v, reference[k])


def test_predict_folder_of_frames(capsys, trained, squares, tmp_path):
    weights = trained
    frames_dir = squares / "JPEGImages" / "c"
    code, out, err = run(capsys, "predict", "fake", "--preset", "smoke", "--ckpt", weights, "--input", frames_dir,
                         "--out", tmp_path / "pred")
    assert code == 0, err
    written = sorted((tmp_path / "pred" / "c").glob("*.png"))
    assert len(written) == 5
    gt = DAVIS(squares, "val", year=2016)["c"].masks()
    pred = np.stack([read_mask(p) for p in written])
    assert metrics.jaccard(gt.astype(bool), pred.astype(bool)).mean() > 0.8


def test_generate_writes_a_split(capsys, tmp_path):
    code, out, err = run(capsys, "generate", "--root", tmp_path / "syn", "--split", "val", "--n-videos", "2",
                         "--n-frames", "3", "--size", "32", "48", "--seed", "3")
    assert code == 0, err
    names = (tmp_path / "syn" / "ImageSets" / "val.txt").read_text().split()
    assert len(names) == 2
    seq = DAVIS(tmp_path / "syn", "val", year=2016, annotations="Annotations_binary")[0]
    assert len(seq) == 3 and seq.size == (32, 48)


# ----------------------------------------------------------------------------- zoo
def test_zoo_builds_recipes_and_rejects_incomplete_modules(fake_zoo):
    recipe = zoo.get("fake")
    assert recipe.task == "unsupervised" and recipe.protocol() == "davis2016" and "smoke" in recipe.presets
    assert recipe.protocol("davis2017") == "davis2017-unsup"
    assert "fake" in zoo.available() and "adnet" in zoo.available()
    with pytest.raises(zoo.UnknownModelError, match="available: .*fake"):
        zoo.get("nope")
    broken = types.ModuleType("broken")
    broken.TASK = "unsupervised"
    zoo.register("broken", broken)
    try:
        with pytest.raises(AttributeError, match="lacks .*build_model"):
            zoo.get("broken")
    finally:
        zoo.REGISTRY.pop("broken")


def test_predict_video_file_with_overlay(capsys, trained, tmp_path):
    from voslab.data.video import write_video

    weights = trained
    frames, _ = square_video(7)
    video = write_video(tmp_path / "clip.mp4", list(frames), fps=5)
    code, out, err = run(capsys, "predict", "fake", "--preset", "smoke", "--ckpt", weights, "--input", video,
                         "--out", tmp_path / "pred", "--overlay-video", tmp_path / "overlay.mp4")
    assert code == 0, err
    assert len(list((tmp_path / "pred" / "clip").glob("*.png"))) == len(frames)
    assert (tmp_path / "overlay.mp4").stat().st_size > 0
