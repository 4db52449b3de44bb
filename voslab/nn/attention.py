"""Attention blocks shared by the papers.

- :func:`diffusion`: parameter-free scaled dot-product attention (AD-Net's anchor diffusion and
  intra-frame branch).
- :class:`NonLocal`: embedded-Gaussian non-local block (Wang et al., CVPR'18), or its parameter-free
  variant (AD-Net).
- :class:`CoAttention`: A = X_a^T W X_b with a learnable W, softmax each way (AGNN's inter-attention).
- :class:`GatedMessage`: a sigmoid gate on a message (AGNN), spatial (1x1 conv) or channel-wise (GAP).

Every block can return its attention or gate tensors so notebooks can draw them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["diffusion", "flatten_spatial", "NonLocal", "CoAttention", "GatedMessage"]


def flatten_spatial(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W)."""
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got shape {tuple(x.shape)}")
    return x.flatten(2)


def _check_diffusion_shapes(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError(
            "diffusion expects query (B, C, Nq), key (B, C, Nk), value (B, Cv, Nk); got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)} "
            "(flatten (B, C, H, W) maps with voslab.nn.attention.flatten_spatial)"
        )
    if query.shape[0] != key.shape[0] or key.shape[0] != value.shape[0]:
        raise ValueError(f"batch sizes differ: query {query.shape[0]}, key {key.shape[0]}, value {value.shape[0]}")
    if query.shape[1] != key.shape[1]:
        raise ValueError(f"query and key need the same channel count, got {query.shape[1]} and {key.shape[1]}")
    if key.shape[2] != value.shape[2]:
        raise ValueError(f"key and value need the same number of positions, got {key.shape[2]} and {value.shape[2]}")


def diffusion(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float | None = None,
    return_attention: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free scaled dot-product attention ("diffusion").

    ``P = softmax(query^T key * scale)`` over key positions, ``out = value P^T``.

    Args:
        query: (B, C, Nq). key: (B, C, Nk). value: (B, Cv, Nk).
        scale: logit scale; default ``1 / sqrt(C)``.
        return_attention: also return P (B, Nq, Nk); each row sums to 1.

    Returns:
        out (B, Cv, Nq), or (out, P).
    """
    _check_diffusion_shapes(query, key, value)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[1])
    logits = torch.bmm(query.transpose(1, 2), key) * scale  # (B, Nq, Nk)
    attention = logits.softmax(dim=-1)  # (B, Nq, Nk)
    out = torch.bmm(value, attention.transpose(1, 2))  # (B, Cv, Nq)
    return (out, attention) if return_attention else out


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR'18).

    With projections: ``theta, phi, g`` are 1x1 convs to ``inter_channels``;
    ``y = diffusion(theta(x), phi(x), g(x))`` and ``z = x + BN(W y)`` with W a 1x1 conv whose BN
    starts at zero, so the block starts as the identity.

    ``parameter_free=True`` (AD-Net's intra-frame branch): ``z = diffusion(x, x, x)`` — no
    projections, no residual (AD-Net adds the skip branch itself).

    ``scale``: logit scale, default ``1/sqrt(C)``; ``scale=1.0`` is the original non-local block.
    ``forward(x (B, C, H, W), return_attention=False) -> z (B, C, H, W)`` or ``(z, P (B, HW, HW))``.
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None, parameter_free: bool = False,
                 scale: float | None = None):
        super().__init__()
        self.parameter_free, self.scale = parameter_free, scale
        if parameter_free:
            return
        inter = inter_channels or max(in_channels // 2, 1)
        self.theta = nn.Conv2d(in_channels, inter, 1)
        self.phi = nn.Conv2d(in_channels, inter, 1)
        self.g = nn.Conv2d(in_channels, inter, 1)
        self.out = nn.Sequential(nn.Conv2d(inter, in_channels, 1, bias=False), nn.BatchNorm2d(in_channels))
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, c, h, w = x.shape
        if self.parameter_free:
            flat = flatten_spatial(x)  # (B, C, HW)
            y, attention = diffusion(flat, flat, flat, self.scale, return_attention=True)
            z = y.view(b, c, h, w)
        else:
            y, attention = diffusion(
                flatten_spatial(self.theta(x)), flatten_spatial(self.phi(x)), flatten_spatial(self.g(x)),
                self.scale, return_attention=True,
            )  # (B, C', HW), (B, HW, HW)
            z = x + self.out(y.view(b, -1, h, w))  # (B, C, H, W)
        return (z, attention) if return_attention else z


class CoAttention(nn.Module):
    """Co-attention between two feature maps (AGNN's inter-attention / COSNet).

    Affinity ``A = X_a^T W X_b`` (B, Na, Nb) with a learnable C x C matrix W. Messages:
    ``m_a = X_b softmax_b(A)^T`` (each position of a gathers from b; rows of A normalised) and
    ``m_b = X_a softmax_a(A)`` (each position of b gathers from a; columns normalised).

    ``forward(xa (B, C, Ha, Wa), xb (B, C, Hb, Wb), return_attention=False) -> (m_a, m_b)`` with the
    shapes of xa and xb; with ``return_attention`` also a dict ``affinity`` (B, Na, Nb),
    ``a_from_b`` (B, Na, Nb, rows sum to 1), ``b_from_a`` (B, Nb, Na, rows sum to 1).
    """

    def __init__(self, channels: int, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        self.scale = scale

    def affinity(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """A = X_a^T W X_b * scale: (B, Na, Nb)."""
        fa, fb = flatten_spatial(xa), flatten_spatial(xb)  # (B, C, Na), (B, C, Nb)
        return torch.einsum("bcn,cd,bdm->bnm", fa, self.weight, fb) * self.scale

    def forward(self, xa: torch.Tensor, xb: torch.Tensor, return_attention: bool = False):
        if xa.shape[:2] != xb.shape[:2]:
            raise ValueError(f"CoAttention needs the same batch and channels, got {tuple(xa.shape)} and {tuple(xb.shape)}")
        A = self.affinity(xa, xb)  # (B, Na, Nb)
        a_from_b = A.softmax(dim=2)  # (B, Na, Nb)
        b_from_a = A.transpose(1, 2).softmax(dim=2)  # (B, Nb, Na)
        m_a = torch.bmm(flatten_spatial(xb), a_from_b.transpose(1, 2)).view_as(xa)  # (B, C, Ha, Wa)
        m_b = torch.bmm(flatten_spatial(xa), b_from_a.transpose(1, 2)).view_as(xb)  # (B, C, Hb, Wb)
        if return_attention:
            return m_a, m_b, {"affinity": A, "a_from_b": a_from_b, "b_from_a": b_from_a}
        return m_a, m_b


class GatedMessage(nn.Module):
    """Sigmoid gate on a message (AGNN).

    ``mode="spatial"`` (released AGNN code): gate = sigmoid(1x1 conv C->1, no bias) (B, 1, H, W).
    ``mode="channel"`` (AGNN paper): gate = sigmoid(GAP(1x1 conv C->C)) (B, C, 1, 1).
    ``forward(message (B, C, H, W), return_gate=False) -> gated`` or ``(gated, gate)``.
    """

    def __init__(self, channels: int, mode: str = "spatial"):
        super().__init__()
        if mode not in ("spatial", "channel"):
            raise ValueError(f"GatedMessage mode must be 'spatial' or 'channel', got {mode!r}")
        self.mode = mode
        self.conv = nn.Conv2d(channels, 1, 1, bias=False) if mode == "spatial" else nn.Conv2d(channels, channels, 1)

    def gate(self, message: torch.Tensor) -> torch.Tensor:
        logits = self.conv(message)  # (B, 1, H, W) or (B, C, H, W)
        if self.mode == "channel":
            logits = F.adaptive_avg_pool2d(logits, 1)  # (B, C, 1, 1)
        return torch.sigmoid(logits)

    def forward(self, message: torch.Tensor, return_gate: bool = False):
        gate = self.gate(message)
        gated = message * gate
        return (gated, gate) if return_gate else gated
