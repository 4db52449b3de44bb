"""Sanity check of the ImageNet MobileNetV2 weights: top-5 classes on a few DAVIS frames.

    python data_scripts/fetch_weights.py      # once
    python data_scripts/check_mobilenet.py [--data DIR] [--sequences bear boat ...]   # DIR: default voslab.utils.shared_data_dir()

Expected: brown bear, speedboat (called "motorboat" in our class list), black swan (only in the
DAVIS val split, absent from the shared extract), dog breeds. Frames are centre-cropped to a
square and resized to 224x224 (the ImageNet evaluation protocol, without the 256 -> 224 margin).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from voslab.data.io import read_image
from voslab.data.transforms import to_image_tensor
from voslab.nn.backbones import mobilenet_v2
from voslab.pretrained import imagenet_classes
from voslab.utils import shared_data_dir

DEFAULT_DATA = shared_data_dir()
DEFAULT_SEQUENCES = ("bear", "boat", "blackswan", "dog-agility", "elephant", "flamingo", "mallard-water", "rhino", "train")


def load_square_crop(path: Path, size: int = 224) -> torch.Tensor:
    """JPEG -> (1, 3, size, size) float in [0, 1], centre square crop then bilinear resize."""
    image = to_image_tensor(read_image(path))  # (3, H, W)
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[:, top:top + side, left:left + side][None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def find_frame(data_root: Path, sequence: str, index: int = 0) -> Path | None:
    for candidate in data_root.glob(f"*/JPEGImages/{sequence}/{index:05d}.jpg"):
        return candidate
    for candidate in data_root.glob(f"*/JPEGImages/480p/{sequence}/{index:05d}.jpg"):
        return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding DAVIS extracts (default: %(default)s)")
    parser.add_argument("--sequences", nargs="+", default=list(DEFAULT_SEQUENCES))
    parser.add_argument("--frame", type=int, default=0)
    args = parser.parse_args(argv)

    net = mobilenet_v2(pretrained=True).eval()
    names = imagenet_classes()
    found = 0
    for sequence in args.sequences:
        path = find_frame(args.data, sequence, args.frame)
        if path is None:
            print(f"{sequence}: no frame {args.frame:05d}.jpg under {args.data}, skipped", file=sys.stderr)
            continue
        found += 1
        with torch.no_grad():
            probs = net.classify(load_square_crop(path)).softmax(dim=1)[0]
        top = probs.topk(5)
        ranked = ", ".join(f"{names[i]} ({i}) {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{sequence:12s} {ranked}")
    if found == 0:
        print(f"no DAVIS frames found under {args.data}; pass --data", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
