"""Joint augmentation of images, masks and optical flow (torch tensors).

Every function takes the same geometric change for all inputs so they stay aligned:
images are resampled bilinearly, masks with nearest neighbour (ids must not blend), and flow is
resampled *and* its vectors are rescaled (dx by the width ratio, dy by the height ratio) or
negated (dx under a horizontal flip). Shapes: images ``(..., C, H, W)`` float, masks ``(..., H, W)``
any dtype, flow ``(..., 2, H, W)`` float; leading dimensions (time) are kept.
Randomness comes from an explicit ``torch.Generator`` so results are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from voslab.errors import VOSDataError

__all__ = ["to_image_tensor", "mask_to_grid", "hflip", "crop", "resize", "ScaleCrop", "sample_scale_crop",
           "apply_scale_crop", "augment"]


def to_image_tensor(frames: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """``uint8 (..., H, W, 3)`` -> ``float32 (..., 3, H, W)`` in [0, 1] (one frame or a video).

    With ``device`` the uint8 array is moved first and converted there (4x less to copy).
    """
    x = torch.from_numpy(np.ascontiguousarray(frames))
    if device is not None:
        x = x.to(device)
    return x.movedim(-1, -3).float().div_(255)


def mask_to_grid(masks: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary masks ``(T, H, W)`` -> ``bool (T, h, w)`` on a coarser grid (e.g. an embedding's):
    a cell is foreground when most of its pixels are (area average > 0.5)."""
    area = F.interpolate(torch.as_tensor(masks).float()[:, None], size=tuple(size), mode="area")  # (T, 1, h, w)
    return area[:, 0] > 0.5


def _flat(x: torch.Tensor, channel_dims: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(..., [C,] H, W) -> (N, C, H, W) and the leading shape to restore."""
    lead = x.shape[: x.dim() - 2 - channel_dims]
    return x.reshape(-1, *(x.shape[-3:] if channel_dims else (1, *x.shape[-2:]))), tuple(lead)


def _unflat(x: torch.Tensor, lead: tuple[int, ...], channel_dims: int) -> torch.Tensor:
    return x.reshape(*lead, *(x.shape[-3:] if channel_dims else x.shape[-2:]))


def hflip(image: torch.Tensor | None = None, mask: torch.Tensor | None = None,
          flow: torch.Tensor | None = None):
    """Mirror left-right. Flow is mirrored and its dx negated. Returns (image, mask, flow)."""
    image = image.flip(-1) if image is not None else None
    mask = mask.flip(-1) if mask is not None else None
    if flow is not None:
        flow = flow.flip(-1).clone()
        flow[..., 0, :, :] = -flow[..., 0, :, :]
    return image, mask, flow


def crop(image=None, mask=None, flow=None, *, top: int, left: int, height: int, width: int):
    """Cut the same window from every input (flow vectors are unchanged). Returns (image, mask, flow)."""
    window = (..., slice(top, top + height), slice(left, left + width))
    return tuple(x[window] if x is not None else None for x in (image, mask, flow))


def resize(image=None, mask=None, flow=None, *, size: tuple[int, int]):
    """Resize to ``size`` (H, W): bilinear (antialiased when shrinking) images, nearest masks,
    bilinear flow with vectors rescaled. Returns (image, mask, flow)."""
    out_h, out_w = (int(s) for s in size)
    if image is not None:
        flat, lead = _flat(image, 1)
        if tuple(flat.shape[-2:]) != (out_h, out_w):
            shrink = out_h < flat.shape[-2] or out_w < flat.shape[-1]
            flat = F.interpolate(flat.float(), size=(out_h, out_w), mode="bilinear", align_corners=False,
                                 antialias=shrink)
        image = _unflat(flat.to(image.dtype) if image.is_floating_point() else flat, lead, 1)
    if mask is not None:
        flat, lead = _flat(mask, 0)
        if tuple(flat.shape[-2:]) != (out_h, out_w):
            flat = F.interpolate(flat.float(), size=(out_h, out_w), mode="nearest-exact").to(mask.dtype)
        mask = _unflat(flat, lead, 0)
    if flow is not None:
        flat, lead = _flat(flow, 1)
        in_h, in_w = flat.shape[-2:]
        if (in_h, in_w) != (out_h, out_w):
            flat = F.interpolate(flat.float(), size=(out_h, out_w), mode="bilinear", align_corners=False)
            ratio = torch.tensor([out_w / in_w, out_h / in_h], dtype=flat.dtype).view(1, 2, 1, 1)
            flat = flat * ratio
        flow = _unflat(flat, lead, 1)
    return image, mask, flow


@dataclass(frozen=True)
class ScaleCrop:
    """One random draw: a source window (top, left, height, width) and a horizontal flip."""
    top: int
    left: int
    height: int
    width: int
    flip: bool


def sample_scale_crop(in_size: tuple[int, int], out_size: tuple[int, int], generator: torch.Generator,
                      scale: tuple[float, float] = (0.8, 1.25), flip_p: float = 0.5) -> ScaleCrop:
    """Draw a window with the output's aspect ratio, zoomed by a factor in ``scale`` (>1 zooms in)
    relative to fitting the whole frame, clamped to the frame; and a flip with probability ``flip_p``."""
    in_h, in_w = in_size
    out_h, out_w = out_size
    u = torch.rand(4, generator=generator).tolist()
    zoom = scale[0] * (scale[1] / scale[0]) ** u[0]  # log-uniform
    fit = min(in_h / out_h, in_w / out_w)  # largest window with the output aspect ratio
    height = max(1, min(in_h, round(out_h * fit / zoom)))
    width = max(1, min(in_w, round(out_w * fit / zoom)))
    top = int(u[1] * (in_h - height + 1)) if in_h > height else 0
    left = int(u[2] * (in_w - width + 1)) if in_w > width else 0
    return ScaleCrop(min(top, in_h - height), min(left, in_w - width), height, width, u[3] < flip_p)


def apply_scale_crop(params: ScaleCrop, image=None, mask=None, flow=None, *, size: tuple[int, int]):
    """Crop the window, resize it to ``size``, flip if drawn. Returns (image, mask, flow)."""
    image, mask, flow = crop(image, mask, flow, top=params.top, left=params.left,
                             height=params.height, width=params.width)
    image, mask, flow = resize(image, mask, flow, size=size)
    if params.flip:
        image, mask, flow = hflip(image, mask, flow)
    return image, mask, flow


def augment(image=None, mask=None, flow=None, *, size: tuple[int, int], generator: torch.Generator,
            scale: tuple[float, float] = (0.8, 1.25), flip_p: float = 0.5):
    """Random scale-crop + flip, the same for every input and every leading (time) index.

    ``image (..., 3, H, W)``, ``mask (..., H, W)``, ``flow (..., 2, H, W)`` -> same at ``size``.
    """
    reference = next((x for x in (image, mask) if x is not None), flow)
    if reference is None:
        raise VOSDataError("augment: pass at least one of image, mask, flow")
    in_size = tuple(reference.shape[-2:])
    for name, x in (("mask", mask), ("flow", flow)):
        if x is not None and tuple(x.shape[-2:]) != in_size:
            raise VOSDataError(f"augment: {name} is {tuple(x.shape[-2:])} but the image is {in_size}; "
                               "resize them to the same (H, W) first")
    params = sample_scale_crop(in_size, size, generator, scale, flip_p)
    return apply_scale_crop(params, image, mask, flow, size=size)
