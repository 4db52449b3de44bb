"""Backbones: images in [0, 1] -> feature maps at output stride 8 or 16.

``build_backbone(name, output_stride=8, pretrained=False, **kw)`` returns a module with
``.out_channels``, ``forward(x) -> (B, out_channels, H/os, W/os)`` and ``.features(x) -> dict``
with ``"s4"``, ``"s8"`` and ``"out"`` maps. Every backbone normalises with the ImageNet mean/std
itself, so datasets never normalise.

- ``tiny``: a small from-scratch DeepLab-style CNN for the smoke/cpu presets.
- ``mobilenet_v2``: voslab's own MobileNetV2 (parameter names identical to torchvision's, so the
  ImageNet file ``mobilenet_v2-b0353104.pth`` loads with ``strict=True``), dilated like DeepLab, + ASPP.
- ``deeplabv3_resnet50`` / ``deeplabv3_resnet101``: torchvision's, when installed (``voslab[torchvision]``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from voslab.nn.modules import ASPP, ConvBNReLU

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNormalizer",
    "TinyBackbone",
    "MobileNetV2",
    "MobileNetV2Backbone",
    "TorchvisionDeepLabBackbone",
    "build_backbone",
    "BACKBONES",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalizer(nn.Module):
    """(x - mean) / std with ImageNet statistics; x is RGB in [0, 1]. Buffers are not saved in state dicts."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"backbones take RGB images (B, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std


def _check_output_stride(output_stride: int, allowed: tuple[int, ...]) -> None:
    if output_stride not in allowed:
        raise ValueError(f"output_stride must be one of {allowed}, got {output_stride}")


def _aspp_rates(output_stride: int, base: tuple[int, ...] = (6, 12, 18)) -> tuple[int, ...]:
    """DeepLab's rule: rates (6, 12, 18) at output stride 16, doubled at 8."""
    return tuple(r * 16 // output_stride for r in base)


# --------------------------------------------------------------------------------------------
# tiny: from scratch, for smoke/cpu presets
# --------------------------------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """Small DeepLab-style CNN: conv-BN-ReLU stages to stride 8 (or 16), dilated convs, light ASPP.

    ``width`` w sets the channels: w at 1/2, 2w at 1/4, 4w at 1/8 (and 1/16); ``out_channels``
    defaults to 4w. width=16 has about 0.2 M parameters.
    """

    def __init__(self, output_stride: int = 8, width: int = 16, out_channels: int | None = None):
        super().__init__()
        _check_output_stride(output_stride, (8, 16))
        w = width
        self.normalize = ImageNormalizer()
        self.stem = nn.Sequential(ConvBNReLU(3, w, stride=2), ConvBNReLU(w, w))  # 1/2
        self.stage4 = nn.Sequential(ConvBNReLU(w, 2 * w, stride=2), ConvBNReLU(2 * w, 2 * w))  # 1/4
        self.stage8 = nn.Sequential(ConvBNReLU(2 * w, 4 * w, stride=2), ConvBNReLU(4 * w, 4 * w))  # 1/8
        down = [ConvBNReLU(4 * w, 4 * w, stride=2)] if output_stride == 16 else []
        self.context = nn.Sequential(*down, ConvBNReLU(4 * w, 4 * w, dilation=2), ConvBNReLU(4 * w, 4 * w, dilation=4))
        self.out_channels = out_channels or 4 * w
        self.aspp = ASPP(4 * w, self.out_channels, rates=(2, 4), mid_channels=2 * w, dropout=0.0)
        self.output_stride = output_stride
        self.skip_channels = {"s4": 2 * w, "s8": 4 * w}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s4 = self.stage4(self.stem(self.normalize(x)))  # (B, 2w, H/4, W/4)
        s8 = self.stage8(s4)  # (B, 4w, H/8, W/8)
        out = self.aspp(self.context(s8))  # (B, out_channels, H/os, W/os)
        return {"s4": s4, "s8": s8, "out": out}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]


# --------------------------------------------------------------------------------------------
# MobileNetV2 with torchvision's parameter names
# --------------------------------------------------------------------------------------------
class ConvBNReLU6(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` for MobileNetV2: conv (no bias) [0], BN [1], ReLU6 [2]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (unless t=1) -> 3x3 depthwise (stride) -> 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.stride = stride  # the ImageNet stride; dilation may later set the conv's stride to 1
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def depthwise(self) -> nn.Conv2d:
        """The 3x3 depthwise conv (the only conv with a stride)."""
        return self.conv[-3][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expand ratio t, channels c, repeats n, first stride s) from the MobileNetV2 paper, Table 2.
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def set_mobilenet_output_stride(features: nn.Sequential, output_stride: int) -> None:
    """Replace strides by dilation (DeepLab) so ``features`` has the given output stride (8, 16 or 32).

    Like DeepLab/TF-slim: the block that would exceed ``output_stride`` keeps stride 1 and the current
    rate; the rate is multiplied by its stride for all blocks after it.
    """
    _check_output_stride(output_stride, (8, 16, 32))
    current_stride, rate = 2, 1  # features[0] is the stride-2 stem conv
    for block in features:
        if not isinstance(block, InvertedResidual):
            continue
        conv = block.depthwise()
        layer_rate = rate
        if block.stride == 2 and current_stride >= output_stride:
            conv.stride, rate = (1, 1), rate * 2
        elif block.stride == 2:
            conv.stride, current_stride = (2, 2), current_stride * 2
        conv.dilation, conv.padding = (layer_rate, layer_rate), (layer_rate, layer_rate)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., CVPR'18) with torchvision's module names: ``features.0`` ...
    ``features.18`` and ``classifier.1``, so ``torchvision``'s ImageNet state dict loads strictly.

    ``forward(x)`` / ``classify(x)``: images in [0, 1] -> ImageNet logits (B, 1000), always at
    output stride 32 (the network the weights were trained as).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.normalize = ImageNormalizer()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        in_channels = 32
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        layers.append(ConvBNReLU6(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (kaiming fan-out convs, unit BN, N(0, 0.01) classifier)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @contextlib.contextmanager
    def _at_stride_32(self) -> Iterator[None]:
        """Temporarily restore ImageNet strides (in case someone dilated ``features``)."""
        saved = [(b.depthwise().stride, b.depthwise().dilation, b.depthwise().padding)
                 for b in self.features if isinstance(b, InvertedResidual)]
        set_mobilenet_output_stride(self.features, 32)
        try:
            yield
        finally:
            blocks = [b for b in self.features if isinstance(b, InvertedResidual)]
            for b, (stride, dilation, padding) in zip(blocks, saved):
                conv = b.depthwise()
                conv.stride, conv.dilation, conv.padding = stride, dilation, padding

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] (224x224 is the training size) -> logits (B, num_classes)."""
        with self._at_stride_32():
            f = self.features(self.normalize(x))  # (B, 1280, H/32, W/32)
        return self.classifier(F.adaptive_avg_pool2d(f, 1).flatten(1))  # (B, num_classes)

    forward = classify


class MobileNetV2Backbone(nn.Module):
    """DeepLabV3-style MobileNetV2: ``body`` = torchvision ``features.0..17`` (320 ch; the 1280-ch conv and classifier are
    dropped) dilated to ``output_stride``, then ASPP to ``out_channels``.

    ``features(x)`` -> ``"s4"`` (24 ch), ``"s8"`` (32 ch), ``"deep"`` (320 ch, before ASPP), ``"out"``.
    """

    S4_INDEX, S8_INDEX = 3, 6  # last blocks at stride 4 and 8 in ``features``

    def __init__(self, net: MobileNetV2 | None = None, output_stride: int = 8, out_channels: int = 256,
                 aspp_rates: tuple[int, ...] | None = None):
        super().__init__()
        _check_output_stride(output_stride, (8, 16))
        net = net if net is not None else MobileNetV2()
        self.normalize = ImageNormalizer()
        self.body = net.features[:-1]  # features.0 .. features.17, keeps torchvision names
        set_mobilenet_output_stride(self.body, output_stride)
        self.aspp = ASPP(320, out_channels, rates=aspp_rates or _aspp_rates(output_stride))
        self.out_channels = out_channels
        self.output_stride = output_stride
        self.skip_channels = {"s4": 24, "s8": 32}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for i, block in enumerate(self.body):
            h = block(h)
            if i == self.S4_INDEX:
                maps["s4"] = h  # (B, 24, H/4, W/4)
            elif i == self.S8_INDEX:
                maps["s8"] = h  # (B, 32, H/8, W/8)
        maps["deep"] = h  # (B, 320, H/os, W/os)
        maps["out"] = self.aspp(h)  # (B, out_channels, H/os, W/os)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]


def mobilenet_v2(pretrained: bool = False, weights: str | Path | None = None) -> MobileNetV2:
    """voslab's MobileNetV2 classifier; ``pretrained=True`` loads the verified ImageNet weights
    (see :mod:`voslab.pretrained`); ``weights`` is an explicit state-dict file instead."""
    net = MobileNetV2()
    if weights is None and pretrained:
        from voslab.pretrained import weights_path

        weights = weights_path("mobilenet_v2")
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    return net


# --------------------------------------------------------------------------------------------
# torchvision DeepLabV3-ResNet (optional extra)
# --------------------------------------------------------------------------------------------
def _import_torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision.models import resnet
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation import deeplabv3
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the deeplabv3_resnet50/101 backbones need torchvision: install the extra with "
            "`pip install 'voslab[torchvision]'` (pulls a CUDA torch build; meant for GPU machines), "
            "or use build_backbone('mobilenet_v2') / build_backbone('tiny')"
        ) from err
    return resnet, IntermediateLayerGetter, deeplabv3


class TorchvisionDeepLabBackbone(nn.Module):
    """torchvision's DeepLabV3-ResNet without its final classifier: ResNet (dilated to
    ``output_stride``) + DeepLabHead minus the last 1x1 conv -> 256 channels.

    ``weights``: optional local file with a torchvision ``deeplabv3_resnet*`` state dict (e.g. the COCO
    ``deeplabv3_resnet50_coco-cd0a2569.pth``), or a plain ResNet ImageNet state dict (loaded into the
    encoder only). Nothing is ever downloaded.
    """

    def __init__(self, depth: int = 50, output_stride: int = 8, weights: str | Path | None = None):
        super().__init__()
        _check_output_stride(output_stride, (8, 16))
        resnet, IntermediateLayerGetter, deeplabv3 = _import_torchvision()
        dilate = [False, True, True] if output_stride == 8 else [False, False, True]
        encoder = getattr(resnet, f"resnet{depth}")(weights=None, replace_stride_with_dilation=dilate)
        rates = list(_aspp_rates(output_stride))
        head = deeplabv3.DeepLabHead(2048, 21, rates)
        if weights is not None:
            self._load(encoder, head, Path(weights))
        self.normalize = ImageNormalizer()
        self.backbone = IntermediateLayerGetter(encoder, {"layer1": "s4", "layer2": "s8", "layer4": "deep"})
        self.head = head[:-1]  # ASPP + 3x3 conv-BN-ReLU -> 256 channels
        self.out_channels = 256
        self.output_stride = output_stride
        self.skip_channels = {"s4": 256, "s8": 512}

    @staticmethod
    def _load(encoder: nn.Module, head: nn.Module, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist; pass weights=None or a valid path")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("backbone.") for k in state):
            encoder.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
            head.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("classifier.")}, strict=False)
        else:
            encoder.load_state_dict(state, strict=False)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = dict(self.backbone(self.normalize(x)))  # s4 (256, H/4), s8 (512, H/8), deep (2048, H/os)
        maps["out"] = self.head(maps["deep"])  # (B, 256, H/os, W/os)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["out"]


# --------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------
BACKBONES = ("tiny", "mobilenet_v2", "deeplabv3_resnet50", "deeplabv3_resnet101")


def build_backbone(name: str = "tiny", output_stride: int = 8, pretrained: bool = False, **kw) -> nn.Module:
    """Build a backbone by name (see module docstring).

    Keyword arguments: ``tiny``: ``width``, ``out_channels``; ``mobilenet_v2``: ``out_channels``,
    ``aspp_rates``, ``weights`` (explicit file); ``deeplabv3_resnet*``: ``weights`` (local file).
    ``pretrained=True`` loads ImageNet weights (mobilenet_v2 only; run
    ``python data_scripts/fetch_weights.py`` once to put them in the cache).
    """
    if name == "tiny":
        if pretrained:
            raise ValueError("the 'tiny' backbone is trained from scratch: it has no pretrained weights (use pretrained=False)")
        return TinyBackbone(output_stride=output_stride, **kw)
    if name == "mobilenet_v2":
        net = mobilenet_v2(pretrained=pretrained, weights=kw.pop("weights", None))
        return MobileNetV2Backbone(net, output_stride=output_stride, **kw)
    if name in ("deeplabv3_resnet50", "deeplabv3_resnet101"):
        if pretrained and kw.get("weights") is None:
            raise ValueError(
                f"{name}: voslab never downloads weights; pass weights='<local deeplabv3 or resnet .pth file>' "
                "or pretrained=False"
            )
        return TorchvisionDeepLabBackbone(depth=int(name[-3:].lstrip("t")), output_stride=output_stride, **kw)
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
