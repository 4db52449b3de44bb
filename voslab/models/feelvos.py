"""FEELVOS: Fast End-to-End Embedding Learning for Video Object Segmentation (Voigtlaender et al., CVPR 2019).

Semi-supervised, many objects: the first frame's masks are given; every later frame is segmented
online, all objects in one pass of a head whose weights are shared across objects.

Read top to bottom in the paper's order:

1. :class:`FEELVOSConfig` - the options (paper defaults; ``# code:`` marks the official TF code).
2. :class:`FEELVOS` - backbone features at stride 4 (DeepLabv3+-style decoder), the pixel-embedding
   head, **global matching** of every current pixel to each object's reference-frame pixels
   (background is an object too), **local matching** to the previous frame in a (2k+1)^2 window, and
   the **dynamic segmentation head** run once per object on [features, global map, local map,
   previous prediction]; the objects' logits are stacked and softmaxed across objects. The
   matching itself is :mod:`voslab.nn.matching` (chunked global matching with the training cap on
   reference pixels, unfold-based local matching) and the distance is
   d(p, q) = 1 - 2 / (1 + exp(||e_p - e_q||^2)) (:func:`distance`).
3. The regime: :func:`bootstrapped_cross_entropy` (the hardest 15% of pixels, phased in),
   :func:`train_dataset` ((reference, previous, current) triplets, the previous frame's ground
   truth used for local matching and as the previous prediction), :func:`training_step`.
4. The inference protocol :func:`predict_sequence`: online, one frame at a time; reference
   embeddings computed once, the previous frame's embeddings and prediction carried forward; any
   number of objects, late entrants joining at the frame where their mask is given.
5. :data:`PRESETS` (smoke / cpu / gpu / real), :data:`TASK`, :func:`build_model` for ``voslab.zoo``.

Shapes: B batch, K objects including the background (object 0), C embedding dimension (paper: 100),
F feature channels (paper: 256), (h, w) = the stride-4 grid, (H, W) the input size.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voslab.data.samplers import RefPrevCur
from voslab.data.sequence import given_masks
from voslab.data.transforms import to_image_tensor
from voslab.models._common import (Preset, check_choice, inference_config, model_config, resize, sampler_options,
                                   section, with_base_presets)
from voslab.models._common import scenario_splits as _common_scenario_splits
from voslab.models._real import finetune_backbone
from voslab.nn.backbones import build_backbone
from voslab.nn.matching import VOID_LABEL, global_matching, local_matching, normalize_distance
from voslab.nn.modules import SkipDecoder

__all__ = [
    "FEELVOSConfig",
    "FEELVOS",
    "SeparableConv",
    "distance",
    "bootstrapped_cross_entropy",
    "hard_pixel_fraction",
    "remap_to_reference",
    "FEELVOSTriplets",
    "scenario_splits",
    "build_model",
    "train_dataset",
    "training_step",
    "predict_sequence",
    "predict_stream",
    "predict_video",
    "iter_video",
    "PRESETS",
    "TASK",
    "FEELVOS_SCENARIOS",
]

TASK = "semi"
#: The synthetic scenarios built for FEELVOS's two matchings: identical_instances (only continuity
#: tells the copies apart: local matching) and occlude_reappear (the object reappears far from where
#: it vanished: global matching to the first frame).
FEELVOS_SCENARIOS = ("identical_instances", "occlude_reappear")
NEG = -1e4  # the logit of an object that is not in the video (yet): softmax weight ~0, finite loss


# ================================================================================================
# 1. Configuration
# ================================================================================================
@dataclass
class FEELVOSConfig:
    """FEELVOS options. Defaults follow the paper / official code (research/feelvos).

    Model:
        backbone: "tiny" | "mobilenet_v2" | "deeplabv3_resnet101" (paper: DeepLabv3+ Xception-65).
        output_stride: the backbone's deep output stride (code: 16 in training, 8 at evaluation).
        feature_dim: F, the channels of the stride-4 features (paper: 256, the DeepLabv3+ decoder).
        embed_dim: C, the pixel-embedding dimension (paper: 100).
        head_layers, head_kernel, head_dim: the dynamic segmentation head, separable convolutions
            (paper: 4 layers, 7x7, 256 channels).
        use_global, use_local, use_prev: which inputs the dynamic head reads besides the features
            (paper: all three; the ablations switch one off).
        window: k, local matching in a (2k+1)^2 window on the stride-4 grid (paper: 15).
        max_ref_per_object: at most this many random reference pixels per object in global matching
            while training (code: train_max_neighbors_per_object = 1024); None: all. Inference uses all.
        chunk_size: query positions per block of global matching (None: a 64 MiB block).
        backbone_kwargs, pretrained: see ``voslab.nn.backbones.build_backbone``.

    Training (read by :func:`training_step` from the model config so checkpoints carry it):
        top_k_percent: the fraction of the hardest pixels the bootstrapped loss keeps (paper: 0.15).
        hard_mining_steps: steps over which that fraction falls linearly from 1 to ``top_k_percent``
            (code: hard_example_mining_step = 100k).

    Inference:
        inference_size: (H, W) the frames are resized to before the network; None keeps the video's
            size. Masks are returned at the video's size.
    """

    # model
    backbone: str = "tiny"
    output_stride: int = 8
    feature_dim: int = 256
    embed_dim: int = 100
    head_layers: int = 4
    head_kernel: int = 7
    head_dim: int = 256
    use_global: bool = True
    use_local: bool = True
    use_prev: bool = True
    window: int = 15
    max_ref_per_object: int | None = 1024
    chunk_size: int | None = None
    backbone_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    # training
    top_k_percent: float = 0.15
    hard_mining_steps: int = 100_000
    # inference
    inference_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_choice("FEELVOSConfig", "backbone", self.backbone,
                     ("tiny", "mobilenet_v2", "deeplabv3_resnet50", "deeplabv3_resnet101"))
        if self.window < 0:
            raise ValueError(f"FEELVOSConfig.window={self.window} must be >= 0")
        if not 0.0 < self.top_k_percent <= 1.0:
            raise ValueError(f"FEELVOSConfig.top_k_percent={self.top_k_percent} must be in (0, 1]")
        if self.head_kernel % 2 == 0:
            raise ValueError(f"FEELVOSConfig.head_kernel={self.head_kernel} must be odd")
        if self.inference_size is not None:
            self.inference_size = (int(self.inference_size[0]), int(self.inference_size[1]))


# ================================================================================================
# 2. The model
# ================================================================================================
def distance(e_p: torch.Tensor, e_q: torch.Tensor) -> torch.Tensor:
    """The paper's embedding distance d(p, q) = 1 - 2 / (1 + exp(||e_p - e_q||^2)), in [0, 1).

    e_p, e_q: (..., C) broadcastable -> (...). 0 for identical embeddings, -> 1 when far apart.
    (``voslab.nn.matching.normalize_distance`` computes it overflow-free as tanh(d2 / 2).)
    """
    return normalize_distance(((e_p - e_q) ** 2).sum(-1))


class SeparableConv(nn.Sequential):
    """k x k depthwise conv + 1x1 pointwise conv + BatchNorm + ReLU (DeepLab's separable conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, relu: bool = True):
        layers = [nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels,
                            bias=False),
                  nn.Conv2d(in_channels, out_channels, 1, bias=not relu)]
        if relu:
            layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def _rename_old_decoder_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Weights saved before the decoder became ``nn.modules.SkipDecoder`` named its two convolutions
    ``skip_proj.*`` and ``decoder.*``; rename them in place so those checkpoints still load."""
    old_fuse = prefix + "decoder."
    for key in [k for k in state_dict if k.startswith(old_fuse) and k[len(old_fuse)].isdigit()]:
        state_dict[prefix + "decoder.fuse." + key[len(old_fuse):]] = state_dict.pop(key)  # decoder.0.* -> fuse
    for key in [k for k in state_dict if k.startswith(prefix + "skip_proj.")]:
        state_dict[prefix + "decoder." + key[len(prefix):]] = state_dict.pop(key)  # -> decoder.skip_proj.*


class FEELVOS(nn.Module):
    """FEELVOS network.

    ``embed(image)`` -> stride-4 features and embeddings (computed once per frame and carried in
    inference); ``segment(...)`` -> per-object logits from a frame's features/embeddings, a
    reference frame and the previous frame; ``forward(ref, ref_labels, prev, prev_labels, cur)`` the
    training-time composition of the two.
    """

    def __init__(self, cfg: FEELVOSConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FEELVOSConfig()
        self.backbone = build_backbone(cfg.backbone, output_stride=cfg.output_stride, pretrained=cfg.pretrained,
                                       **cfg.backbone_kwargs)
        # DeepLabv3+ decoder to stride 4: the deep features (stride os) upsampled and fused with the
        # stride-4 skip (projected to 48 channels, as DeepLabv3+) by a 3x3 conv to F channels.
        skip = self.backbone.skip_channels["s4"]
        self.decoder = SkipDecoder(self.backbone.out_channels, skip, cfg.feature_dim, skip_out=min(48, max(8, skip)))
        self.register_load_state_dict_pre_hook(_rename_old_decoder_keys)
        # Pixel embedding: one separable conv (3x3 depthwise + 1x1 pointwise) to C dims, no activation.
        self.embedding = SeparableConv(cfg.feature_dim, cfg.embed_dim, kernel_size=3, relu=False)
        # Dynamic segmentation head, shared by all objects: [F features, global, local, previous] ->
        # head_layers separable convs (k x k, head_dim) -> 1x1 conv -> one logit per object.
        n_maps = int(cfg.use_global) + int(cfg.use_local) + int(cfg.use_prev)
        layers, c_in = [], cfg.feature_dim + n_maps
        for _ in range(cfg.head_layers):
            layers.append(SeparableConv(c_in, cfg.head_dim, cfg.head_kernel))
            c_in = cfg.head_dim
        self.head = nn.Sequential(*layers, nn.Conv2d(c_in, 1, kernel_size=1))
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))  # phases the bootstrapped loss in

    # -- 2a. features and embeddings at stride 4 ---------------------------------------------
    def embed(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> features (B, F, h, w), embeddings (B, C, h, w), (h, w) = stride 4."""
        maps = self.backbone.features(image)  # "out": (B, C_out, H/os, W/os), "s4": (B, C_s4, H/4, W/4)
        features = self.decoder(maps["out"], maps["s4"])  # (B, F, H/4, W/4)
        return features, self.embedding(features)  # (B, F, h, w), (B, C, h, w)

    # -- 2b/2c. matching ---------------------------------------------------------------------
    def global_map(self, emb: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor, n_objects: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Each current pixel's distance to the nearest reference pixel of each object (background =
        object 0): (B, C, h, w), (B, C, h, w), labels (B, h, w) -> (B, K, h, w); objects absent from
        the reference: 1. Chunked; at most ``max_ref_per_object`` reference pixels per object while
        training."""
        cap = self.cfg.max_ref_per_object if self.training else None
        return global_matching(emb, ref_emb, ref_labels, n_objects, chunk_size=self.cfg.chunk_size,
                               max_ref_per_object=cap, generator=generator)

    def local_map(self, emb: torch.Tensor, prev_emb: torch.Tensor, prev_labels: torch.Tensor, n_objects: int,
                  window: int | None = None) -> torch.Tensor:
        """Distance to the nearest previous-frame pixel of each object within k = ``window`` grid cells
        (off-image / none of that object: 1): -> (B, K, h, w)."""
        return local_matching(emb, prev_emb, prev_labels, n_objects, window=self.cfg.window if window is None else window)

    # -- 2d. dynamic segmentation head -------------------------------------------------------
    def head_logits(self, features: torch.Tensor, maps: list[torch.Tensor], valid: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The head run once per object with shared weights.

        features (B, F, h, w); maps: the per-object inputs, each (B, K, h, w) (global, local, previous
        probability, as configured); valid (B, K) bool (objects not in the sample get logit NEG).
        -> logits (B, K, h, w), to be softmaxed across objects.
        """
        B, K = maps[0].shape[:2] if maps else (features.shape[0], valid.shape[1])
        h, w = features.shape[-2:]
        per_object = features.unsqueeze(1).expand(B, K, -1, h, w)  # (B, K, F, h, w): the same features
        x = torch.cat([per_object, *[m.unsqueeze(2) for m in maps]], dim=2)  # (B, K, F + maps, h, w)
        logits = self.head(x.flatten(0, 1)).view(B, K, h, w)  # one batch of B*K object "images"
        if valid is not None:
            logits = logits.masked_fill(~valid[:, :, None, None], NEG)
        return logits

    def segment(self, features: torch.Tensor, emb: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor,
                prev_emb: torch.Tensor, prev_labels: torch.Tensor, prev_prob: torch.Tensor, n_objects: int,
                valid: torch.Tensor | None = None, return_maps: bool = False,
                global_dist: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One frame given its features/embeddings (stride 4), the reference and the previous frame.

        ref_labels, prev_labels: (B, h, w) ids in 0..K-1 (255 void); prev_prob: (B, K, h, w).
        ``global_dist`` replaces the global matching (inference with several reference frames).
        -> {"logits": (B, K, h, w)} (+ "global", "local" (B, K, h, w) with ``return_maps``).
        """
        maps, out = [], {}
        if self.cfg.use_global or return_maps:
            g = global_dist if global_dist is not None else self.global_map(emb, ref_emb, ref_labels, n_objects)
            out["global"] = g
            if self.cfg.use_global:
                maps.append(g)
        if self.cfg.use_local or return_maps:
            loc = self.local_map(emb, prev_emb, prev_labels, n_objects)
            out["local"] = loc
            if self.cfg.use_local:
                maps.append(loc)
        if self.cfg.use_prev:
            maps.append(prev_prob)
        if valid is None:
            valid = torch.ones(features.shape[0], n_objects, dtype=torch.bool, device=features.device)
        result = {"logits": self.head_logits(features, maps, valid)}
        if return_maps:
            result.update(out)
        return result

    def forward(self, ref: torch.Tensor, ref_labels: torch.Tensor, prev: torch.Tensor, prev_labels: torch.Tensor,
                cur: torch.Tensor, n_objects: int | None = None, valid: torch.Tensor | None = None,
                return_maps: bool = False) -> dict[str, torch.Tensor]:
        """Training-time pass on (reference, previous, current) frames.

        ref, prev, cur: (B, 3, H, W); ref_labels, prev_labels: (B, H, W) ids 0..K-1 (255 void) at the
        input size (taken to stride 4 by nearest sampling). The previous prediction is the previous
        frame's ground truth, one-hot (paper, training). -> {"logits": (B, K, H, W)} (upsampled),
        with ``return_maps`` also "global", "local" (B, K, h, w) and "embeddings" (B, C, h, w).
        """
        B = cur.shape[0]
        feats, embs = self.embed(torch.cat([ref, prev, cur]))  # three frames, one backbone pass
        ref_emb, prev_emb, emb = embs.split(B)  # (B, C, h, w) each
        features = feats[2 * B:]  # (B, F, h, w)
        h, w = features.shape[-2:]
        ref_small, prev_small = labels_to_grid(ref_labels, (h, w)), labels_to_grid(prev_labels, (h, w))  # (B, h, w)
        if n_objects is None:
            known = ref_small[ref_small != VOID_LABEL]
            n_objects = int(known.max()) + 1 if known.numel() else 1
        prev_prob = one_hot(prev_small, n_objects)  # (B, K, h, w)
        out = self.segment(features, emb, ref_emb, ref_small, prev_emb, prev_small, prev_prob, n_objects, valid,
                           return_maps)
        out["logits"] = resize(out["logits"], cur.shape[-2:])  # (B, K, H, W)
        if return_maps:
            out["embeddings"] = emb
        return out


def labels_to_grid(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Instance ids (B, H, W) -> (B, h, w) by nearest sampling (the code's stride-4 labels)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def one_hot(labels: torch.Tensor, n_objects: int) -> torch.Tensor:
    """(B, h, w) ids (255 void -> all zero) -> float (B, K, h, w)."""
    index = torch.where(labels == VOID_LABEL, torch.full_like(labels, n_objects), labels)
    return F.one_hot(index, n_objects + 1)[..., :n_objects].permute(0, 3, 1, 2).float()


def build_model(cfg: Preset | None = None) -> FEELVOS:
    """``FEELVOS`` from a preset dict (its "model" section holds FEELVOSConfig fields); the ``real``
    preset's ``train.finetune`` freezes the ImageNet backbone (``voslab.models._real``)."""
    return finetune_backbone(FEELVOS(model_config(FEELVOSConfig, cfg)), cfg)


# ================================================================================================
# 3. Training regime
# ================================================================================================
def hard_pixel_fraction(step: int, top_k_percent: float = 0.15, hard_mining_steps: int = 100_000) -> float:
    """The fraction of pixels the bootstrapped loss keeps at ``step``: 1 at step 0, falling linearly to
    ``top_k_percent`` at ``hard_mining_steps`` (code: hard_example_mining_step), then constant."""
    if hard_mining_steps <= 0:
        return float(top_k_percent)
    ramp = min(max(step, 0) / hard_mining_steps, 1.0)
    return 1.0 - (1.0 - top_k_percent) * ramp


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, fraction: float = 0.15,
                               ignore_index: int = VOID_LABEL) -> torch.Tensor:
    """Softmax cross-entropy averaged over the hardest ``fraction`` of the batch's pixels.

    logits (B, K, H, W), target (B, H, W) long (``ignore_index`` pixels are left out). The per-pixel
    losses of the whole batch are ranked and the top ceil(fraction * n) averaged (code: top_k over the
    flattened batch, top_k_percent_pixels).
    """
    losses = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()  # (B*H*W,)
    losses = losses[(target != ignore_index).flatten()]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, int(np.ceil(fraction * losses.numel())))
    if k >= losses.numel():
        return losses.mean()
    return losses.topk(k, sorted=False).values.mean()


def remap_to_reference(ref: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Renumber a sample's masks to the reference frame's objects: ids present in ``ref`` become
    1..K-1 in increasing order, ids absent from it become background (code: query labels remapped to
    the reference's object set), void stays 255. -> (ref, *others) remapped, then K (int)."""
    ids = [int(v) for v in torch.unique(ref) if int(v) not in (0, VOID_LABEL)]
    table = torch.zeros(256, dtype=torch.long)
    table[VOID_LABEL] = VOID_LABEL
    for new, old in enumerate(ids, start=1):
        table[old] = new
    return (*(table[m.long().clamp(0, 255)] for m in (ref, *others)), len(ids) + 1)


class FEELVOSTriplets(RefPrevCur):
    """:class:`~voslab.data.samplers.RefPrevCur` triplets made FEELVOS samples: masks renumbered to the
    reference frame's objects (:func:`remap_to_reference`), ``n_objects`` () long = K, and samples
    whose reference holds no object of at least ``min_ref_pixels`` pixels (the code: 10 pixels at
    stride 4) or no background redrawn (the code drops them).
    """

    def __init__(self, dataset, min_ref_pixels: int = 160, max_tries: int = 20, **kwargs):
        self.min_ref_pixels, self.max_tries = int(min_ref_pixels), int(max_tries)
        super().__init__(dataset, **kwargs)

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        for _ in range(self.max_tries):  # each try draws anew from the same item generator
            item = super().make_item(index, generator)
            ref, prev, cur, k = remap_to_reference(item["ref_mask"], item["prev_mask"], item["cur_mask"])
            counts = torch.bincount(ref[ref != VOID_LABEL].flatten(), minlength=k)
            if k > 1 and counts[0] > 0 and int(counts[1:].max()) >= self.min_ref_pixels:
                break
        item.update(ref_mask=ref, prev_mask=prev, cur_mask=cur, n_objects=torch.tensor(k))
        return item


def scenario_splits(cfg: Preset, split: str, root: str | Path | None = None) -> dict[str, object]:
    """The sequences of ``split`` by scenario (``voslab.models._common.scenario_splits``), read as
    instance ids (DAVIS-2016's binary masks as object 1)."""
    return _common_scenario_splits(cfg, split, root, TASK)


def train_dataset(cfg: Preset, root: str | Path | None = None) -> FEELVOSTriplets:
    """(reference, previous, current) triplets: the reference drawn at random from the whole video,
    then two adjacent frames (code: train_num_frames_per_video=3, video_input_generator.py), from the
    preset's split (every scenario of ``train.scenarios``). One scale/crop/flip per item (the code draws
    the reference's separately: a documented simplification)."""
    train = section(cfg, "train")
    split = train.get("split", "train")
    videos = [seq for part in scenario_splits(cfg, split, root).values() for seq in part]
    return FEELVOSTriplets(videos, **sampler_options(cfg))


def training_step(model: FEELVOS, batch: Mapping[str, torch.Tensor], cfg: Preset | None = None) -> dict:
    """Bootstrapped softmax cross-entropy on the current frame. -> {"loss", "ce", "top_k", "acc"}.

    The previous frame's ground truth drives local matching and is the previous prediction; objects
    of other samples in the batch get logit NEG (each sample has its own K).
    """
    net = getattr(model, "module", model)
    n = batch["n_objects"].long()  # (B,)
    K = int(n.max())
    valid = torch.arange(K, device=n.device)[None] < n[:, None]  # (B, K)
    out = model(batch["ref"], batch["ref_mask"], batch["prev"], batch["prev_mask"], batch["cur"], n_objects=K,
                valid=valid)
    logits, target = out["logits"], batch["cur_mask"].long()  # (B, K, H, W), (B, H, W)
    fraction = hard_pixel_fraction(int(net.train_steps), net.cfg.top_k_percent, net.cfg.hard_mining_steps)
    loss = bootstrapped_cross_entropy(logits, target, fraction)
    if net.training and torch.is_grad_enabled():
        net.train_steps += 1
    with torch.no_grad():
        known = target != VOID_LABEL
        ce = F.cross_entropy(logits, target, ignore_index=VOID_LABEL)
        acc = (logits.argmax(1) == target)[known].float().mean()
    return {"loss": loss, "ce": ce, "top_k": torch.tensor(fraction), "acc": acc}


# ================================================================================================
# 4. Inference protocol
# ================================================================================================
@torch.no_grad()
def iter_video(model: FEELVOS, frames: Iterable[np.ndarray], given: Mapping[int, np.ndarray],
               opts: FEELVOSConfig | None = None, window: int | None = None, return_maps: bool = False):
    """FEELVOS online inference, one frame at a time: yields ``{"t", "mask": uint8 (H, W) ids, "prob":
    (K, h, w)}`` (+ ``"global"``, ``"local"`` (K, h, w) with ``return_maps``) per frame, in order.

    frames: any iterable of uint8 (H, W, 3) frames (an array (T, H, W, 3), or frames read one by one:
    memory then does not grow with the video's length); given: {frame index: uint8 (H, W) mask of the
    objects whose mask is given at that frame (ids 1..; 0 elsewhere)}; frame 0 must be among them.
    Objects are tracked from the frame where they are given (late entrants join then, their logits held
    at NEG before). Per frame: embed once, global matching to every object's given pixels (background
    from frame 0), local matching to the previous frame's embeddings and argmax labels, head on
    [features, global, local, previous softmax], softmax across objects; the given masks override the
    prediction at their frames. K = 1 + the largest given id.
    """
    opts = opts or model.cfg
    device = next(model.parameters()).device
    if 0 not in given:
        raise ValueError("predict_video: the first frame's mask must be given (semi-supervised protocol)")
    K = 1 + max(int(m.max()) for m in given.values())
    starts = {}
    for t in sorted(given):
        for obj in np.unique(given[t]):
            if obj not in (0, VOID_LABEL):
                starts.setdefault(int(obj), t)
    valid = torch.zeros(1, K, dtype=torch.bool, device=device)
    valid[0, 0] = True
    refs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (embeddings (1, C, h, w), labels (1, h, w)) per given frame
    prev_emb = prev_labels = prev_prob = None
    for t, frame in enumerate(frames):
        H, W = frame.shape[:2]
        size = opts.inference_size or (H, W)
        image = resize(to_image_tensor(frame[None], device), size)  # (1, 3, H', W')
        features, emb = model.embed(image)  # (1, F, h, w), (1, C, h, w)
        h, w = emb.shape[-2:]
        if t in given:
            full = torch.from_numpy(given[t].astype(np.int64)).to(device)[None]  # (1, H, W)
            new = [o for o, s in starts.items() if s == t]
            small = labels_to_grid(full, (h, w))  # (1, h, w)
            keep = torch.zeros_like(small, dtype=torch.bool)
            for o in new:
                keep |= small == o
            if t == 0:
                keep |= small == 0  # the background's reference pixels: frame 0
            refs.append((emb, torch.where(keep, small, torch.full_like(small, VOID_LABEL))))
            for o in new:
                valid[0, o] = True
        if t == 0:
            labels = labels_to_grid(torch.from_numpy(given[0].astype(np.int64)).to(device)[None], (h, w))
            prob = one_hot(labels, K)  # (1, K, h, w)
            mask = given[0].astype(np.uint8)
            g = l = torch.ones(1, K, h, w, device=device)
        else:
            g = torch.stack([model.global_map(emb, r_emb, r_lab, K) for r_emb, r_lab in refs]).amin(0)  # (1, K, h, w)
            l = model.local_map(emb, prev_emb, prev_labels, K, window)  # (1, K, h, w)
            maps = ([g] if model.cfg.use_global else []) + ([l] if model.cfg.use_local else []) \
                + ([prev_prob] if model.cfg.use_prev else [])
            logits = model.head_logits(features, maps, valid)  # (1, K, h, w)
            prob = logits.softmax(1)
            labels = prob.argmax(1)  # (1, h, w)
            mask = resize(logits, (H, W)).argmax(1)[0].cpu().numpy().astype(np.uint8)  # (H, W) at the video's size
            if t in given:  # a late entrant's mask is given here: it overrides the prediction
                given_t = torch.from_numpy(given[t].astype(np.int64)).to(device)[None]
                new_mask = torch.zeros_like(given_t, dtype=torch.bool)
                for o in (o for o, s in starts.items() if s == t):
                    new_mask |= given_t == o
                mask[new_mask[0].cpu().numpy()] = given[t][new_mask[0].cpu().numpy()]
                small = labels_to_grid(torch.where(new_mask, given_t, torch.zeros_like(given_t)), (h, w))
                labels = torch.where(small > 0, small, labels)
                prob = torch.where((small > 0)[:, None], one_hot(small, K), prob)
        prev_emb, prev_labels, prev_prob = emb, labels, prob
        step = {"t": t, "mask": mask, "prob": prob[0].cpu()}
        if return_maps:
            step.update({"global": g[0].cpu(), "local": l[0].cpu()})
        yield step


def predict_video(model: FEELVOS, frames: np.ndarray, given: Mapping[int, np.ndarray],
                  opts: FEELVOSConfig | None = None, window: int | None = None, return_maps: bool = False) -> dict:
    """FEELVOS online inference on one video (:func:`iter_video`, collected).

    frames: uint8 (T, H, W, 3); given: as for :func:`iter_video`.
    -> {"masks": uint8 (T, H, W) ids, "probs": float (T, K, h, w)} (+ "global", "local" (T, K, h, w)
    with ``return_maps``); K = 1 + the largest given id.
    """
    steps = list(iter_video(model, frames, given, opts, window, return_maps))
    result = {"masks": np.stack([s["mask"] for s in steps]), "probs": torch.stack([s["prob"] for s in steps])}
    if return_maps:
        result.update({key: torch.stack([s[key] for s in steps]) for key in ("global", "local")})
    return result


def predict_sequence(model: FEELVOS, seq, cfg: Preset | None = None) -> np.ndarray:
    """FEELVOS's inference protocol on one video (:func:`predict_video` with the video's given masks).
    -> uint8 (T, H, W) object ids at the video's size. ``cfg``: a preset dict; its "eval" section
    overrides the inference fields of ``model.cfg`` (e.g. ``window``, ``inference_size``)."""
    opts = inference_config(model.cfg, cfg)
    return predict_video(model, seq.frames(), given_masks(seq), opts, window=opts.window)["masks"]


def predict_stream(model: FEELVOS, seq, cfg: Preset | None = None):
    """:func:`predict_sequence`, streamed: yields ``(t, uint8 (H, W) ids)`` in frame order, reading
    one frame at a time, so memory does not grow with the video's length (``voslab predict``)."""
    opts = inference_config(model.cfg, cfg)
    frames = (seq.frames([t])[0] for t in range(len(seq)))
    for step in iter_video(model, frames, given_masks(seq), opts, window=opts.window):
        yield step["t"], step["mask"]


# ================================================================================================
# 5. Presets: FEELVOS's differences from voslab.models._common.BASE_PRESETS (the shared data splits)
# ================================================================================================
PRESETS: dict[str, Preset] = with_base_presets({
    # CI: whole train + eval in seconds on 2 cores (a check that everything runs, not a result).
    "smoke": {
        "data": {"train": {"scenario": "identical_instances"}, "val": {"scenario": "identical_instances"}},
        "model": {"backbone": "tiny", "backbone_kwargs": {"width": 8}, "feature_dim": 16, "embed_dim": 8,
                  "head_layers": 1, "head_kernel": 3, "head_dim": 16, "window": 2, "max_ref_per_object": 1024,
                  "hard_mining_steps": 10},
        "train": {"scenarios": list(FEELVOS_SCENARIOS), "steps": 12, "ablation_steps": 4, "ablation_seeds": [0],
                  "batch_size": 2, "lr": 3e-3, "optimizer": "adam", "size": (64, 112), "augment": False},
    },
    # A learner's 2-core laptop: notebook 05 with its ablation (both / global / local x 3 seeds, no
    # previous prediction) on FEELVOS's two scenarios in equal parts (300 train / 48 val videos). Grid
    # 18x32 at stride 4: the paper's k = 15 would cover the whole frame, so k = 4 (about the paper's
    # window relative to its 117x117 grid, doubled for the fast synthetic objects).
    "cpu": {
        "data": {"train": {"scenario": "identical_instances"},
                 "val": {"scenario": "identical_instances", "n_videos": 48}},
        "model": {"backbone": "tiny", "backbone_kwargs": {"width": 8}, "feature_dim": 32, "embed_dim": 16,
                  "head_layers": 2, "head_kernel": 5, "head_dim": 32, "window": 4, "max_ref_per_object": 1024,
                  "hard_mining_steps": 100},
        "train": {"scenarios": list(FEELVOS_SCENARIOS), "steps": 200, "ablation_steps": 200,
                  "ablation_seeds": [0, 1, 2], "batch_size": 4, "lr": 3e-3, "optimizer": "adam",
                  "size": (72, 128), "augment": True},
    },
    # The paper's setting as far as known: DeepLabv3+ (here ResNet-101 DeepLabv3 via torchvision),
    # momentum SGD 0.0007 poly, 465x465 crops (480p frames here), grad clip 5, 200k steps.
    "gpu": {
        "model": {"backbone": "deeplabv3_resnet101", "output_stride": 16, "feature_dim": 256, "embed_dim": 100,
                  "head_layers": 4, "head_kernel": 7, "head_dim": 256, "window": 15, "max_ref_per_object": 1024,
                  "hard_mining_steps": 100_000},
        "train": {"scenarios": list(FEELVOS_SCENARIOS), "steps": 200_000, "ablation_steps": 20_000, "batch_size": 6,
                  "lr": 7e-4, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 4e-5, "grad_clip": 5.0,
                  "size": (465, 465), "augment": True},
    },
    # Real video on 2 CPU cores: voslab's ImageNet MobileNetV2 frozen (features cached,
    # voslab.models._real) on the DAVIS-2016 train frames at 240p (25 sequences train, 5 held out;
    # one object per video). Grid 60x107 at stride 4: k = 8.
    "real": {
        "model": {"backbone": "mobilenet_v2", "pretrained": True, "output_stride": 16,
                  "backbone_kwargs": {"out_channels": 64}, "feature_dim": 64, "embed_dim": 32, "head_layers": 2,
                  "head_kernel": 7, "head_dim": 64, "window": 8, "max_ref_per_object": 1024,
                  "hard_mining_steps": 500},
        "train": {"steps": 1500, "ablation_steps": 1500, "batch_size": 2, "lr": 1e-3, "optimizer": "adam",
                  "finetune": {"trainable_blocks": 0, "cache_mb": 2048}},
        "eval": {"inference_size": (240, 427)},
    },
})
