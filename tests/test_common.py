"""voslab.models._common: the shared per-paper plumbing (splits by scenario, semi-supervised reading
of DAVIS-2016's binary masks)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from voslab import presets, zoo
from voslab.data.davis import write_imageset, write_sequence
from voslab.data.io import write_image
from voslab.data.synthetic import scenario_of
from voslab.models._common import davis_split, evaluation_split, scenario_splits


def grey_davis(root, names=("a", "b")):
    """DAVIS-2016 style: grey {0, 255} masks (what the official 2016 release and the shared copy hold)."""
    rng = np.random.default_rng(0)
    for name in names:
        for t in range(3):
            write_image(root / "JPEGImages" / name / f"{t:05d}.jpg", rng.integers(0, 255, (8, 12, 3), dtype=np.uint8))
            (root / "Annotations" / name).mkdir(parents=True, exist_ok=True)
            mask = np.zeros((8, 12), np.uint8)
            mask[2:5, 3:7] = 255
            Image.fromarray(mask, mode="L").save(root / "Annotations" / name / f"{t:05d}.png")
    write_imageset(root, "train", list(names))
    return root


def test_semi_supervised_reading_of_binary_masks_gives_one_object(tmp_path):
    root = grey_davis(tmp_path / "d16")
    semi = davis_split(presets.get("adnet", "smoke"), "train", root, task="semi")
    assert set(np.unique(semi[0].masks())) == {0, 1}  # not {0, 255 = void}
    assert set(np.unique(davis_split(presets.get("adnet", "smoke"), "train", root)[0].masks())) == {0, 1}


def test_semi_supervised_reading_of_palette_masks_keeps_instance_ids(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (8, 12, 3), dtype=np.uint8) for _ in range(2)]
    ids = np.zeros((8, 12), np.uint8)
    ids[1:3, 1:3], ids[5:7, 5:9] = 1, 2
    write_sequence(tmp_path / "d17", "x", frames, {0: ids, 1: ids})
    write_imageset(tmp_path / "d17", "train", ["x"])
    semi = davis_split(presets.get("adnet", "smoke"), "train", tmp_path / "d17", task="semi")
    assert set(np.unique(semi[0].masks())) == {0, 1, 2}


def test_scenario_splits_divide_a_split_over_the_listed_scenarios(tmp_path):
    cfg = presets.get("adnet", "smoke")
    cfg["train"]["scenarios"] = ["camouflage", "stop_and_go"]
    cfg["data"]["val"]["n_videos"] = 4
    parts = scenario_splits(cfg, "val")
    assert list(parts) == ["camouflage", "stop_and_go"] and all(len(p) == 2 for p in parts.values())
    for scenario, videos in parts.items():
        assert {scenario_of(videos.root, n) for n in videos.names} == {scenario}
    plain = presets.get("adnet", "smoke")
    assert list(scenario_splits(plain, "val")) == ["transient_lookalikes"]
    assert list(scenario_splits(cfg, "train", grey_davis(tmp_path / "real"))) == ["data"]


def test_evaluation_split_scores_every_scenario_the_model_trained_on(tmp_path):
    """`voslab evaluate` (Recipe.dataset) reads all scenarios of a multi-scenario preset, with unique
    names; a preset with one data source gets its split unchanged."""
    cfg = presets.get("lvo", "smoke")
    cfg["data"]["val"]["n_videos"] = 4
    parts = scenario_splits(cfg, "val")
    assert len(parts) > 1
    videos = zoo.get("lvo").dataset(cfg, "val")
    expected = [f"{scenario}-{name}" for scenario, part in parts.items() for name in part.names]
    assert videos.names == expected and len(set(videos.names)) == len(expected)
    first = next(iter(parts.values()))[0]
    assert videos[0].frame_paths == first.frame_paths and first.name != videos[0].name  # renamed copies
    plain = presets.get("adnet", "smoke")
    assert evaluation_split(plain, "val").names == davis_split(plain, "val").names
    real = grey_davis(tmp_path / "real")
    assert evaluation_split(cfg, "train", real).names == ["a", "b"]


def test_paper_backbone_falls_back_to_mobilenet_without_torchvision(monkeypatch):
    import types

    import pytest

    from voslab.models import _common
    from voslab.nn import backbones

    real_build = backbones.build_backbone

    def no_torchvision(name, **kwargs):
        if name.startswith("deeplabv3"):
            raise ImportError("deeplabv3 backbones need torchvision")
        return real_build(name, **kwargs)

    monkeypatch.setattr(backbones, "build_backbone", no_torchvision)
    cfg = types.SimpleNamespace(backbone="deeplabv3_resnet101", output_stride=16, pretrained=False, backbone_kwargs={})
    with pytest.warns(UserWarning, match="TestPaper: deeplabv3 backbones need torchvision. Falling back"):
        net = _common.paper_backbone(cfg, "TestPaper")
    assert isinstance(net, backbones.MobileNetV2Backbone) and net.output_stride == 16
    cfg.backbone = "tiny"
    assert not isinstance(_common.paper_backbone(cfg, "TestPaper"), backbones.MobileNetV2Backbone)


def test_every_paper_sampler_reads_the_shared_train_options():
    """train.size / augment / scale / steps x batch_size / seed reach every paper's sampler (one helper,
    `sampler_options`): a preset's `--set train.scale=[1,1]` (flips only) is never silently ignored."""
    for name in ("lvo", "agnn", "adnet", "agss", "feelvos"):
        cfg = presets.get(name, "smoke")
        cfg["train"].update(scale=[1.0, 1.0], seed=7, augment=True, steps=3, batch_size=2)
        data = zoo.get(name).train_dataset(cfg, None)
        assert (data.scale, data.seed, data.augment, len(data)) == ((1.0, 1.0), 7, True, 6), name
        assert data.size == tuple(cfg["train"]["size"]), name
