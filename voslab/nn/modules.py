"""Convolutional building blocks: conv-BN-ReLU, ASPP (DeepLabV3), GlobalConv and Refine (AGSS-VOS / RGMP),
the DeepLabv3+ skip decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "ASPP", "GlobalConv", "ResBlock", "Refine", "SkipDecoder"]


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias, 'same' padding for odd k) + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv-BN-ReLU -> broadcast back to the input size (ASPP's image branch)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        if self.training and x.shape[0] == 1:
            # BatchNorm cannot normalise a single value per channel; skip batch stats for a batch of 1.
            conv, bn, relu = self.project
            y = relu(F.batch_norm(conv(pooled), bn.running_mean, bn.running_var, bn.weight, bn.bias, False))
        else:
            y = self.project(pooled)
        return y.expand(-1, -1, x.shape[2], x.shape[3])  # (B, C_out, H, W)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3): 1x1 + 3x3 atrous convs at ``rates`` + image pooling,
    concatenated and projected by a 1x1 conv-BN-ReLU (+ dropout).

    Rates (6, 12, 18) suit output stride 16; double them at output stride 8 (12, 24, 36).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: tuple[int, ...] = (6, 12, 18),
        mid_channels: int | None = None,
        image_pooling: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        mid = mid_channels or out_channels
        branches = [ConvBNReLU(in_channels, mid, kernel_size=1)]
        branches += [ConvBNReLU(in_channels, mid, kernel_size=3, dilation=r) for r in rates]
        if image_pooling:
            branches.append(_ImagePooling(in_channels, mid))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(mid * len(branches), out_channels, kernel_size=1),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, H, W)
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class GlobalConv(nn.Module):
    """Large-kernel "global convolution" (Peng et al. 2017, used by AGSS-VOS/RGMP):
    (k x 1 -> 1 x k) + (1 x k -> k x 1), summed. Cheap k x k receptive field."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7, mid_channels: int | None = None):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"GlobalConv kernel_size must be odd, got {kernel_size}")
        mid = mid_channels or out_channels
        k, p = kernel_size, kernel_size // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, mid, (k, 1), padding=(p, 0)),
            nn.Conv2d(mid, out_channels, (1, k), padding=(0, p)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, mid, (1, k), padding=(0, p)),
            nn.Conv2d(mid, out_channels, (k, 1), padding=(p, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)  # (B, C_out, H, W)


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv3x3(relu(conv3x3(relu(x)))) (RGMP/AGSS style)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Refine(nn.Module):
    """Refinement module (RGMP / AGSS-VOS decoder): bring a skip feature to ``out_channels`` with a
    3x3 conv, residual block, add the upsampled coarser decoder map, residual block.

    ``forward(skip (B, C_skip, H, W), coarse (B, C_out, h, w)) -> (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int = 256):
        super().__init__()
        self.convFS = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.resFS = ResBlock(out_channels)
        self.resMM = ResBlock(out_channels)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        s = self.resFS(self.convFS(skip))  # (B, C_out, H, W)
        up = F.interpolate(coarse, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.resMM(s + up)  # (B, C_out, H, W)


class SkipDecoder(nn.Module):
    """DeepLabv3+ decoder: a stride-4 skip feature projected to ``skip_out`` channels (1x1 conv-BN-ReLU),
    concatenated with the coarse map upsampled to its size, fused by a 3x3 conv-BN-ReLU.

    ``forward(coarse (B, C_in, h, w), skip (B, C_skip, H/4, W/4)) -> (B, out_channels, H/4, W/4)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, skip_out: int = 48):
        super().__init__()
        self.skip_proj = ConvBNReLU(skip_channels, skip_out, kernel_size=1)
        self.fuse = ConvBNReLU(in_channels + skip_out, out_channels, kernel_size=3)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        s = self.skip_proj(skip)  # (B, skip_out, H/4, W/4)
        up = F.interpolate(coarse, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, s], dim=1))  # (B, out_channels, H/4, W/4)
