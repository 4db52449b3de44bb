"""AGNN: Zero-Shot Video Object Segmentation via Attentive Graph Neural Networks (Wang, Lu, Shen,
Crandall, Shao, ICCV 2019).

Zero-shot (unsupervised) VOS: no mask is given at test time. AGNN treats N' frames of one video as
the nodes of a fully connected graph and lets them exchange information for K rounds before each
node predicts its own foreground. Read top to bottom in the paper's order:

1. :class:`AGNNConfig` - the options, with the switches where the official code (carrierlxk/AGNN)
   differs from the paper: K = 5 rounds (paper: 3), a spatial message gate (paper: channel-wise,
   via global average pooling), concat-and-fuse aggregation (paper: a sum), self-attention once in
   the encoder (paper: an intra-attention loop edge in every round).
2. :class:`AGNN`:
   a. **node embedding** h_i^0 = V_i = FCN(I_i): a DeepLab-style backbone + 1x1 projection to C
      (:meth:`AGNN.embed`);
   b. **loop edges** (intra-attention, :class:`IntraAttention`): m_ii = alpha softmax((W_f h_i)^T
      (W_h h_i)) (W_l h_i) + h_i, a non-local block with a learnable alpha that starts at 0;
   c. **line edges** (inter-attention, :meth:`AGNN.line_messages`): e_ij = H_i^T W_c H_j (P x P, P = hw
      positions), messages m_ji = H_j softmax_rows(e_ij)^T: each position of node i gathers the
      node-j positions it is most similar to, through a learnable C x C matrix W_c;
   d. **message gates** (:meth:`AGNN.gate_messages`): g_ji = sigmoid(GAP(W_g * m_ji + b_g)) in [0,1]^C,
      so that a message from an unreliable frame (blurred, occluded) can be switched off;
   e. **aggregation** m_i = sum_j g_ji * m_ji over all nodes j, the loop edge included;
   f. **node update** h_i^k = ConvGRU(h_i^{k-1}, m_i^k), one cell shared by every node (1x1 kernels, as
      in the code);
   g. K rounds of (b)-(f), then the **readout** S_i = sigmoid(R([h_i^K, h_i^0])) (:meth:`AGNN.readout`).
3. The regime: :func:`train_dataset` (N' random frames of one video per sample: the paper's "many
   frame combinations" augmentation), :func:`training_step` (class-balanced weighted BCE on every
   node, :func:`balanced_bce`), :func:`configure_optimizer`.
4. The inference protocol :func:`predict_sequence`: every frame is node 0 of its own graph with N'-1
   other frames of its video (sampled at random, seeded, as in the code; or spread evenly, a
   deterministic option), optional multi-scale averaging and dense CRF.
5. :data:`PRESETS` (smoke / cpu / gpu / real), :data:`TASK`, :func:`build_model` for ``voslab.zoo``.

Not reproduced: the static saliency-image iterations (MSRA10K / DUT) the code interleaves with the
video iterations, and the instance-level DAVIS-2017 pipeline (PReMVOS proposals).
Where the paper text is quoted from memory (``../shared/reference/papers.md`` marks it "paper*"):
the channel-wise gate, the loop edge inside the graph, the sum aggregation and the exact form of
eta in the weighted BCE; treat them as unverified.

Shapes: B samples, N = N' nodes (frames) per graph, C node channels (paper: 256), (h, w) the
embedding grid (input / output stride), P = h*w positions, (H, W) the input size, K rounds.
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

from voslab.data.samplers import Triplets
from voslab.data.transforms import to_image_tensor
from voslab.models._common import (Preset, batch_iou, check_choice, davis_split, hflip_if, inference_config,
                                   model_config, paper_backbone, resize, sampler_options, section, with_base_presets)
from voslab.models._real import finetune_backbone
from voslab.nn.attention import CoAttention, GatedMessage, diffusion, flatten_spatial
from voslab.nn.convgru import ConvGRUCell
from voslab.optim import build_optimizer
from voslab.postprocess import dense_crf

__all__ = [
    "AGNNConfig",
    "AGNN",
    "IntraAttention",
    "build_model",
    "train_dataset",
    "training_step",
    "balanced_bce",
    "configure_optimizer",
    "graph_indices",
    "predict_logits",
    "predict_sequence",
    "PRESETS",
    "TASK",
]

TASK = "unsupervised"


# ================================================================================================
# 1. Configuration
# ================================================================================================
@dataclass
class AGNNConfig:
    """AGNN options. Defaults follow the paper; ``# code:`` marks the official code's choice.

    Model:
        backbone: "tiny" | "mobilenet_v2" | "deeplabv3_resnet101" (paper: DeepLabv3-ResNet101).
        output_stride: backbone output stride (paper: 8).
        channels: C, the node-state width (paper: 256).
        n_frames: N', nodes per graph in training and inference (code: 3 in both).
        iterations: K, message-passing rounds (paper: 3; # code: 5). 0: no messages at all (the
            readout sees [h^0, h^0]: a per-frame model with the same layers).
        intra: where the intra-attention (self-attention) sits. "graph" (paper): a loop-edge message
            m_ii in every round; "encoder" (# code: the PAM block once on the embedding, no loop edge in
            the rounds); "none".
        intra_reduction: query/key width C / intra_reduction in the intra-attention (# code: 4).
        gate: "channel" (paper: sigmoid(GAP(conv C->C)), one value per channel and edge);
            "spatial" (# code: sigmoid(1x1 conv C->1, no bias), one value per position and edge);
            "none" (every gate = 1: the ablation's "gate off").
        aggregation: "sum" (paper: m_i = sum_j g_ji m_ji) or "concat" (# code: the node's incoming
            messages concatenated in a fixed order and fused by a 3x3 conv to C; ties the model to N').
        gru_kernel: the ConvGRU's kernel size (# code: 1).
        backbone_kwargs: extra arguments for ``voslab.nn.backbones.build_backbone``.
        pretrained: load ImageNet weights into the backbone (mobilenet_v2).

    Inference (``predict_sequence``; a preset's "eval" dict overrides these):
        sampling: how the N'-1 other nodes of frame t's graph are chosen. "random" (paper, # code:
            random frames of the video; here seeded by ``sample_seed``, the video's length and t, so a
            run is reproducible) or "uniform" (deterministic: frames t + k T / N' mod T, k = 1..N'-1,
            spread over the whole video).
        sample_seed: the seed of "random" sampling.
        threshold: sigmoid(logit) > threshold.
        scales: multi-scale test: logits averaged over input scales (# code: (0.75, 1.0, 1.5)).
        mirror: also average over the left-right mirrored input (not in the code).
        inference_size: (H, W) frames are resized to before the network (# code: 473 x 473); None keeps
            the video's size. Masks are returned at the video's size.
        crf: dense-CRF post-processing of the probabilities (# code: yes; needs ``pydensecrf``).
        batch_graphs: graphs per forward pass at inference.
    """

    # model
    backbone: str = "tiny"
    output_stride: int = 8
    channels: int = 256
    n_frames: int = 3
    iterations: int = 3
    intra: str = "graph"
    intra_reduction: int = 4
    gate: str = "channel"
    aggregation: str = "sum"
    gru_kernel: int = 1
    backbone_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    # inference
    sampling: str = "random"
    sample_seed: int = 0
    threshold: float = 0.5
    scales: tuple[float, ...] = (1.0,)
    mirror: bool = False
    inference_size: tuple[int, int] | None = None
    crf: bool = False
    batch_graphs: int = 8

    def __post_init__(self) -> None:
        check_choice("AGNNConfig", "intra", self.intra, ("graph", "encoder", "none"))
        check_choice("AGNNConfig", "gate", self.gate, ("channel", "spatial", "none"))
        check_choice("AGNNConfig", "aggregation", self.aggregation, ("sum", "concat"))
        check_choice("AGNNConfig", "sampling", self.sampling, ("random", "uniform"))
        if int(self.n_frames) < 1 or int(self.iterations) < 0:
            raise ValueError(f"AGNNConfig: n_frames={self.n_frames} must be >= 1 and iterations={self.iterations} >= 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"AGNNConfig.threshold={self.threshold} must be in (0, 1)")
        self.scales = tuple(float(s) for s in self.scales)
        if self.inference_size is not None:
            self.inference_size = (int(self.inference_size[0]), int(self.inference_size[1]))


# ================================================================================================
# 2. The model
# ================================================================================================
class IntraAttention(nn.Module):
    """The loop edge (paper eq. "F_intra-att"; the code's PAM block):

        m_ii = alpha * softmax((W_f h)^T (W_h h)) (W_l h) + h

    W_f, W_h: 1x1 convs C -> C/r (query, key); W_l: 1x1 conv C -> C (value); alpha a learnable scalar
    initialised to 0, so the block starts as the identity. ``forward(h (B, C, h, w),
    return_attention=False) -> m (B, C, h, w)`` or ``(m, attention (B, P, P), rows sum to 1)``.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)  # W_f
        self.key = nn.Conv2d(channels, inner, 1)  # W_h
        self.value = nn.Conv2d(channels, channels, 1)  # W_l
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor, return_attention: bool = False):
        q, k, v = (flatten_spatial(f(h)) for f in (self.query, self.key, self.value))  # (B, C', P) x 2, (B, C, P)
        out, attention = diffusion(q, k, v, scale=1.0, return_attention=True)  # (B, C, P), (B, P, P)
        m = self.alpha * out.view_as(h) + h  # (B, C, h, w)
        return (m, attention) if return_attention else m


def _line_pairs(n: int) -> tuple[list[int], list[int]]:
    """The ordered pairs (i <- j), i != j, in the order i-major: ([i...], [j...]), N(N-1) each."""
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    return [i for i, _ in pairs], [j for _, j in pairs]


class AGNN(nn.Module):
    """Attentive graph neural network.

    ``forward(frames (B, N, 3, H, W))`` = ``embed`` every frame, ``propagate`` K rounds on each
    sample's graph, ``readout`` every node. The split lets :func:`predict_logits` embed each frame of
    a video once and assemble many graphs from the embeddings.
    """

    def __init__(self, cfg: AGNNConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or AGNNConfig()
        c = cfg.channels
        self.backbone = paper_backbone(cfg, "AGNN")
        # (a) node embedding: 1x1 projection of the backbone output to C channels (code: ASPP -> 256).
        self.embedding = nn.Conv2d(self.backbone.out_channels, c, kernel_size=1)
        # (b) loop edges: one intra-attention block (in the rounds, or once in the encoder).
        rounds = cfg.iterations > 0  # K = 0: no edges, no gate, no update (only what the readout needs)
        uses_intra = cfg.intra == "encoder" or (cfg.intra == "graph" and rounds)
        self.intra = IntraAttention(c, cfg.intra_reduction) if uses_intra else None
        # (c) line edges: the learnable C x C matrix W_c of e_ij = H_i^T W_c H_j (voslab.nn.attention).
        self.inter = CoAttention(c) if rounds else None
        # (d) the message gate, shared by every edge (voslab.nn.attention.GatedMessage).
        self.gate = GatedMessage(c, mode=cfg.gate) if cfg.gate != "none" and rounds else None
        # (e) code's aggregation: incoming messages concatenated, fused by a 3x3 conv.
        n_in = cfg.n_frames - 1 + (cfg.intra == "graph")
        self.fusion = nn.Conv2d(n_in * c, c, 3, padding=1) if cfg.aggregation == "concat" and rounds else None
        # (f) node update: one ConvGRU cell shared by every node and round (code: 1x1, orthogonal init).
        self.update = ConvGRUCell(c, c, kernel_size=cfg.gru_kernel, init="orthogonal") if rounds else None
        # (g) readout on [h^K, h^0] (code: 3x3 conv 2C->C no bias + BN + ReLU, 1x1 conv C->1).
        self.readout_layers = nn.Sequential(
            nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, 1, 1),
        )

    # -- (a) node embeddings ---------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) in [0, 1] -> node embeddings h^0 (M, C, h, w); with intra="encoder" (code)
        the self-attention is applied here, once."""
        h0 = self.embedding(self.backbone(images))  # (M, C, H/os, W/os)
        if self.cfg.intra == "encoder":
            h0 = self.intra(h0)  # (M, C, h, w)
        return h0

    # -- (b) loop edges --------------------------------------------------------------------
    def loop_messages(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Intra-attention of every node: h (B, N, C, h, w) -> (m_ii (B, N, C, h, w), attention (B, N, P, P))."""
        b, n = h.shape[:2]
        m, attention = self.intra(h.flatten(0, 1), return_attention=True)  # (BN, C, h, w), (BN, P, P)
        return m.view_as(h), attention.view(b, n, *attention.shape[1:])

    # -- (c) line edges --------------------------------------------------------------------
    def line_messages(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inter-attention on every ordered pair (i <- j), i != j, batched over samples and pairs.

        h (B, N, C, h, w) -> messages (B, N, N, C, h, w) with [:, i, j] = m_ji, the message node i
        receives from node j (zero on the diagonal), and attention (B, N, N, P, P) with [:, i, j] =
        softmax over node-j positions of e_ij = H_i^T W_c H_j (rows sum to 1; zero on the diagonal).
        """
        b, n, c, hh, ww = h.shape
        out = h.new_zeros(b, n, n, c, hh, ww)
        attention = h.new_zeros(b, n, n, hh * ww, hh * ww)
        if n < 2:
            return out, attention
        rows, cols = _line_pairs(n)  # E = N(N-1) ordered pairs
        hi = h[:, rows].flatten(0, 1)  # (BE, C, h, w) the receiving nodes
        hj = h[:, cols].flatten(0, 1)  # (BE, C, h, w) the sending nodes
        e = self.inter.affinity(hi, hj)  # (BE, P, P): e_ij = H_i^T W_c H_j
        s = e.softmax(dim=-1)  # (BE, P, P): row p of node i -> a distribution over node-j positions
        m = torch.bmm(flatten_spatial(hj), s.transpose(1, 2))  # (BE, C, P): m_ji[:, p] = sum_q s[p, q] h_j[:, q]
        out[:, rows, cols] = m.view(b, len(rows), c, hh, ww)
        attention[:, rows, cols] = s.view(b, len(rows), hh * ww, hh * ww)
        return out, attention

    # -- (d) gates -------------------------------------------------------------------------
    def gate_messages(self, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """messages (B, N, N, C, h, w) -> (gated messages, gates) with one gate network for every edge;
        gates (B, N, N, C, 1, 1) "channel", (B, N, N, 1, h, w) "spatial", ones (B, N, N, 1, 1, 1) "none"."""
        if self.gate is None:
            return messages, messages.new_ones(*messages.shape[:3], 1, 1, 1)
        b, n = messages.shape[:2]
        gated, gates = self.gate(messages.flatten(0, 2), return_gate=True)  # (BNN, C, h, w), (BNN, C|1, 1|h, 1|w)
        return gated.view_as(messages), gates.view(b, n, n, *gates.shape[1:])

    # -- (e) aggregation -------------------------------------------------------------------
    def aggregate(self, gated: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """gated (B, N, N, C, h, w) messages into each node i from each node j, ``present`` (N, N) bool
        (which edges carry a message) -> m_i (B, N, C, h, w).

        "sum" (paper): m_i = sum_j g_ji * m_ji. "concat" (code): node i's messages (its loop edge first,
        then j = 0..N-1 in order) concatenated and fused by a 3x3 conv.
        """
        if self.cfg.aggregation == "sum":
            return (gated * present[None, :, :, None, None, None]).sum(dim=2)  # (B, N, C, h, w)
        b, n, _, c, hh, ww = gated.shape
        order = [[i] * bool(present[i, i]) + [j for j in range(n) if j != i and present[i, j]] for i in range(n)]
        incoming = torch.stack([gated[:, i, order[i]] for i in range(n)], dim=1)  # (B, N, n_in, C, h, w): loop first
        if incoming.shape[2] * c != self.fusion.in_channels:
            raise ValueError(f"aggregation='concat' was built for {self.fusion.in_channels // c} incoming messages "
                             f"per node (n_frames={self.cfg.n_frames}), got {incoming.shape[2]}: use graphs of "
                             "n_frames nodes or aggregation='sum'")
        return self.fusion(incoming.flatten(2, 3).flatten(0, 1)).view(b, n, c, hh, ww)  # (B, N, C, h, w)

    # -- (b)-(f), K rounds -----------------------------------------------------------------
    def propagate(self, h0: torch.Tensor, iterations: int | None = None, return_maps: bool = False):
        """K rounds of message passing on B graphs of N nodes: h0 (B, N, C, h, w) -> h^K (B, N, C, h, w),
        or (h^K, maps) with per-round lists "states" [h^0 .. h^K], "inter" (B, N, N, P, P), "intra"
        (B, N, P, P) (intra="graph"), "gates" (see :meth:`gate_messages`)."""
        k_rounds = self.cfg.iterations if iterations is None else int(iterations)
        if k_rounds > 0 and self.update is None:
            raise ValueError("this AGNN was built with iterations=0 (no edges, gate or update): it cannot run "
                             f"{k_rounds} rounds; build it with iterations >= {k_rounds}")
        b, n = h0.shape[:2]
        present = ~torch.eye(n, dtype=torch.bool, device=h0.device)  # line edges i <- j, j != i
        if self.cfg.intra == "graph":
            present = torch.ones(n, n, dtype=torch.bool, device=h0.device)  # + loop edges i <- i
        maps: dict[str, list] = {"states": [h0], "inter": [], "intra": [], "gates": []}
        h = h0
        for _ in range(k_rounds):
            messages, inter = self.line_messages(h)  # (B, N, N, C, h, w), (B, N, N, P, P)
            if self.cfg.intra == "graph":
                loop, intra = self.loop_messages(h)  # (B, N, C, h, w), (B, N, P, P)
                idx = torch.arange(n, device=h.device)
                messages[:, idx, idx] = loop  # the diagonal: m_ii
                maps["intra"].append(intra)
            gated, gates = self.gate_messages(messages)  # (B, N, N, C, h, w)
            m = self.aggregate(gated, present)  # (B, N, C, h, w)
            h = self.update(m.flatten(0, 1), h.flatten(0, 1)).view_as(h)  # h_i^k = ConvGRU(h_i^{k-1}, m_i^k)
            maps["states"].append(h)
            maps["inter"].append(inter)
            maps["gates"].append(gates)
        return (h, maps) if return_maps else h

    # -- (g) readout -----------------------------------------------------------------------
    def readout(self, h_k: torch.Tensor, h0: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """[h^K, h^0] (B, N, C, h, w) each -> foreground logits (B, N, 1, H, W) (sigmoid: S_i)."""
        b, n = h_k.shape[:2]
        logits = self.readout_layers(torch.cat([h_k, h0], dim=2).flatten(0, 1))  # (BN, 1, h, w)
        logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)  # (BN, 1, H, W)
        return logits.view(b, n, 1, *logits.shape[-2:])

    def forward(self, frames: torch.Tensor, return_maps: bool = False, iterations: int | None = None) -> dict:
        """frames (B, N, 3, H, W) in [0, 1], N frames of one video per sample -> {"logits": (B, N, 1, H, W)}.

        With ``return_maps``: also "h0" (B, N, C, h, w), the per-round lists of :meth:`propagate`, and
        "round_logits" (K+1, B, N, 1, H, W): the readout applied to every h^k (k = 0..K).
        """
        if frames.dim() != 5:
            raise ValueError(f"AGNN expects frames (B, N, 3, H, W), got shape {tuple(frames.shape)}")
        b, n = frames.shape[:2]
        size = frames.shape[-2:]
        h0 = self.embed(frames.flatten(0, 1))  # (BN, C, h, w)
        h0 = h0.view(b, n, *h0.shape[1:])  # (B, N, C, h, w)
        if not return_maps:
            return {"logits": self.readout(self.propagate(h0, iterations), h0, size)}
        h_k, maps = self.propagate(h0, iterations, return_maps=True)
        result = {"logits": self.readout(h_k, h0, size), "h0": h0, **maps}
        result["round_logits"] = torch.stack([self.readout(h, h0, size) for h in maps["states"]])
        return result


def build_model(cfg: Preset | None = None) -> AGNN:
    """``AGNN`` from a preset dict (its "model" section holds AGNNConfig fields); the ``real``
    preset's ``train.finetune`` freezes the ImageNet backbone (``voslab.models._real``)."""
    return finetune_backbone(AGNN(model_config(AGNNConfig, cfg)), cfg)


# ================================================================================================
# 3. Training regime
# ================================================================================================
def train_dataset(cfg: Preset, root: str | Path | None = None) -> Triplets:
    """N' frames of one video per sample (a target frame and N'-1 others drawn at random), with one
    crop and flip for all of them. The paper's argument: a video of T frames gives C(T, N') graphs,
    far more training combinations than its frames alone (code: N' = 3, random frames).

    ``root``: a DAVIS-2016-layout folder (real DAVIS or voslab's synthetic set); None generates the
    preset's synthetic train split.
    """
    train = section(cfg, "train")
    n_frames = int(section(cfg, "model").get("n_frames", AGNNConfig.n_frames))
    videos = davis_split(cfg, train.get("split", "train"), root, TASK)
    return Triplets(videos, n_frames=n_frames, **sampler_options(cfg))


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, eta_min: float = 0.01) -> torch.Tensor:
    """The paper's class-balanced (weighted) BCE, per image, averaged over pixels and images:

        L = -mean_x [ (1 - eta) S_x log sigmoid(l_x) + eta (1 - S_x) log(1 - sigmoid(l_x)) ]

    with eta = the image's foreground fraction (paper: "the foreground-background pixel number
    ratio", exact form unverified), clamped to [eta_min, 1 - eta_min] so an empty (or full) mask still
    teaches something. logits, target (..., 1, H, W) -> scalar.
    """
    target = target.to(logits.dtype)
    eta = target.mean(dim=(-3, -2, -1), keepdim=True).clamp(eta_min, 1 - eta_min)  # (..., 1, 1, 1)
    weight = torch.where(target > 0.5, 1 - eta, eta)  # (..., 1, H, W)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def training_step(model: AGNN, batch: Mapping[str, torch.Tensor], cfg: Preset | None = None) -> dict:
    """Every node of every graph predicts its own mask. -> {"loss", "iou"}.

    ``train.loss``: "balanced" (paper: :func:`balanced_bce`), "code" (# code: BCE scaled by 1 /
    foreground fraction plus 0.8 x L1 between the probability and the mask), or "bce" (plain BCE with
    the optional ``train.pos_weight``).
    """
    train = section(cfg, "train")
    out = model(batch["frames"])
    logits, target = out["logits"], batch["masks"].float()  # (B, N, 1, H, W) each
    kind = train.get("loss", "balanced")
    check_choice("train", "loss", kind, ("balanced", "code", "bce"))
    if kind == "balanced":
        loss = balanced_bce(logits, target, float(train.get("eta_min", 0.01)))
    elif kind == "code":
        ratio = target.mean(dim=(-3, -2, -1), keepdim=True).clamp(min=1e-3)  # (B, N, 1, 1, 1)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-3, -2, -1), keepdim=True)
        loss = (bce / ratio).mean() + 0.8 * (torch.sigmoid(logits) - target).abs().mean()
    else:
        pos_weight = train.get("pos_weight")
        weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    return {"loss": loss, "iou": batch_iou(logits.detach().flatten(0, 1) > 0, target.flatten(0, 1) > 0.5)}


def configure_optimizer(model: AGNN, cfg: Preset) -> tuple:
    """The preset's optimiser with the poly schedule; the encoder (backbone + embedding) at
    ``train.encoder_lr_mult`` x lr and the graph and readout at ``train.graph_lr_mult`` x lr (# code, on
    video iterations: 0.01 x and 10 x; 1 and 1 by default)."""
    train = section(cfg, "train")
    net = getattr(model, "module", model)
    lr = float(train.get("lr", 1e-3))
    encoder, graph = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (encoder if name.startswith(("backbone.", "embedding.")) else graph).append(param)
    groups = [{"params": encoder, "lr": lr * float(train.get("encoder_lr_mult", 1.0))},
              {"params": graph, "lr": lr * float(train.get("graph_lr_mult", 1.0))}]
    return build_optimizer([g for g in groups if g["params"]], train)


# ================================================================================================
# 4. Inference protocol
# ================================================================================================
def graph_indices(n_video: int, n_frames: int, sampling: str = "random", seed: int = 0) -> np.ndarray:
    """The graph of every frame: (T, N') frame indices, row t = [t, N'-1 other frames].

    "random" (code): distinct random frames other than t (repeated only when the video is shorter
    than N'), from a generator seeded by (seed, T, t). "uniform" (deterministic): t + round(k T / N')
    mod T for k = 1..N'-1, spread evenly over the video.
    """
    check_choice("graph_indices", "sampling", sampling, ("random", "uniform"))
    rows = []
    for t in range(n_video):
        if sampling == "uniform":
            others = [(t + round(k * n_video / n_frames)) % n_video for k in range(1, n_frames)]
        else:
            rng = np.random.default_rng([seed, n_video, t])
            pool = [i for i in range(n_video) if i != t] or [t]
            others = list(rng.choice(pool, n_frames - 1, replace=len(pool) < n_frames - 1))
        rows.append([t, *others])
    return np.asarray(rows, dtype=np.int64).reshape(n_video, n_frames)


@torch.no_grad()
def predict_logits(model: AGNN, frames: np.ndarray, cfg: AGNNConfig, return_graphs: bool = False):
    """Foreground logits of every frame as node 0 of its graph. -> (T, 1, H, W) at the frames' size
    (and the (T, N') graphs with ``return_graphs``).

    Per scale (and mirror): each frame is embedded once; the graphs are assembled from the
    embeddings and run ``cfg.batch_graphs`` at a time; node 0's logits are resized back and averaged.
    """
    device = next(model.parameters()).device
    video = to_image_tensor(frames, device)  # (T, 3, H, W)
    size = tuple(video.shape[-2:])
    graphs = torch.from_numpy(graph_indices(len(video), cfg.n_frames, cfg.sampling, cfg.sample_seed)).to(device)
    base = cfg.inference_size or size
    passes = [(s, flip) for s in cfg.scales for flip in ((False, True) if cfg.mirror else (False,))]
    total = torch.zeros(len(video), 1, *size, device=device)
    for scale, flip in passes:
        scaled = (max(8, round(base[0] * scale)), max(8, round(base[1] * scale)))
        emb = torch.cat([model.embed(hflip_if(resize(video[s:s + cfg.batch_graphs], scaled), flip))
                         for s in range(0, len(video), cfg.batch_graphs)])  # (T, C, h, w), once per frame
        for start in range(0, len(video), cfg.batch_graphs):
            h0 = emb[graphs[start:start + cfg.batch_graphs]]  # (b, N', C, h, w)
            logits = model.readout(model.propagate(h0)[:, :1], h0[:, :1], scaled)[:, 0]  # (b, 1, H', W'): node 0 only
            total[start:start + len(h0)] += resize(hflip_if(logits, flip), size)
    logits = total / len(passes)
    return (logits, graphs.cpu().numpy()) if return_graphs else logits


def predict_sequence(model: AGNN, seq, cfg: Preset | None = None) -> np.ndarray:
    """AGNN's inference protocol on one video. -> uint8 (T, H, W) in {0, 1} at the video's size.

    Every frame is segmented as node 0 of a graph with N'-1 other frames of its video
    (:func:`graph_indices`), optionally at several scales; then threshold or, with ``crf``, a dense
    CRF on the probabilities. ``cfg``: a preset dict; its "eval" section overrides the inference
    fields of ``model.cfg``. Run it through ``voslab.inference.predict(model, seq, fn)`` (eval mode).
    """
    opts = inference_config(model.cfg, cfg)
    frames = seq.frames()
    logits = predict_logits(model, frames, opts)  # (T, 1, H, W)
    if opts.crf:
        return dense_crf(frames, torch.sigmoid(logits[:, 0]).cpu().numpy())
    cut = math.log(opts.threshold / (1.0 - opts.threshold))  # sigmoid(l) > t  <=>  l > logit(t)
    return (logits[:, 0] > cut).cpu().numpy().astype(np.uint8)


# ================================================================================================
# 5. Presets: AGNN's differences from voslab.models._common.BASE_PRESETS (the shared data splits)
# ================================================================================================
_TINY = {"backbone": "tiny", "output_stride": 8, "channels": 32, "backbone_kwargs": {"width": 8}}

PRESETS: dict[str, Preset] = with_base_presets({
    # CI: train + eval in seconds on 2 cores (a check that everything runs, not a result).
    "smoke": {
        "data": {"train": {"scenario": "transient_lookalikes"}, "val": {"scenario": "transient_lookalikes"}},
        "model": {**_TINY, "n_frames": 3, "iterations": 3},
        "train": {"steps": 16, "ablation_steps": 16, "ablation_seeds": [0], "batch_size": 2, "lr": 3e-3,
                  "optimizer": "adam", "size": (64, 112), "augment": False},
    },
    # A learner's 2-core laptop: notebook 02 and its ablation on the scenario where other frames of the
    # video are needed (voslab.data.synthetic "transient_lookalikes": one frame cannot tell the primary
    # object from a lookalike), scored on 48 val videos; the gate ablation swaps in "corrupted_frames".
    # The paper's balanced BCE weighs the object (about 2 % of the pixels here) like the background, so
    # the trained sigmoid estimates p(1-eta) / (p(1-eta) + (1-p) eta), not p: the decision p > 0.5 is that
    # output > 1 - eta, about 0.95 at this scene's foreground fraction (the paper thresholds at 0.5 on DAVIS,
    # where objects are larger, then runs a CRF). Plain BCE with pos_weight 4 or 8 (AD-Net's cpu choice)
    # collapsed to all-background in one of two 300-step runs each, so it is not used.
    "cpu": {
        "data": {"train": {"scenario": "transient_lookalikes"},
                 "val": {"scenario": "transient_lookalikes", "n_videos": 48}},
        "model": {**_TINY, "n_frames": 3, "iterations": 3},
        "train": {"steps": 300, "ablation_steps": 300, "ablation_seeds": [0, 1, 2], "batch_size": 4, "lr": 3e-3,
                  "optimizer": "adam", "size": (64, 112), "augment": True},
        "eval": {"threshold": 0.95},
    },
    # The paper's setting as far as known (code: train_iteration_conf_agnn.py): DeepLabv3-ResNet101 at OS 8,
    # C = 256, 3 nodes, 378 x 378 crops, batch 16, SGD 2.5e-4 with poly decay, graph at 10x and encoder at
    # 0.01x the lr on video iterations; test at scales 0.75/1/1.5 of 473 x 473, dense CRF.
    "gpu": {
        "model": {"backbone": "deeplabv3_resnet101", "output_stride": 8, "channels": 256, "n_frames": 3,
                  "iterations": 3},
        "train": {"steps": 20000, "ablation_steps": 5000, "batch_size": 16, "lr": 2.5e-4, "optimizer": "sgd",
                  "momentum": 0.9, "weight_decay": 5e-4, "encoder_lr_mult": 0.01, "graph_lr_mult": 10.0,
                  "size": (378, 378), "augment": True},
        "eval": {"inference_size": (473, 473), "scales": (0.75, 1.0, 1.5), "batch_graphs": 2},
    },
    # Real video on 2 CPU cores (issue 10): voslab's ImageNet MobileNetV2, frozen (its features computed once
    # per frame and cached, voslab.models._real), on the DAVIS-2016 train frames at 240p (BASE_PRESETS "real":
    # 25 sequences train, 5 held out as "val"). Scored at the annotations' size.
    "real": {
        "model": {"backbone": "mobilenet_v2", "pretrained": True, "output_stride": 16, "channels": 128,
                  "n_frames": 3, "iterations": 3, "backbone_kwargs": {"out_channels": 128}},
        "train": {"steps": 1500, "ablation_steps": 1500, "batch_size": 4, "lr": 1e-3, "optimizer": "adam",
                  "finetune": {"trainable_blocks": 0, "cache_mb": 2048}},
        "eval": {"inference_size": (240, 427)},
    },
})
