"""Backbones: shapes, torchvision naming of MobileNetV2, ImageNet weights (fetched once per test run by
the ``imagenet_weights`` fixture of conftest.py, never skipped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voslab import pretrained
from voslab.nn.backbones import MobileNetV2, build_backbone, set_mobilenet_output_stride
from voslab.utils import shared_data_dir

SHARED = shared_data_dir()

# (key, shape) pairs of torchvision's mobilenet_v2 state dict.
TORCHVISION_KEYS = {
    "features.0.0.weight": (32, 3, 3, 3),
    "features.0.1.running_mean": (32,),
    "features.1.conv.0.0.weight": (32, 1, 3, 3),
    "features.1.conv.1.weight": (16, 32, 1, 1),
    "features.2.conv.0.0.weight": (96, 16, 1, 1),
    "features.2.conv.1.0.weight": (96, 1, 3, 3),
    "features.2.conv.2.weight": (24, 96, 1, 1),
    "features.2.conv.3.weight": (24,),
    "features.17.conv.2.weight": (320, 960, 1, 1),
    "features.18.0.weight": (1280, 320, 1, 1),
    "features.18.1.num_batches_tracked": (),
    "classifier.1.weight": (1000, 1280),
    "classifier.1.bias": (1000,),
}


def test_mobilenet_v2_state_dict_matches_torchvision_names():
    net = MobileNetV2()
    state = net.state_dict()
    for key, shape in TORCHVISION_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 314  # torchvision's mobilenet_v2 state dict has 314 entries
    assert sum(p.numel() for p in net.parameters()) == 3_504_872
    assert not any("normalize" in k for k in state)  # mean/std buffers are not persistent


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_backbone_shapes(name, output_stride):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=output_stride).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        maps = net.features(x)
        out = net(x)
    assert out.shape == (2, net.out_channels, 64 // output_stride, 96 // output_stride)
    assert maps["s4"].shape[-2:] == (16, 24) and maps["s8"].shape[-2:] == (8, 12)
    assert maps["s4"].shape[1] == net.skip_channels["s4"] and maps["s8"].shape[1] == net.skip_channels["s8"]
    torch.testing.assert_close(maps["out"], out)


def test_tiny_is_small_and_trains():
    net = build_backbone("tiny", width=8, out_channels=16)
    assert 5_000 < sum(p.numel() for p in net.parameters()) < 300_000
    out = net(torch.rand(2, 3, 32, 32))
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_dilation_preserves_the_computation():
    """A dilated MobileNet at stride 8 equals the stride-32 one on the input, subsampled: check on the first
    strided block via the output size and on the classify path (which restores ImageNet strides)."""
    torch.manual_seed(0)
    net = MobileNetV2().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = net.classify(x)
        set_mobilenet_output_stride(net.features, 8)
        assert net.features(x).shape[-2:] == (8, 8)
        torch.testing.assert_close(net.classify(x), ref)  # classify is always stride 32
        assert net.features(x).shape[-2:] == (8, 8)  # and leaves the dilation in place
        set_mobilenet_output_stride(net.features, 32)
        assert net.features(x).shape[-2:] == (2, 2)
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("mobilenet_v2", output_stride=4)


def test_unknown_backbone_and_tiny_pretrained_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="no pretrained"):
        build_backbone("tiny", pretrained=True)


def test_deeplab_resnet_needs_torchvision_extra():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"voslab\[torchvision\]"):
            build_backbone("deeplabv3_resnet50")
    else:
        net = build_backbone("deeplabv3_resnet50", output_stride=16).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, 64, 64)).shape == (1, 256, 4, 4)


def test_weights_path_missing_and_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VOSLAB_WEIGHTS_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="fetch_weights.py"):
        pretrained.weights_path("mobilenet_v2")
    bad = tmp_path / "cache" / "weights" / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="sha256"):
        pretrained.weights_path("mobilenet_v2")
    with pytest.raises(KeyError, match="known"):
        pretrained.weights_path("vgg16")


def test_imagenet_class_names():
    names = pretrained.imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[294] == "brown bear" and names[100] == "black swan"


def _bear_frame() -> Path:
    for candidate in (SHARED / "davis2016-train-240p" / "JPEGImages" / "bear" / "00000.jpg",
                      SHARED / "davis2016-480p-sample" / "JPEGImages" / "480p" / "bear" / "00000.jpg"):
        if candidate.is_file():
            return candidate
    pytest.skip(f"shared DAVIS data not found under {SHARED} (set VOSLAB_SHARED_DATA)")


def test_pretrained_weights_load_into_voslab_mobilenet(imagenet_weights):
    """The published file (sha256-verified) loads strictly, and the segmentation backbone carries it."""
    state = torch.load(imagenet_weights, map_location="cpu", weights_only=True)
    assert pretrained.sha256sum(imagenet_weights) == pretrained.REGISTRY["mobilenet_v2"].sha256
    seg = build_backbone("mobilenet_v2", output_stride=16, pretrained=True).eval()
    for key in ("features.0.0.weight", "features.17.conv.2.weight", "features.10.conv.1.1.running_var"):
        torch.testing.assert_close(seg.body.state_dict()[key[len("features."):]], state[key])
    with torch.no_grad():
        out = seg(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 256, 4, 6) and torch.isfinite(out).all()


def test_pretrained_mobilenet_recognises_the_bear(imagenet_weights):
    from PIL import Image

    frame = _bear_frame()
    from voslab.nn.backbones import mobilenet_v2

    model = mobilenet_v2(pretrained=True).eval()
    image = torch.from_numpy(np.array(Image.open(frame).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
    side = min(image.shape[-2:])
    top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
    crop = F.interpolate(image[..., top:top + side, left:left + side], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert int(model.classify(crop).argmax()) == 294  # brown bear
        seg = build_backbone("mobilenet_v2", output_stride=16, pretrained=True).eval()
        assert seg(image).shape[1] == 256
