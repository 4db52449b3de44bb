"""LVO: Learning Video Object Segmentation with Visual Memory (Tokmakov, Alahari, Schmid, ICCV 2017).

Unsupervised moving-object segmentation. Read top to bottom in the paper's order:

1. :class:`LVOConfig` - the options (widths, kernel size, the ablation variants, inference).
2. :class:`LVO` - the two-stream network with a visual memory:
   a. the **appearance stream**: DeepLab-style backbone features at 1/8, reduced by two 1x1 convs
      with tanh to a compact width (:meth:`LVO.appearance`);
   b. the **motion stream**: an MP-Net-style encoder-decoder from one optical-flow field to a
      per-pixel "independently moving" logit at 1/4 (:class:`MotionNet`), brought to 1/8;
   c. **fusion**: both streams concatenated, one 3x3 conv + ReLU -> x_t (:meth:`LVO.fuse`);
   d. the **visual memory**: a ConvGRU with 7x7 kernels (``voslab.nn.convgru``), run forward and
      backward in time, the two states concatenated at each t (:meth:`LVO.memory`);
   e. the **classifier**: 3x3 conv + ReLU + 1x1 conv -> one object logit per 1/8 cell, bilinearly
      upsampled (:meth:`LVO.classify`).
3. The regime: :func:`train_dataset` (clips of consecutive frames with the paper's stop-and-go
   augmentation), :func:`training_step` (BCE on every frame of the clip, back-propagated through
   time; plus the motion stream's own BCE on ground-truth flow), :func:`configure_optimizer`.
4. The inference protocol :func:`predict_sequence`: estimated (OpenCV DIS) flow, the whole video in
   both directions, threshold, optional dense CRF (``voslab.postprocess.dense_crf``).
5. :data:`PRESETS` (smoke / cpu / gpu / real), :data:`TASK`, :func:`build_model` for ``voslab.zoo``.

**No official code exists.** What the paper states: two streams (DeepLab appearance features at 1/8
reduced by 1x1 convs; MP-Net motion prediction from flow, trained on synthetic FlyingThings3D ground-truth
flow, run on estimated flow at test time), concatenation, a 7x7 ConvGRU, a bidirectional pass with
concatenated states, a conv classifier, binary cross-entropy with BPTT, the stop-and-go augmentation,
and a dense CRF. **Reconstructed here** (marked "reconstructed" where they appear): the channel
widths (paper: about 128 appearance channels and 64 hidden per direction, unverified), the MP-Net
depth and widths (scaled down), what of the motion stream enters the fusion (its last decoder
features and its logit), the fusion conv (3x3), the classifier's hidden width, the motion target on
synthetic data (ground-truth mask where the object's flow differs from the camera's), training the
motion stream jointly by its own loss (the paper pretrains it separately; its features are detached
from the memory's loss, so it stays a pure motion network as in the paper), the optimiser (the paper's
is unrecalled: RMSProp at 1e-4 is the ``gpu`` preset's guess), and the stop-and-go details
(probability, number of frames).

Shapes: B batch, T frames per clip, (H, W) input size, (h, w) = (H/8, W/8), Ca appearance width,
Cm motion-feature width, Cx fused width, Ch hidden width per direction.
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

from voslab.data import transforms
from voslab.data.samplers import Clips, binary_foreground
from voslab.data.transforms import to_image_tensor
from voslab.flow import compute_flow
from voslab.models._common import (Preset, batch_iou, check_choice, inference_config, model_config,
                                   paper_backbone, resize, sampler_options, section, with_base_presets)
from voslab.models._common import scenario_splits as _common_scenario_splits
from voslab.models._real import finetune_backbone
from voslab.nn.convgru import ConvGRU
from voslab.nn.modules import ConvBNReLU
from voslab.optim import build_optimizer, poly_schedule
from voslab.postprocess import dense_crf

__all__ = [
    "LVOConfig",
    "LVO",
    "MotionNet",
    "VARIANTS",
    "build_model",
    "train_dataset",
    "training_step",
    "configure_optimizer",
    "moving_target",
    "stop_and_go",
    "estimated_flow",
    "video_flow_for",
    "predict_logits",
    "predict_sequence",
    "scenario_splits",
    "PRESETS",
    "TASK",
]

TASK = "unsupervised"

#: The ablation variants (the paper's Table 2 reconstructed as switches on one model):
#:   full       : appearance + motion -> fusion -> bidirectional 7x7 ConvGRU -> classifier (LVO)
#:   forward    : the same with a forward-only memory (one ConvGRU, states not concatenated)
#:   no_memory  : appearance + motion -> fusion -> a 7x7 conv (same width and reach, no time) -> classifier
#:   appearance : appearance stream only, with the bidirectional memory
#:   motion     : motion stream only, with the bidirectional memory
VARIANTS = ("full", "forward", "no_memory", "appearance", "motion")


# ================================================================================================
# 1. Configuration
# ================================================================================================
@dataclass
class LVOConfig:
    """LVO options. Defaults are the paper's where it states them; the rest is reconstructed.

    Model:
        backbone: appearance backbone, "tiny" | "mobilenet_v2" | "deeplabv3_resnet101" (paper:
            DeepLab-v1 VGG16 pretrained on PASCAL VOC, kept fixed).
        output_stride: 8 (paper: the appearance features are at 1/8).
        backbone_kwargs, pretrained: see ``voslab.nn.backbones.build_backbone``.
        appearance_dim: Ca, width after the two 1x1 convs + tanh (paper: ~128, reconstructed).
        motion_width: m, the MP-Net-style encoder's first width (m, 2m, 4m, 8m; reconstructed).
        fusion_dim: Cx, the fused map fed to the memory (reconstructed).
        hidden_dim: Ch, ConvGRU state width per direction (paper: ~64, unverified).
        kernel_size: ConvGRU kernel (paper: 7x7; its kernel ablation favours 7 over 3 and 1).
        classifier_dim: hidden width of the 3x3 conv of the classifier (reconstructed).
        variant: one of :data:`VARIANTS` (default "full", the paper's model).
        flow_scale: optical flow (pixels of the network input) is divided by this before MP-Net.

    Inference (``predict_sequence``; a preset's "eval" dict overrides these):
        flow: "estimated" (OpenCV DIS on the frames, what a real video gives; the default) or
            "oracle" (the flow stored with the dataset, e.g. synthetic ground truth: any score read
            from it must be labelled oracle).
        flow_preset: DIS preset ("ultrafast" | "fast" | "medium").
        inference_size: (H, W) the frames are resized to before the network; None keeps the size.
        threshold: object probability above which a pixel is foreground.
        crf: refine with a fully-connected CRF (paper: yes; needs ``pydensecrf``, see
            ``voslab.postprocess.dense_crf``).
        crf_iterations, crf_sxy_gaussian, crf_compat_gaussian, crf_sxy_bilateral, crf_srgb,
            crf_compat_bilateral: the CRF's parameters (DeepLab's defaults, scaled to 480p).
    """

    # model
    backbone: str = "tiny"
    output_stride: int = 8
    backbone_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    appearance_dim: int = 128
    motion_width: int = 16
    fusion_dim: int = 128
    hidden_dim: int = 64
    kernel_size: int = 7
    classifier_dim: int = 64
    variant: str = "full"
    flow_scale: float = 4.0
    # inference
    flow: str = "estimated"
    flow_preset: str = "medium"
    inference_size: tuple[int, int] | None = None
    threshold: float = 0.5
    crf: bool = False
    crf_iterations: int = 5
    crf_sxy_gaussian: float = 3.0
    crf_compat_gaussian: float = 3.0
    crf_sxy_bilateral: float = 50.0
    crf_srgb: float = 13.0
    crf_compat_bilateral: float = 5.0

    def __post_init__(self) -> None:
        check_choice("LVOConfig", "variant", self.variant, VARIANTS)
        check_choice("LVOConfig", "flow", self.flow, ("estimated", "oracle"))
        check_choice("LVOConfig", "flow_preset", self.flow_preset, ("ultrafast", "fast", "medium"))
        if self.output_stride != 8:
            raise ValueError(f"LVOConfig.output_stride={self.output_stride}: LVO's streams meet at 1/8 (use 8)")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"LVOConfig.kernel_size={self.kernel_size} must be odd")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"LVOConfig.threshold={self.threshold} must be in (0, 1)")
        if self.inference_size is not None:
            self.inference_size = (int(self.inference_size[0]), int(self.inference_size[1]))


# ================================================================================================
# 2. The model
# ================================================================================================
class MotionNet(nn.Module):
    """MP-Net-style motion network (Tokmakov et al., CVPR 2017), scaled down (reconstructed widths).

    Flow (B, 2, H, W) -> encoder: a stride-2 3x3 conv-BN-ReLU to 1/2 (m channels), then 2x2 max-pool +
    3x3 conv-BN-ReLU stages to 1/4 (2m), 1/8 (4m) and 1/16 (4m, a global view of the motion pattern)
    -> decoder: upsample x2, concatenate the encoder map of that size, 3x3 conv-BN-ReLU, up to 1/4
    -> 1x1 conv -> one "independently moving" logit per 1/4 cell (MP-Net's output resolution). Like
    MP-Net, it must tell object motion from camera motion from the flow field alone.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        m = width
        self.enc2 = ConvBNReLU(2, m, stride=2)  # 1/2
        self.enc4 = ConvBNReLU(m, 2 * m)  # 1/4
        self.enc8 = ConvBNReLU(2 * m, 4 * m)  # 1/8
        self.bottom = ConvBNReLU(4 * m, 4 * m)  # 1/16
        self.dec8 = ConvBNReLU(8 * m, 2 * m)  # 1/8: up(bottom) + enc8
        self.dec4 = ConvBNReLU(4 * m, m)  # 1/4: up(dec8) + enc4
        self.out = nn.Conv2d(m, 1, kernel_size=1)
        self.out_channels = m + 1  # decoder features + logit, what enters the fusion

    def forward(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """flow (B, 2, H, W) (already scaled) -> (logit (B, 1, H/4, W/4), features (B, m, H/4, W/4))."""
        e2 = self.enc2(flow)  # (B, m, H/2, W/2)
        e4 = self.enc4(F.max_pool2d(e2, 2, ceil_mode=True))  # (B, 2m, H/4, W/4)
        e8 = self.enc8(F.max_pool2d(e4, 2, ceil_mode=True))  # (B, 4m, H/8, W/8)
        b = self.bottom(F.max_pool2d(e8, 2, ceil_mode=True))  # (B, 4m, H/16, W/16)
        d8 = self.dec8(torch.cat([resize(b, e8.shape[-2:]), e8], dim=1))  # (B, 2m, H/8, W/8)
        d4 = self.dec4(torch.cat([resize(d8, e4.shape[-2:]), e4], dim=1))  # (B, m, H/4, W/4)
        return self.out(d4), d4


class LVO(nn.Module):
    """Two-stream network with a bidirectional ConvGRU visual memory.

    ``forward(frames (B, T, 3, H, W), flow (B, T, 2, H, W))`` -> ``{"logits": (B, T, 1, H, W),
    "motion_logits": (B, T, 1, H/4, W/4)}`` (the latter absent in the "appearance" variant). With
    ``return_maps``: also "appearance" (B, T, Ca, h, w), "motion" (B, T, Cm, h, w), "fused"
    (B, T, Cx, h, w), "states" (B, T, D*Ch, h, w) and "update"/"reset" gates (same shape) when there
    is a memory, and "coarse_logits" (B, T, 1, h, w).
    ``flow[:, t]`` is the flow from frame t to t+1 (the last frame: any estimate of its motion).
    """

    def __init__(self, cfg: LVOConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LVOConfig()
        self.uses_appearance = cfg.variant != "motion"
        self.uses_motion = cfg.variant != "appearance"
        # (a) appearance stream: backbone (B, Cb, h, w) -> 1x1 conv + tanh -> 1x1 conv + tanh (B, Ca, h, w)
        if self.uses_appearance:
            self.backbone = paper_backbone(cfg, "LVO")
            self.reduce = nn.Sequential(nn.Conv2d(self.backbone.out_channels, cfg.appearance_dim, 1), nn.Tanh(),
                                        nn.Conv2d(cfg.appearance_dim, cfg.appearance_dim, 1), nn.Tanh())
        # (b) motion stream: MP-Net on flow -> (logit, features) at 1/4, brought to 1/8
        if self.uses_motion:
            self.motion_net = MotionNet(cfg.motion_width)
        fused_in = (cfg.appearance_dim if self.uses_appearance else 0) + \
                   (self.motion_net.out_channels if self.uses_motion else 0)
        # (c) fusion: concat -> 3x3 conv + ReLU (reconstructed) -> x_t (B, Cx, h, w)
        self.fusion = nn.Sequential(nn.Conv2d(fused_in, cfg.fusion_dim, 3, padding=1), nn.ReLU(inplace=True))
        # (d) visual memory: ConvGRU with k x k kernels, bidirectional (or its ablations)
        if cfg.variant == "no_memory":
            self.no_memory = nn.Sequential(nn.Conv2d(cfg.fusion_dim, 2 * cfg.hidden_dim, cfg.kernel_size,
                                                     padding=cfg.kernel_size // 2), nn.Tanh())
            memory_out = 2 * cfg.hidden_dim
        else:
            direction = "forward" if cfg.variant == "forward" else "bidirectional"
            self.memory_gru = ConvGRU(cfg.fusion_dim, cfg.hidden_dim, cfg.kernel_size, direction=direction)
            memory_out = self.memory_gru.out_channels
        # (e) classifier: 3x3 conv + ReLU -> 1x1 conv -> one object logit (the paper's 2-class softmax
        # over object/background is the sigmoid of their difference: one logit is equivalent)
        self.classifier = nn.Sequential(nn.Conv2d(memory_out, cfg.classifier_dim, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(cfg.classifier_dim, 1, 1))

    # -- (a) appearance ----------------------------------------------------------------------
    def appearance(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, Ca, H/8, W/8) in (-1, 1)."""
        return self.reduce(self.backbone(images))

    # -- (b) motion --------------------------------------------------------------------------
    def motion(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2, H, W) flow in pixels -> (logit (N, 1, H/4, W/4), features (N, m, H/4, W/4))."""
        return self.motion_net(flow / self.cfg.flow_scale)

    def motion_features(self, flow: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """What the motion stream gives the fusion: [features, logit] at 1/4 brought to ``grid`` (1/8)
        by bilinear resizing. -> (features (N, Cm, h, w), logit (N, 1, H/4, W/4))."""
        logit, feats = self.motion(flow)
        return resize(torch.cat([feats, logit], dim=1), grid), logit  # (N, m + 1, h, w)

    # -- (c) fusion ---------------------------------------------------------------------------
    def fuse(self, appearance: torch.Tensor | None, motion: torch.Tensor | None) -> torch.Tensor:
        """(N, Ca, h, w) and/or (N, Cm, h, w) -> x (N, Cx, h, w)."""
        parts = [p for p in (appearance, motion) if p is not None]
        return self.fusion(torch.cat(parts, dim=1))

    # -- (d) memory ---------------------------------------------------------------------------
    def memory(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """x (B, T, Cx, h, w) -> states (B, T, D*Ch, h, w) ([forward, backward] at each t), gates."""
        if self.cfg.variant == "no_memory":
            b, t = x.shape[:2]
            return self.no_memory(x.flatten(0, 1)).unflatten(0, (b, t)), {}
        return self.memory_gru(x, return_gates=True)

    # -- (e) classifier -----------------------------------------------------------------------
    def classify(self, states: torch.Tensor, out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D*Ch, h, w) -> (logits (B, T, 1, H, W), coarse logits (B, T, 1, h, w))."""
        b, t = states.shape[:2]
        coarse = self.classifier(states.flatten(0, 1))  # (B*T, 1, h, w)
        logits = F.interpolate(coarse, size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits.unflatten(0, (b, t)), coarse.unflatten(0, (b, t))

    # -- everything -----------------------------------------------------------------------------
    def streams(self, frames: torch.Tensor, flow: torch.Tensor | None, detach_motion: bool = True) -> dict:
        """Both streams on every frame. frames (B, T, 3, H, W), flow (B, T, 2, H, W) ->
        {"appearance": (B, T, Ca, h, w) | None, "motion": (B, T, Cm, h, w) | None, "motion_logits": ...}.
        ``detach_motion``: no gradient from the memory's loss into the motion stream (the paper keeps
        MP-Net fixed; it learns from its own loss in :func:`training_step`)."""
        b, t, _, height, width = frames.shape
        grid = (math.ceil(height / 8), math.ceil(width / 8))
        out: dict = {"appearance": None, "motion": None}
        if self.uses_appearance:
            app = self.appearance(frames.flatten(0, 1))  # (B*T, Ca, h, w)
            grid = tuple(app.shape[-2:])
            out["appearance"] = app.unflatten(0, (b, t))
        if self.uses_motion:
            if flow is None:
                raise ValueError(f"LVO variant {self.cfg.variant!r} has a motion stream: pass flow (B, T, 2, H, W)")
            if detach_motion:
                with torch.no_grad():
                    mot, logit = self.motion_features(flow.flatten(0, 1), grid)
            else:
                mot, logit = self.motion_features(flow.flatten(0, 1), grid)  # (B*T, Cm, h, w), (B*T, 1, H/4, W/4)
            out["motion"], out["motion_logits"] = mot.unflatten(0, (b, t)), logit.unflatten(0, (b, t))
        return out

    def forward(self, frames: torch.Tensor, flow: torch.Tensor | None = None, return_maps: bool = False,
                detach_motion: bool = True) -> dict[str, torch.Tensor]:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"LVO takes frames (B, T, 3, H, W), got {tuple(frames.shape)}")
        if flow is not None and (flow.shape[:2] != frames.shape[:2] or flow.shape[-2:] != frames.shape[-2:]):
            raise ValueError(f"flow {tuple(flow.shape)} must be (B, T, 2, H, W) for frames {tuple(frames.shape)}")
        s = self.streams(frames, flow, detach_motion)
        b, t = frames.shape[:2]
        app, mot = s["appearance"], s["motion"]
        x = self.fuse(None if app is None else app.flatten(0, 1), None if mot is None else mot.flatten(0, 1))
        x = x.unflatten(0, (b, t))  # (B, T, Cx, h, w)
        states, gates = self.memory(x)  # (B, T, D*Ch, h, w)
        logits, coarse = self.classify(states, frames.shape[-2:])  # (B, T, 1, H, W)
        result = {"logits": logits}
        if "motion_logits" in s:
            result["motion_logits"] = s["motion_logits"]
        if return_maps:
            result.update(appearance=app, motion=mot, fused=x, states=states, coarse_logits=coarse, **gates)
        return result


def build_model(cfg: Preset | None = None) -> LVO:
    """``LVO`` from a preset dict (its "model" section holds LVOConfig fields); the ``real`` preset's
    ``train.finetune`` freezes the ImageNet backbone (``voslab.models._real``)."""
    model = LVO(model_config(LVOConfig, cfg))
    return finetune_backbone(model, cfg) if model.uses_appearance else model


# ================================================================================================
# 3. Training regime
# ================================================================================================
def scenario_splits(cfg: Preset, split: str, root: str | Path | None = None) -> dict[str, object]:
    """The sequences of ``split`` by scenario (``voslab.models._common.scenario_splits``): a preset whose
    ``train`` section lists ``scenarios`` (the cpu preset: LVO's three) divides its videos over them."""
    return _common_scenario_splits(cfg, split, root, TASK)


class LVOClips(Clips):
    """LVO's training clips: ``n_frames`` consecutive frames with binary masks, the ground-truth
    forward flow (``flow_gt``, the motion stream's teacher) and the flow the memory reads (``flow``:
    estimated DIS flow, or the ground truth with ``memory_flow="gt"``), plus the **stop-and-go
    augmentation** (:func:`stop_and_go`) drawn per item with probability ``stop_p``.

    Item: ``frames`` (T, 3, H, W), ``masks`` (T, 1, H, W) float {0, 1}, ``flow``/``flow_gt``
    (T, 2, H, W) in pixels of the output size (``flow_gt`` only with ``gt_flow``: real videos have none), ``stopped`` (T,) bool (frames made static by the
    augmentation), ``index`` (T,), ``sequence`` ().
    Estimated flow is computed once per sequence at its own size and kept in memory (float16).
    """

    def __init__(self, dataset, n_frames: int, memory_flow: str = "estimated", flow_preset: str = "medium",
                 stop_p: float = 0.0, gt_flow: bool = True, **kwargs):
        check_choice("LVOClips", "memory_flow", memory_flow, ("estimated", "gt"))
        if memory_flow == "gt" and not gt_flow:
            raise ValueError("LVOClips: memory_flow='gt' needs the ground-truth flow (gt_flow=True)")
        self.memory_flow, self.flow_preset, self.stop_p = memory_flow, flow_preset, float(stop_p)
        self._dis: dict[tuple[int, int], torch.Tensor] = {}
        super().__init__(dataset, n_frames, flow="forward" if gt_flow else None, **kwargs)

    def _estimated(self, s: int, i: int) -> torch.Tensor:
        """DIS flow of frame i of sequence s to frame i+1 (the last frame: minus the flow to i-1)."""
        key = (s, int(i))
        if key not in self._dis:
            seq = self.sequences[s]
            self._dis[key] = torch.from_numpy(estimated_flow(seq.frame, len(seq), int(i), self.flow_preset)
                                              ).permute(2, 0, 1).half()
        return self._dis[key].float()

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        s, start = self.pick(index, generator)
        seq = self.sequences[s]
        indices = list(range(start, start + self.min_frames, self.stride))
        state = generator.get_state()
        images, masks, flow_gt = self.load(seq, indices, generator, with_flow=self.flow)
        if self.memory_flow == "gt":
            flow = flow_gt.clone()
        else:  # the same crop and flip: replay the generator from the same state
            replay = torch.Generator().manual_seed(0)
            replay.set_state(state)
            raw = torch.stack([self._estimated(s, i) for i in indices])  # (T, 2, H0, W0)
            if self.augment:
                _, _, flow = transforms.augment(None, masks.new_zeros(raw.shape[0], *raw.shape[-2:]),
                                                raw, size=self.size, generator=replay, scale=self.scale,
                                                flip_p=self.flip_p)
            else:
                _, _, flow = transforms.resize(flow=raw, size=self.size)
        item = {"frames": images, "masks": binary_foreground(masks).unsqueeze(1), "flow": flow,
                "index": torch.tensor(indices), "sequence": torch.tensor(s)}
        if flow_gt is not None:
            item["flow_gt"] = flow_gt
        stopped = torch.zeros(len(indices), dtype=torch.bool)
        if self.stop_p > 0 and float(torch.rand(1, generator=generator)) < self.stop_p:
            at_end = bool(torch.rand(1, generator=generator) < 0.5)
            k = 1 + self.randint(generator, max(1, len(indices) // 2))
            item, stopped = stop_and_go(item, k, at_end)
        item["stopped"] = stopped
        return item


def stop_and_go(item: dict, k: int, at_end: bool = True) -> tuple[dict, torch.Tensor]:
    """The paper's stop-and-go augmentation on one clip: the object "stops" for ``k`` frames.

    ``at_end``: frames T-k..T-1 become copies of frame T-k-1 (the object stops); else frames
    0..k-1 become copies of frame k (it starts late). The copied frames (and the frame they copy,
    whose successor is now identical) get zero flow: nothing moves any more, so the motion stream
    sees nothing there and only the memory can keep the object. Masks are copied with the frames.
    -> (the changed item (a copy), stopped (T,) bool: the frames with motion removed).
    """
    item = {key: (v.clone() if torch.is_tensor(v) else v) for key, v in item.items()}
    t = item["frames"].shape[0]
    k = int(min(max(k, 1), t - 1))
    if at_end:
        src, dst, still = t - k - 1, list(range(t - k, t)), list(range(t - k - 1, t))
    else:
        src, dst, still = k, list(range(k)), list(range(k + 1))
    for key in ("frames", "masks"):
        item[key][dst] = item[key][src].clone()
    for key in ("flow", "flow_gt"):
        if key in item:
            item[key][still] = 0.0
    stopped = torch.zeros(t, dtype=torch.bool)
    stopped[still] = True
    return item, stopped


def train_dataset(cfg: Preset, root: str | Path | None = None) -> LVOClips:
    """Clips of ``train.clip_len`` consecutive frames (BPTT through the whole clip; paper: short
    clips, length unverified) from the preset's split (every scenario of ``train.scenarios``, see
    :func:`scenario_splits`), with the stop-and-go augmentation (``train.stop_p``)."""
    train = section(cfg, "train")
    split = train.get("split", "train")
    videos = [seq for part in scenario_splits(cfg, split, root).values() for seq in part]
    return LVOClips(videos, n_frames=int(train.get("clip_len", 6)), **sampler_options(cfg),
                    memory_flow=train.get("memory_flow", "estimated"),
                    flow_preset=section(cfg, "model").get("flow_preset", "medium"),
                    stop_p=float(train.get("stop_p", 0.0)), gt_flow=bool(train.get("gt_flow", True)))


def moving_target(mask: torch.Tensor, flow_gt: torch.Tensor, min_motion: float = 0.5) -> torch.Tensor:
    """The motion stream's target: object pixels that move *with respect to the camera*.

    mask (N, 1, H, W) {0, 1}, flow_gt (N, 2, H, W) ground-truth flow -> (N, 1, H, W) {0, 1}: mask
    where |flow - camera flow| > ``min_motion`` px, the camera flow being the per-frame median of the
    background's flow (reconstructed: MP-Net's FlyingThings3D labels mark independently moving
    objects; the synthetic set knows the flow exactly, so the same label is read from it).
    """
    n = flow_gt.shape[0]
    bg = (mask < 0.5).expand_as(flow_gt)  # (N, 2, H, W)
    camera = torch.stack([flow_gt[i][bg[i]].view(2, -1).median(dim=1).values if bg[i].any()
                          else flow_gt.new_zeros(2) for i in range(n)])  # (N, 2)
    rel = flow_gt - camera[:, :, None, None]  # (N, 2, H, W)
    relative = torch.hypot(rel[:, 0:1], rel[:, 1:2])  # (N, 1, H, W); Tensor.norm(dim=1) is ~100x slower on CPU
    return mask * (relative > min_motion).float()


def training_step(model: LVO, batch: Mapping[str, torch.Tensor], cfg: Preset | None = None) -> dict:
    """BCE on every frame of the clip, back-propagated through time (paper), plus the motion
    stream's own BCE on ground-truth flow against :func:`moving_target` (weight
    ``train.motion_loss_weight``; the paper pretrains MP-Net on synthetic ground-truth flow). Without
    ground-truth flow in the batch (real video) the motion stream learns from the estimated flow
    against the annotated mask (DAVIS-2016 annotates the primary moving object).

    -> {"loss", "memory_loss", "motion_loss" (when there is a motion stream), "iou"}.
    ``train.pos_weight`` (optional) up-weights foreground pixels (not in the paper).
    """
    train = section(cfg, "train")
    frames, masks, flow = batch["frames"], batch["masks"].float(), batch["flow"]  # (B,T,3,H,W), (B,T,1,H,W), (B,T,2,H,W)
    out = model(frames, flow if model.uses_motion else None)
    pos_weight = train.get("pos_weight")
    weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=frames.device)
    memory_loss = F.binary_cross_entropy_with_logits(out["logits"], masks, pos_weight=weight)
    result = {"memory_loss": memory_loss}
    loss = memory_loss
    if model.uses_motion and float(train.get("motion_loss_weight", 1.0)) > 0:
        if "flow_gt" in batch:  # synthetic: ground-truth flow, independently moving object pixels
            flow_gt = batch["flow_gt"].flatten(0, 1)  # (B*T, 2, H, W)
            logit, _ = model.motion(flow_gt)  # (B*T, 1, H/4, W/4)
            target = moving_target(masks.flatten(0, 1), flow_gt, float(train.get("min_motion", 0.5)))
        else:  # real video (no ground-truth flow): estimated flow, the annotated (moving) object
            logit, _ = model.motion(flow.flatten(0, 1))
            target = masks.flatten(0, 1)
        target = F.adaptive_avg_pool2d(target, logit.shape[-2:]) if target.shape[-2:] != logit.shape[-2:] else target
        motion_loss = F.binary_cross_entropy_with_logits(logit, target, pos_weight=weight)
        result["motion_loss"] = motion_loss
        loss = loss + float(train.get("motion_loss_weight", 1.0)) * motion_loss
    result["loss"] = loss
    result["iou"] = batch_iou(out["logits"].detach().flatten(0, 1) > 0, masks.flatten(0, 1) > 0.5)
    return result


def configure_optimizer(model: LVO, cfg: Preset) -> tuple:
    """``train.optimizer`` "rmsprop" (the ``gpu`` preset's guess of the paper's, unverified) or any
    of ``voslab.optim.build_optimizer``'s, with the poly schedule; frozen parameters are left out."""
    train = section(cfg, "train")
    params = [p for p in model.parameters() if p.requires_grad]
    if str(train.get("optimizer", "adam")).lower() == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=float(train.get("lr", 1e-4)),
                                        weight_decay=float(train.get("weight_decay", 0.0)))
        return optimizer, poly_schedule(optimizer, int(train.get("steps", 1000)), float(train.get("poly_power", 0.9)))
    return build_optimizer(params, train)


# ================================================================================================
# 4. Inference protocol
# ================================================================================================
def estimated_flow(frame, n: int, i: int, preset: str = "medium") -> np.ndarray:
    """DIS flow of frame i to i+1 (``frame(j)`` -> uint8 (H, W, 3)); the last frame has no successor:
    minus its flow to frame i-1 (a one-frame video: zeros). -> float32 (H, W, 2)."""
    if n == 1:
        return np.zeros((*frame(0).shape[:2], 2), np.float32)
    if i + 1 < n:
        return compute_flow(frame(i), frame(i + 1), "dis", preset)
    return -compute_flow(frame(i), frame(i - 1), "dis", preset)


def video_flow_for(seq, opts: LVOConfig) -> np.ndarray:
    """The flow the motion stream reads at inference: (T, H, W, 2) float32.

    "estimated": DIS on the video's frames (:func:`estimated_flow`); "oracle": the flow stored with
    the dataset (synthetic ground truth; the last frame gets minus its backward flow)."""
    n = len(seq)
    if opts.flow == "oracle":
        if not getattr(seq, "has_flow", False):
            raise ValueError(f"flow='oracle' needs stored flow, and sequence {seq.name!r} has none; use "
                             "flow='estimated'")
        flows = [seq.flow(i, "forward") if i + 1 < n or n == 1 else -seq.flow(i, "backward") for i in range(n)]
        return np.stack(flows).astype(np.float32)
    frames = seq.frames()
    return np.stack([estimated_flow(lambda j: frames[j], n, i, opts.flow_preset) for i in range(n)])


@torch.no_grad()
def predict_logits(model: LVO, frames: np.ndarray, flow: np.ndarray | None, opts: LVOConfig,
                   return_maps: bool = False) -> dict[str, torch.Tensor]:
    """The whole video in one pass (the memory runs forward and backward over all T frames).

    frames uint8 (T, H, W, 3), flow float32 (T, H, W, 2) at the frames' size -> {"logits": (T, 1, H, W)
    at the frames' size} (+ the model's maps for the single video, batch dim dropped).
    """
    device = next(model.parameters()).device
    video = to_image_tensor(frames, device)  # (T, 3, H, W)
    size = tuple(video.shape[-2:])
    net_size = opts.inference_size or size
    video = resize(video, net_size)
    flow_t = None
    if flow is not None and model.uses_motion:
        _, _, flow_t = transforms.resize(flow=torch.from_numpy(np.ascontiguousarray(flow)).permute(0, 3, 1, 2).float(),
                                         size=net_size)
        flow_t = flow_t.to(device)[None]  # (1, T, 2, H', W')
    out = model(video[None], flow_t, return_maps=return_maps)
    result = {k: v[0] for k, v in out.items() if torch.is_tensor(v)}
    result["logits"] = resize(result["logits"], size)  # (T, 1, H, W)
    return result


def predict_sequence(model: LVO, seq, cfg: Preset | None = None) -> np.ndarray:
    """LVO's inference protocol on one video. -> uint8 (T, H, W) in {0, 1} at the video's size.

    Estimated (DIS) flow of every frame; both streams on every frame; the memory over the whole
    video in both directions (offline); threshold the object probability; optional dense CRF
    (``eval.crf``). ``cfg``: a preset dict; its "eval" section overrides the inference fields of
    ``model.cfg``. Run it through ``voslab.inference.predict(model, seq, fn)`` (eval mode).
    """
    opts = inference_config(model.cfg, cfg)
    frames = seq.frames()
    flow = video_flow_for(seq, opts) if model.uses_motion else None
    logits = predict_logits(model, frames, flow, opts)["logits"][:, 0]  # (T, H, W)
    prob = torch.sigmoid(logits).cpu().numpy()
    if opts.crf:
        return dense_crf(frames, prob, iterations=opts.crf_iterations, sxy_gaussian=opts.crf_sxy_gaussian,
                         compat_gaussian=opts.crf_compat_gaussian, sxy_bilateral=opts.crf_sxy_bilateral,
                         srgb=opts.crf_srgb, compat_bilateral=opts.crf_compat_bilateral)
    return (prob > opts.threshold).astype(np.uint8)


# ================================================================================================
# 5. Presets: LVO's differences from voslab.models._common.BASE_PRESETS (the shared data splits)
# ================================================================================================
#: The scenarios of the synthetic set built for LVO's mechanisms: camouflage (motion stream),
#: stop_and_go (memory), static_start (bidirectional pass).
LVO_SCENARIOS = ("camouflage", "stop_and_go", "static_start")

PRESETS: dict[str, Preset] = with_base_presets({
    # CI: whole train + eval in seconds on 2 cores (a check that everything runs, not a result).
    "smoke": {
        "data": {"train": {"scenario": "stop_and_go"}, "val": {"scenario": "stop_and_go"}},
        "model": {"backbone": "tiny", "backbone_kwargs": {"width": 8}, "appearance_dim": 16, "motion_width": 4,
                  "fusion_dim": 16, "hidden_dim": 8, "kernel_size": 7, "classifier_dim": 8, "variant": "full"},
        "train": {"scenarios": ["camouflage", "stop_and_go", "static_start"], "steps": 20, "ablation_steps": 6,
                  "ablation_seeds": [0], "ablation_extras": ["motion", "forward", "kernel3"], "batch_size": 2,
                  "clip_len": 4, "lr": 3e-3, "optimizer": "adam", "pos_weight": 4.0, "size": (64, 112), "augment": False,
                  "stop_p": 0.5, "motion_loss_weight": 1.0},
    },
    # A learner's 2-core laptop: notebook 01 with its 12-run ablation (3 seeds of full / appearance /
    # no_memory, one seed of motion / forward / kernel3) in about 10 minutes on 2 cores (240 steps of
    # 4 clips of 4 frames at 64x112: 20-50 s a run on one busy core; docs/results.md). Data: LVO's
    # three scenarios in equal parts (train.scenarios; scenario_splits), 300 train / 48 val videos, so
    # that every mechanism meets the videos that need it and every score breaks down by scenario.
    # pos_weight 8 (not in the paper): the objects cover ~6 % of the pixels; with 4 (and 160 steps of
    # clips of 5 at 72x128) the full model and half of the ablation runs stayed at the constant
    # "background everywhere" predictor (train IoU 0, J&F 0); 16 (the balanced weight) leaves it but
    # predicts 2.6x the true foreground area. The frames-only `appearance` variant still stays at the
    # constant in some seeds at this schedule (its loss never leaves the constant's; it overfits a
    # single batch, so it is slow to learn, not broken): the notebook flags such runs.
    "cpu": {
        "data": {"train": {"scenario": "stop_and_go"}, "val": {"scenario": "stop_and_go", "n_videos": 48}},
        "model": {"backbone": "tiny", "backbone_kwargs": {"width": 8}, "appearance_dim": 32, "motion_width": 8,
                  "fusion_dim": 32, "hidden_dim": 16, "kernel_size": 7, "classifier_dim": 16, "variant": "full"},
        "train": {"scenarios": list(LVO_SCENARIOS), "steps": 240, "ablation_steps": 240, "ablation_seeds": [0, 1, 2],
                  "ablation_extras": ["motion", "forward", "kernel3"], "batch_size": 4, "clip_len": 4, "lr": 3e-3,
                  "optimizer": "adam", "pos_weight": 8.0, "size": (64, 112), "augment": True, "stop_p": 0.3, "motion_loss_weight": 1.0},
    },
    # The paper's setting as far as known (optimiser, clip length, schedule unverified: no code).
    "gpu": {
        "model": {"backbone": "deeplabv3_resnet101", "appearance_dim": 128, "motion_width": 32, "fusion_dim": 128,
                  "hidden_dim": 64, "kernel_size": 7, "classifier_dim": 64, "variant": "full"},
        "train": {"scenarios": list(LVO_SCENARIOS), "steps": 20000, "ablation_steps": 5000, "batch_size": 4,
                  "clip_len": 7, "lr": 1e-4, "optimizer": "rmsprop", "size": (480, 854), "augment": True,
                  "stop_p": 0.3, "motion_loss_weight": 1.0},
        "eval": {"crf": True},
    },
    # Real video on 2 CPU cores (issue 10): voslab's ImageNet MobileNetV2 at 1/8, frozen (features cached,
    # voslab.models._real), on DAVIS-2016 train frames at 240p (25 sequences train, 5 held out). DAVIS has
    # no ground-truth flow (gt_flow False): the memory and the motion stream read DIS flow, the motion
    # stream learning from the annotated mask (the paper pretrains it on FlyingThings3D instead).
    # 600 steps: at 1/8 (the streams meet there) a step costs about 1.2-2 s on one thread once the frozen
    # features are cached (profiled: the trainable ASPP, motion stream and memory forward + backward), so
    # 1500 steps would take about 50 min; 600 fit the 30-minute budget.
    "real": {
        "model": {"backbone": "mobilenet_v2", "pretrained": True, "backbone_kwargs": {"out_channels": 128},
                  "appearance_dim": 64, "motion_width": 8, "fusion_dim": 64, "hidden_dim": 32, "kernel_size": 7,
                  "classifier_dim": 32, "variant": "full"},
        "train": {"steps": 600, "ablation_steps": 600, "batch_size": 2, "clip_len": 4, "lr": 1e-3,
                  "optimizer": "adam", "pos_weight": 2.0, "stop_p": 0.3, "motion_loss_weight": 1.0, "gt_flow": False,
                  "memory_flow": "estimated", "finetune": {"trainable_blocks": 0, "cache_mb": 2048}},
        "eval": {"inference_size": (240, 427)},
    },
})
