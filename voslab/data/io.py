"""Read and write the files of a DAVIS-style dataset: JPEG/PNG frames, palette masks, Middlebury flow.

All readers return NumPy arrays following the on-disk conventions (``docs/architecture.md``):
frames ``uint8 (H, W, 3)``, masks ``uint8 (H, W)``, flow ``float32 (H, W, 2)``.
Missing files raise ``FileNotFoundError``; unreadable ones raise ``VOSDataError``; both name the path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from voslab.errors import VOSDataError

__all__ = ["DAVIS_PALETTE", "davis_palette", "read_image", "write_image", "read_mask", "write_mask",
           "read_flo", "write_flo", "FLO_MAGIC"]

FLO_MAGIC = 202021.25  # b"PIEH" read as a little-endian float32: the Middlebury .flo tag


def davis_palette(n: int = 256) -> np.ndarray:
    """The DAVIS palette (= PASCAL VOC colour map): index bits interleaved into R, G, B. ``(n, 3) uint8``."""
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.int64)
    for shift in range(7, -1, -1):  # 8 bit-planes, 3 bits consumed per plane
        bits = index >> (3 * (7 - shift))
        for channel in range(3):
            palette[:, channel] |= ((bits >> channel) & 1) << shift
    return palette.astype(np.uint8)


DAVIS_PALETTE = davis_palette()  # (256, 3): 0 black, 1 (128,0,0), 2 (0,128,0), ...


def _require_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (check the dataset root and the sequence/frame name)")
    return path


def _open_image(path: Path) -> Image.Image:
    path = _require_file(path)
    try:
        image = Image.open(path)
        image.load()
    except Exception as err:  # Pillow raises several types for broken files
        raise VOSDataError(f"{path}: cannot decode the image ({err}); the file is corrupt or truncated, "
                           "re-download or regenerate it") from err
    return image


def _prepare_parent(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read_image(path: str | Path) -> np.ndarray:
    """Read a JPEG/PNG frame as RGB ``uint8 (H, W, 3)``."""
    return np.array(_open_image(Path(path)).convert("RGB"), dtype=np.uint8)  # writable copy


def write_image(path: str | Path, arr: np.ndarray, quality: int = 95, subsampling: str = "4:2:0") -> None:
    """Write an RGB ``uint8 (H, W, 3)`` frame (format from the suffix).

    ``quality`` and chroma ``subsampling`` ("4:2:0" like DAVIS, or "4:4:4") apply to JPEG only.
    """
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise VOSDataError(f"write_image({path}): expected uint8 (H, W, 3), got {arr.dtype} {arr.shape}; "
                           "convert with (img * 255).round().clip(0, 255).astype(np.uint8)")
    path = _prepare_parent(path)
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    options = {"quality": quality, "subsampling": subsampling} if is_jpeg else {}
    Image.fromarray(arr, mode="RGB").save(path, **options)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG as ``uint8 (H, W)``: palette indices for indexed PNGs, grey values otherwise."""
    image = _open_image(Path(path))
    if image.mode in ("P", "L"):
        return np.array(image, dtype=np.uint8)
    if image.mode in ("1", "I", "I;16", "F"):
        return np.array(image.convert("L"), dtype=np.uint8)
    if image.mode in ("RGB", "RGBA"):
        return _rgb_to_palette_index(np.asarray(image.convert("RGB")), path)
    return np.array(image.convert("L"), dtype=np.uint8)


def _rgb_to_palette_index(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    """Map an RGB-saved mask back to DAVIS palette indices (some tools drop the palette)."""
    code = (rgb.astype(np.int64) * np.array([1 << 16, 1 << 8, 1])).sum(-1)  # (H, W)
    palette_code = (DAVIS_PALETTE.astype(np.int64) * np.array([1 << 16, 1 << 8, 1])).sum(-1)  # (256,)
    lookup = {int(c): i for i, c in reversed(list(enumerate(palette_code)))}
    values, inverse = np.unique(code, return_inverse=True)
    try:
        indices = np.array([lookup[int(v)] for v in values], dtype=np.uint8)
    except KeyError as err:
        raise VOSDataError(f"{path}: RGB mask has colours outside the DAVIS palette; save masks as indexed "
                           "PNGs (voslab.data.io.write_mask)") from err
    return indices[inverse.reshape(code.shape)]


def write_mask(path: str | Path, ids: np.ndarray) -> None:
    """Write instance ids ``uint8 (H, W)`` as an indexed PNG with the DAVIS palette."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise VOSDataError(f"write_mask({path}): expected (H, W) ids, got shape {ids.shape}")
    if ids.dtype != np.uint8:
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise VOSDataError(f"write_mask({path}): ids must be in 0..255, got {ids.min()}..{ids.max()}")
        ids = ids.astype(np.uint8)
    path = _prepare_parent(path)
    image = Image.fromarray(ids, mode="P")
    image.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    image.save(path)


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file as ``float32 (H, W, 2)`` (dx, dy in pixels)."""
    path = _require_file(Path(path))
    raw = path.read_bytes()
    if len(raw) < 12:
        raise VOSDataError(f"{path}: too short for a .flo file ({len(raw)} bytes); regenerate it")
    magic = np.frombuffer(raw, "<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise VOSDataError(f"{path}: wrong .flo magic number {magic!r} (expected {FLO_MAGIC}); "
                           "not a Middlebury flow file or corrupt")
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", count=2, offset=4))
    expected = 12 + 4 * 2 * width * height
    if width <= 0 or height <= 0 or len(raw) != expected:
        raise VOSDataError(f"{path}: .flo header says {width}x{height} ({expected} bytes) but the file has "
                           f"{len(raw)} bytes; the file is truncated, regenerate it")
    return np.frombuffer(raw, "<f4", offset=12).reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write ``float32 (H, W, 2)`` flow as a Middlebury ``.flo`` file."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise VOSDataError(f"write_flo({path}): expected flow of shape (H, W, 2), got {flow.shape}")
    height, width = flow.shape[:2]
    path = _prepare_parent(path)
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(flow, dtype="<f4").tobytes())
