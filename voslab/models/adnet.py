"""AD-Net: Anchor Diffusion for Unsupervised Video Object Segmentation (Yang et al., ICCV 2019).

Read top to bottom in the paper's order:

1. :class:`ADNetConfig` - the options, including the switches where the official code differs
   from the paper (threshold on the raw logit, the hidden previous-mask dilation, the grid the
   anchor-diffusion output is laid on).
2. :class:`ADNet` - a shared backbone embeds the anchor frame X_0 (the video's first frame) and the
   current frame X_t into C-dimensional pixel embeddings; three branches are concatenated
   (anchor diffusion, intra-frame non-local, skip) and a small head predicts one foreground logit.
   The paper's Table-1 ablations (base / concat / intra / inter / full) are variants of this one
   model (``ADNetConfig.variant``).
3. The regime: :func:`train_dataset`, :func:`training_step`, :func:`configure_optimizer`. The
   official repository (yz93/anchor-diff-VOS) has **no training code**: everything here is written
   from the paper and marked *unverified* where it is a guess.
4. The inference protocol :func:`predict_sequence` (anchor = first frame, each frame against it,
   optional multi-scale + mirror, threshold, optional heuristics and instance pruning).
5. :data:`PRESETS` (smoke / cpu / gpu), :data:`TASK`, :func:`build_model` for ``voslab.zoo``.

Shapes: B batch, C embedding channels (paper: 128), (h, w) = the embedding grid (input / output
stride), N = h*w positions, (H, W) the input size.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voslab.data.samplers import FramePairs
from voslab.data.transforms import to_image_tensor
from voslab.flow import video_flow
from voslab.models._common import (Preset, batch_iou, check_choice, davis_split, hflip_if, inference_config,
                                   model_config, paper_backbone, resize, sampler_options, section, with_base_presets)
from voslab.models._real import finetune_backbone
from voslab.nn.attention import NonLocal, diffusion, flatten_spatial
from voslab.nn.modules import SkipDecoder
from voslab.postprocess import gate_by_previous_mask, prune_static_instances

__all__ = [
    "ADNetConfig",
    "ADNet",
    "VARIANT_BRANCHES",
    "build_model",
    "train_dataset",
    "training_step",
    "predict_sequence",
    "predict_stream",
    "predict_logits",
    "chunk_frames",
    "binarize",
    "PRESETS",
    "TASK",
]

TASK = "unsupervised"

# Which branches each ablation of the paper's Table 1 concatenates before the head, in order.
#   base   : the current frame's embedding only (paper: plain DeepLabv3 with a 1-channel output)
#   concat : anchor and current embeddings side by side (no correspondence computed)
#   intra  : intra-frame non-local (X_t attends to itself) + skip
#   inter  : anchor diffusion (X_t <-> X_0 transition) + skip
#   full   : anchor diffusion + intra + skip  (the paper's AD-Net)
VARIANT_BRANCHES: dict[str, tuple[str, ...]] = {
    "base": ("skip",),
    "concat": ("anchor", "skip"),
    "intra": ("intra", "skip"),
    "inter": ("anchor_diffusion", "skip"),
    "full": ("anchor_diffusion", "intra", "skip"),
}


# ================================================================================================
# 1. Configuration
# ================================================================================================
@dataclass
class ADNetConfig:
    """AD-Net options. Defaults follow the paper; ``# code:`` marks the official code's behaviour.

    Model:
        backbone: "tiny" | "mobilenet_v2" | "deeplabv3_resnet101" (paper: DeepLabv3-ResNet101).
        output_stride: backbone output stride (paper: 8).
        embed_dim: C, the pixel-embedding width (paper: 128).
        variant: "base" | "concat" | "intra" | "inter" | "full" (paper Table 1).
        dropout: Dropout2d rate in the head (paper code: 0.1).
        diffusion_layout: the form of the anchor-diffusion branch.
            "anchor" (default: the paper's Figure 2, "pixel embeddings in the current frame are
            linearly transformed by similarity scores with pixel embeddings in the anchor frame",
            and the official nets.py): P = softmax over current positions j of
            <x_0(i), x_t(j)> / sqrt(C), out(i) = sum_j P[i, j] x_t(j). Row i is an *anchor* position:
            the output, a mix of current-frame embeddings, lies on the anchor frame's grid (when
            both frames have one size it is concatenated with X_t position by position).
            "current" (a voslab variant, measured in notebook 03): the roles swapped,
            out(j) = sum_i softmax_i(<x_t(j), x_0(i)> / sqrt(C)) x_0(i), anchor embeddings mixed onto
            the current frame's grid.
        decoder: "none" (paper: the head's logit, at the embedding grid, upsampled bilinearly) or "s4"
            (a voslab option for the ``real`` preset, not in the paper or the official code: the head's
            hidden features go through a DeepLabv3+ decoder with the backbone's stride-4 map before
            the logit, ``voslab.nn.modules.SkipDecoder``). The paper's grid is 61x108 (481x857 input,
            stride 8); the laptop's 240p input at stride 16 gives 15x27, too coarse for thin objects.
        decoder_channels: the decoder's width (with ``decoder="s4"``).
        backbone_kwargs: extra arguments for ``voslab.nn.backbones.build_backbone``.
        pretrained: load ImageNet weights into the backbone (mobilenet_v2; see build_backbone).

    Inference (``predict_sequence``; a preset's "eval" dict overrides these):
        threshold_on: "probability" (paper: sigmoid(logit) > threshold, i.e. logit > 0 at 0.5) or
            "logit" (# code: eval.py compares the raw logit with 0.5, i.e. sigmoid > 0.62).
        threshold: the decision threshold (0.5 in both).
        prev_mask_dilation: # code: always on in eval.py, not in the paper. Multiply each
            prediction by the previous frame's mask, opened 15x15 and dilated 101x101 (at 480x854;
            scaled to the frame size), when its area is in (5e3, 1e5) px (scaled likewise).
        scales, mirror: multi-scale + horizontal-flip test-time augmentation; logits are averaged
            (# code: scales (0.75, 1.0, 1.5) with mirror = 6 passes).
        inference_size: (H, W) the frames are resized to before the network (# code: 481x857);
            None keeps the video's size. Masks are always returned at the video's original size.
        instance_pruning: remove small instances that stay static w.r.t. the camera
            (``voslab.postprocess.prune_static_instances``; replaces the paper's detector step).
        pruning_flow: the optical flow pruning reads: "estimated" (OpenCV DIS from the frames, what
            a real video gives) or "oracle" (the flow stored with the dataset, e.g. the synthetic
            ground truth: label any score that uses it "oracle").
        batch_frames: frames per forward pass at inference.
    """

    # model
    backbone: str = "tiny"
    output_stride: int = 8
    embed_dim: int = 128
    variant: str = "full"
    dropout: float = 0.1
    diffusion_layout: str = "anchor"
    decoder: str = "none"
    decoder_channels: int = 64
    backbone_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    # inference
    threshold_on: str = "probability"
    threshold: float = 0.5
    prev_mask_dilation: bool = False
    scales: tuple[float, ...] = (1.0,)
    mirror: bool = False
    inference_size: tuple[int, int] | None = None
    instance_pruning: bool = False
    pruning_flow: str = "estimated"
    batch_frames: int = 8

    def __post_init__(self) -> None:
        check_choice("ADNetConfig", "variant", self.variant, tuple(VARIANT_BRANCHES))
        check_choice("ADNetConfig", "diffusion_layout", self.diffusion_layout, ("anchor", "current"))
        check_choice("ADNetConfig", "decoder", self.decoder, ("none", "s4"))
        check_choice("ADNetConfig", "threshold_on", self.threshold_on, ("probability", "logit"))
        check_choice("ADNetConfig", "pruning_flow", self.pruning_flow, ("estimated", "oracle"))
        self.scales = tuple(float(s) for s in self.scales)
        if self.inference_size is not None:
            self.inference_size = (int(self.inference_size[0]), int(self.inference_size[1]))
        if self.threshold_on == "probability" and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"ADNetConfig.threshold={self.threshold} must be in (0, 1) when "
                             "threshold_on='probability' (or set threshold_on='logit')")


# ================================================================================================
# 2. The model
# ================================================================================================
class ADNet(nn.Module):
    """Anchor-diffusion network.

    ``forward(anchor, frame)`` = ``head(embed(anchor), embed(frame))``: the split lets
    :func:`predict_sequence` embed the anchor once per video.
    """

    def __init__(self, cfg: ADNetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ADNetConfig()
        self.branches = VARIANT_BRANCHES[cfg.variant]
        self.backbone = paper_backbone(cfg, "ADNet")
        c = cfg.embed_dim
        # Pixel embedding: 1x1 projection of the backbone output to C channels (paper: ASPP -> 128).
        self.embedding = nn.Conv2d(self.backbone.out_channels, c, kernel_size=1)
        # Intra-frame branch: the parameter-free non-local block (no theta/phi/g, no residual).
        self.intra = NonLocal(c, parameter_free=True)
        # Head: concat(k branches) -> 1x1 conv kC->C -> BN + LeakyReLU(0.01) (the official in-place
        # ABN) -> Dropout2d -> 1x1 conv C->1 foreground logit.
        hidden = [nn.Conv2d(len(self.branches) * c, c, kernel_size=1, bias=False), nn.BatchNorm2d(c),
                  nn.LeakyReLU(0.01, inplace=True), nn.Dropout2d(cfg.dropout)]
        if cfg.decoder == "none":
            self.head_layers = nn.Sequential(*hidden, nn.Conv2d(c, 1, kernel_size=1))
        else:  # "s4" (voslab option): the hidden map -> DeepLabv3+ decoder at stride 4 -> 1x1 conv logit
            self.head_layers = nn.Sequential(*hidden)
            self.decoder = SkipDecoder(c, self.backbone.skip_channels["s4"], cfg.decoder_channels)
            self.logit = nn.Conv2d(cfg.decoder_channels, 1, kernel_size=1)

    # -- pixel embeddings ------------------------------------------------------------------
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> pixel embeddings (B, C, h, w)."""
        return self.embedding(self.backbone(image))  # (B, C, H/os, W/os)

    def embed_frame(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The current frame: (B, 3, H, W) -> (pixel embeddings (B, C, h, w), the stride-4 skip map
        (B, C_s4, H/4, W/4) for the decoder, or None without one)."""
        if self.cfg.decoder == "none":
            return self.embed(image), None
        maps = self.backbone.features(image)
        return self.embedding(maps["out"]), maps["s4"]

    # -- the three branches ----------------------------------------------------------------
    def anchor_diffusion(self, anchor_emb: torch.Tensor, frame_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor-diffusion branch. -> (out (B, C, h, w), transition P (B, N_0, N_t) or (B, N_t, N_0)).

        Layout "anchor" (paper, official code): P[i, j] = softmax_j(<x_0(i), x_t(j)> / sqrt(C)), rows =
        anchor positions; out(i) = sum_j P[i, j] x_t(j), on the anchor grid.
        Layout "current": P[j, i] = softmax_i(<x_t(j), x_0(i)> / sqrt(C)), rows = current-frame
        positions; out(j) = sum_i P[j, i] x_0(i), on the current grid.
        The softmax keeps the output a convex mix of embeddings (same scale as its inputs); sqrt(C)
        is a temperature that keeps the dot products of C-dimensional embeddings from saturating it.
        """
        x0, xt = flatten_spatial(anchor_emb), flatten_spatial(frame_emb)  # (B, C, N_0), (B, C, N_t)
        if self.cfg.diffusion_layout == "anchor":
            out, transition = diffusion(x0, xt, xt, return_attention=True)  # (B, C, N_0), (B, N_0, N_t)
            return out.view_as(anchor_emb), transition
        out, transition = diffusion(xt, x0, x0, return_attention=True)  # (B, C, N_t), (B, N_t, N_0)
        return out.view_as(frame_emb), transition

    def intra_frame(self, frame_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Intra-frame branch: the same diffusion with X_t attending to itself.

        -> (out (B, C, h, w), P (B, N, N)) with P[j, k] = softmax_k(<x_t(j), x_t(k)> / sqrt(C)),
        out(j) = sum_k P[j, k] x_t(k).
        """
        return self.intra(frame_emb, return_attention=True)  # (B, C, h, w), (B, N, N)

    def branch_outputs(self, anchor_emb: torch.Tensor, frame_emb: torch.Tensor) -> tuple[dict, dict]:
        """The variant's branches in concatenation order, each (B, C, h, w), and their maps."""
        outputs, maps = {}, {}
        for name in self.branches:
            if name == "anchor_diffusion":
                outputs[name], maps["transition"] = self.anchor_diffusion(anchor_emb, frame_emb)
            elif name == "intra":
                outputs[name], maps["intra"] = self.intra_frame(frame_emb)
            elif name == "anchor":
                outputs[name] = anchor_emb
            else:  # "skip"
                outputs[name] = frame_emb
        return outputs, maps

    # -- head ------------------------------------------------------------------------------
    def head(self, anchor_emb: torch.Tensor, frame_emb: torch.Tensor, out_size: tuple[int, int],
             return_maps: bool = False, skip: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Embeddings (B, C, h, w) x 2 (+ the frame's stride-4 ``skip`` with ``decoder="s4"``, from
        :meth:`embed_frame`) -> {"logits": (B, 1, H, W)} (+ maps)."""
        if anchor_emb.shape != frame_emb.shape:
            raise ValueError(f"anchor embedding {tuple(anchor_emb.shape)} and frame embedding "
                             f"{tuple(frame_emb.shape)} differ: resize the anchor and the frame to one size")
        outputs, maps = self.branch_outputs(anchor_emb, frame_emb)
        features = torch.cat(list(outputs.values()), dim=1)  # (B, kC, h, w)
        if self.cfg.decoder == "none":
            logits = self.head_layers(features)  # (B, 1, h, w)
        else:
            if skip is None:
                raise ValueError("ADNet with decoder='s4' needs the frame's stride-4 map: "
                                 "frame_emb, skip = model.embed_frame(frame); model.head(..., skip=skip)")
            logits = self.logit(self.decoder(self.head_layers(features), skip))  # (B, 1, H/4, W/4)
        logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)  # (B, 1, H, W)
        result = {"logits": logits}
        if return_maps:
            result.update(anchor_emb=anchor_emb, frame_emb=frame_emb, **maps)
        return result

    def forward(self, anchor: torch.Tensor, frame: torch.Tensor, return_maps: bool = False) -> dict[str, torch.Tensor]:
        """anchor, frame: (B, 3, H, W) in [0, 1] -> {"logits": (B, 1, H, W)}.

        With ``return_maps``: also "anchor_emb", "frame_emb" (B, C, h, w) and, for the variants that
        compute them, "transition" (B, N, N) (anchor diffusion) and "intra" (B, N, N).
        """
        if anchor.shape != frame.shape:
            raise ValueError(f"anchor {tuple(anchor.shape)} and frame {tuple(frame.shape)} must have one shape")
        # Two backbone passes (not one on the concatenated batch) so that, in training mode, batch
        # norm statistics of the frames never depend on the anchors: the `base` variant then truly
        # ignores the anchor, and training matches inference, where the anchor is embedded alone.
        anchor_emb = self.embed(anchor)  # (B, C, h, w)
        frame_emb, skip = self.embed_frame(frame)  # (B, C, h, w), stride-4 map or None
        return self.head(anchor_emb, frame_emb, frame.shape[-2:], return_maps, skip)


def build_model(cfg: Preset | None = None) -> ADNet:
    """``ADNet`` from a preset dict (its "model" section holds ADNetConfig fields); the ``real``
    preset's ``train.finetune`` freezes the ImageNet backbone (``voslab.models._real``)."""
    return finetune_backbone(ADNet(model_config(ADNetConfig, cfg)), cfg)


# ================================================================================================
# 3. Training regime (the official repository has no training code: written from the paper)
# ================================================================================================
def train_dataset(cfg: Preset, root: str | Path | None = None) -> FramePairs:
    """Anchor/current frame pairs: the anchor is the video's first frame, the other frame is drawn
    at random from the same video (paper: "sampled from the same video"; exact sampling unverified).

    ``root``: a DAVIS-2016-layout folder (real DAVIS, or voslab's synthetic set); None generates
    the preset's synthetic train split.
    """
    train = section(cfg, "train")
    videos = davis_split(cfg, train.get("split", "train"), root, TASK)
    return FramePairs(videos, anchor="first", **sampler_options(cfg))


def training_step(model: ADNet, batch: Mapping[str, torch.Tensor], cfg: Preset | None = None) -> dict:
    """Binary cross-entropy on the foreground logit (paper). -> {"loss", "iou"}.

    ``cfg["train"]["pos_weight"]`` (optional) up-weights foreground pixels (not in the paper).
    """
    out = model(batch["anchor"], batch["frame"])
    logits, target = out["logits"], batch["mask"].float()  # (B, 1, H, W) each
    pos_weight = section(cfg, "train").get("pos_weight")
    weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    return {"loss": loss, "iou": batch_iou(logits.detach() > 0, target > 0.5)}


# ================================================================================================
# 4. Inference protocol
# ================================================================================================
#: Memory budget (bytes) for the N x N transition matrices of one chunk of frames at inference
#: (about 3 live N x N float32 matrices per frame: anchor diffusion, intra-frame, softmax temporaries).
MATRIX_BUDGET_BYTES = 512 * 2**20


def _passes(cfg: ADNetConfig, size: tuple[int, int]) -> list[tuple[tuple[int, int], bool]]:
    """The test-time passes: ((H', W') scaled size, mirrored) for every scale (x mirror)."""
    base = cfg.inference_size or size
    return [((max(8, round(base[0] * s)), max(8, round(base[1] * s))), flip)
            for s in cfg.scales for flip in ((False, True) if cfg.mirror else (False,))]


def chunk_frames(cfg: ADNetConfig, size: tuple[int, int], budget: int = MATRIX_BUDGET_BYTES) -> int:
    """Frames per forward pass at inference: ``cfg.batch_frames``, lowered so that the N x N matrices
    of a chunk (about 3 x chunk x N^2 x 4 bytes, N = positions of the largest scaled embedding grid)
    fit in ``budget``; at least 1. E.g. 480p at stride 8: N = 60 x 107 = 6420, 165 MB a matrix -> 1."""
    stride = cfg.output_stride
    n = max(math.ceil(h / stride) * math.ceil(w / stride) for (h, w), _ in _passes(cfg, size))
    return max(1, min(cfg.batch_frames, budget // (3 * n * n * 4)))


@torch.no_grad()
def embed_anchor(model: ADNet, first_frame: np.ndarray, cfg: ADNetConfig) -> list:
    """The anchor (first frame, ``uint8 (H, W, 3)``) embedded once per pass -> [(scaled size, flip,
    anchor embedding (1, C, h, w))], reused for every chunk of the video."""
    device = next(model.parameters()).device
    anchor = to_image_tensor(first_frame[None], device)  # (1, 3, H, W)
    return [(scaled, flip, model.embed(hflip_if(resize(anchor, scaled), flip)))
            for scaled, flip in _passes(cfg, tuple(anchor.shape[-2:]))]


@torch.no_grad()
def chunk_logits(model: ADNet, frames: np.ndarray, anchors: list) -> torch.Tensor:
    """Foreground logits of a chunk of frames ``uint8 (b, H, W, 3)`` against the embedded anchor
    (:func:`embed_anchor`), averaged over the passes. -> (b, 1, H, W) at the frames' size."""
    device = next(model.parameters()).device
    video = to_image_tensor(frames, device)  # (b, 3, H, W)
    size = tuple(video.shape[-2:])
    total = torch.zeros(len(video), 1, *size, device=device)
    for scaled, flip, anchor_emb in anchors:
        chunk = hflip_if(resize(video, scaled), flip)  # (b, 3, H', W')
        frame_emb, skip = model.embed_frame(chunk)  # (b, C, h, w), stride-4 map or None
        logits = model.head(anchor_emb.expand_as(frame_emb), frame_emb, scaled, skip=skip)["logits"]  # (b,1,H',W')
        total += resize(hflip_if(logits, flip), size)
    return total / len(anchors)


@torch.no_grad()
def predict_logits(model: ADNet, frames: np.ndarray, cfg: ADNetConfig) -> torch.Tensor:
    """Foreground logits of every frame against the first one. -> (T, 1, H, W) at the frames' size.

    For each scale s and (optionally) the mirrored pair, the anchor is embedded once; frames are
    processed in chunks of :func:`chunk_frames` (``cfg.batch_frames`` or fewer, to bound the N x N
    matrices) against it; logits are resized back and averaged.
    """
    anchors = embed_anchor(model, frames[0], cfg)
    step = chunk_frames(cfg, tuple(frames.shape[1:3]))
    return torch.cat([chunk_logits(model, frames[start:start + step], anchors)
                      for start in range(0, len(frames), step)])


def binarize(logits: torch.Tensor, threshold_on: str = "probability", threshold: float = 0.5) -> torch.Tensor:
    """Logits -> bool masks. "probability": sigmoid(logit) > threshold (paper);
    "logit": logit > threshold (official eval.py, i.e. sigmoid > 0.62 at 0.5)."""
    if threshold_on == "logit":
        return logits > threshold
    return logits > math.log(threshold / (1.0 - threshold))  # sigmoid(l) > t  <=>  l > logit(t)


def predict_stream(model: ADNet, seq, cfg: Preset | None = None):
    """AD-Net's inference protocol, streamed: yields ``(t, uint8 (H, W) mask in {0, 1})`` in frame
    order, reading the frames chunk by chunk (``seq.frames(indices)``), so memory does not grow with
    the video's length. The anchor is embedded once; the previous-mask gate is carried across chunks.
    Instance pruning needs the whole video's flow: with it on, this runs :func:`predict_sequence`
    and yields its masks (memory then grows with the length; a warning says so).
    Run it in eval mode (``voslab.inference.iter_predictions`` does).
    """
    opts = inference_config(model.cfg, cfg)
    if opts.instance_pruning:
        import warnings

        warnings.warn("AD-Net: instance_pruning needs the whole video, so prediction is not streamed "
                      "(memory grows with the video's length); set eval.instance_pruning=false to stream",
                      stacklevel=2)
        yield from enumerate(predict_sequence(model, seq, cfg))
        return
    yield from _stream_masks(model, seq, opts)


def _stream_masks(model: ADNet, seq, opts: ADNetConfig):
    """Threshold + previous-mask gate over the chunks of ``seq``: yields ``(t, uint8 (H, W))``."""
    n = len(seq)
    read = _chunk_reader(seq)
    size = tuple(seq.size) if hasattr(seq, "size") else tuple(read(range(1)).shape[1:3])
    step = chunk_frames(opts, size)
    anchors = None
    previous = None
    for start in range(0, n, step):
        frames = read(range(start, min(start + step, n)))  # (b, H, W, 3) uint8
        if anchors is None:
            anchors = embed_anchor(model, frames[0], opts)
        logits = chunk_logits(model, frames, anchors)  # (b, 1, H, W)
        masks = binarize(logits[:, 0], opts.threshold_on, opts.threshold).cpu().numpy().astype(np.uint8)
        for i, mask in enumerate(masks):
            if opts.prev_mask_dilation and previous is not None:
                mask = gate_by_previous_mask(mask, previous)
            previous = mask
            yield start + i, mask


def _chunk_reader(seq):
    """``read(indices) -> uint8 (b, H, W, 3)``: ``seq.frames(indices)`` (a voslab ``Sequence`` reads only
    those files); a duck-typed sequence whose ``frames()`` takes no indices is read once and sliced."""
    import inspect

    if inspect.signature(seq.frames).parameters:
        return seq.frames
    frames = seq.frames()
    return lambda indices: frames[indices.start:indices.stop]


def predict_sequence(model: ADNet, seq, cfg: Preset | None = None) -> np.ndarray:
    """AD-Net's inference protocol on one video. -> uint8 (T, H, W) in {0, 1} at the video's size.

    Anchor = the first frame, fixed for the whole video; every frame (the first included) is
    segmented independently against it (no recurrence). Then, as configured: threshold, the
    official code's previous-mask gate, flow-based instance pruning.
    Frames go through the network in chunks bounded by :func:`chunk_frames`; the whole video's
    frames and logits are held (for long videos use :func:`predict_stream`, which gives the same masks).
    ``cfg``: a preset dict; its "eval" section overrides the inference fields of ``model.cfg``.
    Run it through ``voslab.inference.predict(model, seq, fn)``, which sets eval mode.
    """
    opts = inference_config(model.cfg, cfg)
    logits = predict_logits(model, seq.frames(), opts)  # (T, 1, H, W)
    masks = binarize(logits[:, 0], opts.threshold_on, opts.threshold).cpu().numpy().astype(np.uint8)  # (T, H, W)
    if opts.prev_mask_dilation:
        for t in range(1, len(masks)):
            masks[t] = gate_by_previous_mask(masks[t], masks[t - 1])
    if opts.instance_pruning:
        method = "gt" if opts.pruning_flow == "oracle" else "dis"
        masks = prune_static_instances(masks, video_flow(seq, "forward", method=method, cache=False))  # flow (T,H,W,2)
    return masks


# ================================================================================================
# 5. Presets: AD-Net's differences from voslab.models._common.BASE_PRESETS (the shared data splits)
# ================================================================================================
PRESETS: dict[str, Preset] = with_base_presets({
    # CI: whole train + eval in seconds on 2 cores (a check that everything runs, not a result).
    "smoke": {
        "data": {"train": {"scenario": "transient_lookalikes"}, "val": {"scenario": "transient_lookalikes"}},
        "model": {"backbone": "tiny", "output_stride": 8, "embed_dim": 32, "variant": "full",
                  "diffusion_layout": "anchor",
                  "backbone_kwargs": {"width": 8}},
        "train": {"steps": 60, "ablation_steps": 20, "ablation_seeds": [0], "batch_size": 4, "lr": 3e-3,
                  "optimizer": "adam", "pos_weight": 4.0, "size": (64, 112), "augment": False},
    },
    # A learner's 2-core laptop: notebook 03 with its 12-run ablation (3 seeds of base / inter / full,
    # one of concat / intra / full-current) in about 10 minutes, on the scenario built for AD-Net's
    # premise (voslab.data.synthetic "transient_lookalikes"), scored on 48 val videos. pos_weight 4
    # (not in the paper): the primary object covers a few per cent of the pixels, and without it the
    # tiny net first learns to predict background everywhere.
    "cpu": {
        "data": {"train": {"scenario": "transient_lookalikes"},
                 "val": {"scenario": "transient_lookalikes", "n_videos": 48}},
        "model": {"backbone": "tiny", "output_stride": 8, "embed_dim": 32, "variant": "full",
                  "diffusion_layout": "anchor",
                  "backbone_kwargs": {"width": 8}},
        "train": {"steps": 1000, "ablation_steps": 1000, "ablation_seeds": [0, 1, 2], "batch_size": 8, "lr": 3e-3,
                  "optimizer": "adam", "pos_weight": 4.0, "size": (64, 112), "augment": True},
    },
    # The paper's setting as far as known (optimiser/schedule unverified: no training code released).
    "gpu": {
        "model": {"backbone": "deeplabv3_resnet101", "output_stride": 8, "embed_dim": 128, "variant": "full",
                  "diffusion_layout": "anchor"},
        "train": {"steps": 20000, "ablation_steps": 5000, "batch_size": 4, "lr": 7e-3, "optimizer": "sgd",
                  "momentum": 0.9, "weight_decay": 5e-4, "size": (481, 857), "augment": True},
        "eval": {"inference_size": (481, 857), "scales": (0.75, 1.0, 1.5), "mirror": True},
    },
    # Real video on 2 CPU cores (issue 10): voslab's ImageNet MobileNetV2 with its first 16 blocks frozen (their
    # features are computed once per frame and cached, voslab.models._real) and its last two fine-tuned, on the
    # DAVIS-2016 train frames at 240p (BASE_PRESETS "real": 25 sequences train, 5 held out as "val"), with
    # random left-right flips (train.scale (1, 1): no zoom, so a flipped frame is one more cache entry) and
    # voslab's stride-4 decoder (decoder="s4", not in the paper: at 240p and stride 16 the embedding grid is
    # 15x27, against the paper's 61x108). Scored at the annotations' size. Measured over 3 seeds
    # (docs/results.md): held-out J-mean 0.673 at 1200 steps in about 21 minutes on 2 threads (0.642 at 800
    # steps: +0.03 [+0.02, +0.04]), against 0.518 with one block and the paper's head (the decoder alone:
    # +0.08 [+0.05, +0.11]); 0.686 with the official code's previous-mask gate (eval.prev_mask_dilation=True,
    # an option: not in the paper). Anchor diffusion off (variant="base"): 0.659, no measurable effect
    # (+0.01 [-0.00, +0.03]).
    "real": {
        "model": {"backbone": "mobilenet_v2", "pretrained": True, "output_stride": 16, "embed_dim": 128,
                  "variant": "full", "diffusion_layout": "anchor", "backbone_kwargs": {"out_channels": 128},
                  "decoder": "s4", "decoder_channels": 64},
        "train": {"steps": 1200, "ablation_steps": 1200, "batch_size": 8, "lr": 1e-3, "optimizer": "adam",
                  "augment": True, "scale": (1.0, 1.0), "finetune": {"trainable_blocks": 2, "cache_mb": 4096}},
        "eval": {"inference_size": (240, 427)},
    },
})
