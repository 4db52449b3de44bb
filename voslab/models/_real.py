"""Real video on a laptop: the pretrained-backbone plumbing every paper's ``real`` preset shares.

A ``real`` preset (``voslab.models._common.BASE_PRESETS["real"]``) trains a paper's model on DAVIS
frames at about 240p with voslab's ImageNet MobileNetV2, in at most 30 minutes on 2 CPU cores.
What makes that possible: the backbone's first blocks are **frozen**, so their output for a given
frame never changes; it is computed once per frame and kept in memory (a cache keyed by the image's
content), and each training step only runs the last ``trainable_blocks`` blocks, ASPP and the
paper's own layers forward and backward.

A paper opts in with one line in its ``build_model``::

    def build_model(cfg):
        return finetune_backbone(Paper(model_config(PaperConfig, cfg)), cfg)

which does nothing unless the preset's ``train`` section has a ``finetune`` entry:
``{"trainable_blocks": k, "cache_mb": m}`` - the last k of the 18 MobileNetV2 blocks are
fine-tuned (0: the whole body is frozen), every pretrained batch norm keeps its ImageNet statistics,
and at most m MiB of features are cached (0: no cache). The wrapped backbone has the same
parameter names as the plain one, so its checkpoints load into ``build_model`` of any preset.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from voslab.models._common import section
from voslab.nn.backbones import MobileNetV2Backbone

__all__ = ["FrozenPrefixBackbone", "finetune_backbone", "clear_feature_cache", "feature_cache_info"]


# ------------------------------------------------------------------------------- the feature cache
class _FeatureCache:
    """Frozen-prefix outputs by (prefix identity, image content), stored as float16 on the CPU.

    One cache per process, shared by every model with the same frozen prefix (same weights, output
    stride and cut): training AD-Net "full" and then "base" computes each frame's features once.
    It stops growing at its memory budget (later frames are computed at each step, not cached).
    """

    def __init__(self) -> None:
        self.entries: dict[tuple, dict[str, torch.Tensor]] = {}
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple) -> dict[str, torch.Tensor] | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: tuple, maps: dict[str, torch.Tensor], budget: int) -> None:
        size = sum(t.numel() * 2 for t in maps.values())  # float16
        if self.nbytes + size <= budget:
            self.entries[key] = {k: t.detach().to("cpu", torch.float16) for k, t in maps.items()}
            self.nbytes += size

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = self.hits = self.misses = 0


_CACHE = _FeatureCache()


def clear_feature_cache() -> None:
    """Free the memory of the frozen-backbone features cached while training."""
    _CACHE.clear()


def feature_cache_info() -> dict[str, int]:
    """``{"frames", "mib", "hits", "misses"}`` of the process-wide feature cache."""
    return {"frames": len(_CACHE.entries), "mib": _CACHE.nbytes >> 20, "hits": _CACHE.hits, "misses": _CACHE.misses}


def _image_key(image: torch.Tensor) -> bytes:
    """A digest of one (3, H, W) image's exact values (and size)."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    return hashlib.blake2b(data.numpy().tobytes() + str(tuple(data.shape)).encode(), digest_size=16).digest()


# ------------------------------------------------------------------------------- the backbone
class FrozenPrefixBackbone(nn.Module):
    """A :class:`~voslab.nn.backbones.MobileNetV2Backbone` whose body is frozen but for its last
    ``trainable_blocks`` blocks.

    Frozen: the first ``len(body) - trainable_blocks`` blocks (no gradients, run without autograd)
    and every batch norm of the body (ImageNet statistics, eval mode even while training: batches of
    a few frames would give poor statistics). Trained: the last blocks' convolutions, ASPP, and the
    paper's layers above. While training, the frozen prefix's output is cached per image (see
    :class:`_FeatureCache`); in eval mode nothing is cached. Submodule names (``body``, ``aspp``)
    are those of the wrapped backbone, so state dicts are interchangeable.
    """

    def __init__(self, backbone: MobileNetV2Backbone, trainable_blocks: int = 0, cache_mb: float = 2048):
        super().__init__()
        if not isinstance(backbone, MobileNetV2Backbone):
            raise TypeError(f"finetune needs the 'mobilenet_v2' backbone, got {type(backbone).__name__}; set "
                            "model.backbone='mobilenet_v2' (and pretrained=True) in the preset")
        if not 0 <= int(trainable_blocks) <= len(backbone.body):
            raise ValueError(f"finetune.trainable_blocks={trainable_blocks} must be in 0..{len(backbone.body)}")
        self.normalize, self.body, self.aspp = backbone.normalize, backbone.body, backbone.aspp
        self.out_channels, self.output_stride = backbone.out_channels, backbone.output_stride
        self.skip_channels = backbone.skip_channels
        self.S4_INDEX, self.S8_INDEX = backbone.S4_INDEX, backbone.S8_INDEX
        self.cut = len(self.body) - int(trainable_blocks)  # blocks [0, cut) frozen, [cut, 18) fine-tuned
        self.cache_bytes = int(float(cache_mb) * 2**20)
        for name, param in self.body.named_parameters():
            block, *_ = name.split(".")
            param.requires_grad_(int(block) >= self.cut and param.dim() > 1)  # convolutions of the last blocks
        self.train()

    def train(self, mode: bool = True) -> FrozenPrefixBackbone:
        super().train(mode)
        self.body.eval()  # pretrained batch norms keep their ImageNet statistics
        return self

    # -- frozen prefix ---------------------------------------------------------------------
    def _prefix_maps(self, x: torch.Tensor, skips: bool) -> dict[str, torch.Tensor]:
        """Blocks [0, cut) on images (B, 3, H, W) -> {"h": (B, C, h', w')} (+ "s4", "s8" it passes)."""
        maps: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for i in range(self.cut):
            h = self.body[i](h)
            if skips and i == self.S4_INDEX:
                maps["s4"] = h  # (B, 24, H/4, W/4)
            elif skips and i == self.S8_INDEX:
                maps["s8"] = h  # (B, 32, H/8, W/8)
        maps["h"] = h
        return maps

    @torch.no_grad()
    def _frozen(self, x: torch.Tensor, skips: bool) -> dict[str, torch.Tensor]:
        """The prefix's maps, from the cache where possible (while training)."""
        if not (self.training and self.cache_bytes > 0):
            return self._prefix_maps(x, skips)
        prefix = (_fingerprint(self.body[:self.cut]), self.output_stride, self.cut, skips)
        keys = [(prefix, _image_key(image)) for image in x]
        found = [_CACHE.get(key) for key in keys]
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            computed = self._prefix_maps(x[missing], skips)
            for j, i in enumerate(missing):
                found[i] = {k: v[j] for k, v in computed.items()}
                _CACHE.put(keys[i], found[i], self.cache_bytes)
        return {k: torch.stack([entry[k] for entry in found]).to(x.device, x.dtype) for k in found[0]}

    # -- the backbone protocol ---------------------------------------------------------------
    def features(self, x: torch.Tensor, skips: bool = True) -> dict[str, torch.Tensor]:
        """Like ``MobileNetV2Backbone.features``: "s4", "s8" (with ``skips``), "deep" and "out"."""
        maps = self._frozen(x, skips)
        h = maps.pop("h")
        for i in range(self.cut, len(self.body)):
            h = self.body[i](h)
            if skips and i == self.S4_INDEX:
                maps["s4"] = h
            elif skips and i == self.S8_INDEX:
                maps["s8"] = h
        maps["deep"] = h  # (B, 320, H/os, W/os)
        maps["out"] = self.aspp(h)  # (B, out_channels, H/os, W/os)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, skips=False)["out"]


def _fingerprint(module: nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers: the cache key's "which frozen weights"."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def finetune_backbone(model: nn.Module, cfg: Mapping[str, Any] | None, attr: str = "backbone") -> nn.Module:
    """Apply the preset's ``train.finetune`` to ``model.<attr>`` (a MobileNetV2 backbone): freeze it
    but for its last ``trainable_blocks`` blocks and cache the frozen features. No ``finetune``
    entry: ``model`` unchanged. Returns ``model``."""
    spec = section(cfg, "train").get("finetune")
    if not spec:
        return model
    unknown = set(spec) - {"trainable_blocks", "cache_mb"}
    if unknown:
        raise ValueError(f"unknown train.finetune option(s) {sorted(unknown)}; valid: ['cache_mb', 'trainable_blocks']")
    setattr(model, attr, FrozenPrefixBackbone(getattr(model, attr), **spec))
    if not section(cfg, "model").get("pretrained", False):
        warnings.warn("train.finetune freezes the backbone but the preset's model.pretrained is False: the frozen "
                      "weights are random (run `python data_scripts/fetch_weights.py` and set pretrained=True)",
                      stacklevel=2)
    return model
