"""Torch datasets that cut training samples out of videos, one per paper's regime.

* :class:`FramePairs` — an anchor frame and another frame of the same video (AD-Net: anchor = first
  frame; "random" for the symmetric variant). Binary foreground masks.
* :class:`Clips` — ``n_frames`` consecutive frames with instance masks and optional flow (LVO,
  AGSS-VOS).
* :class:`Triplets` — a target frame plus N'-1 (default 2) random frames of the same video (AGNN's graph nodes).
* :class:`RefPrevCur` — a random reference frame, the previous and the current frame (FEELVOS).

All take any list-like of :class:`voslab.data.sequence.Sequence` (e.g. ``voslab.data.davis.DAVIS``),
resize to ``size`` (H, W), optionally augment (the same scale-crop and flip for every frame of an
item), and are deterministic: item ``i`` draws from a generator seeded by ``(seed, epoch, i)``, so
DataLoader workers agree and ``set_epoch`` gives fresh draws. Decoded frames and masks are kept in
memory up to ``cache_mb`` MiB (default 256; 0 turns it off): small datasets are read from disk once,
and items are identical with or without the cache. Items follow ``docs/architecture.md``:
images ``float32 (3, H, W)`` in [0, 1], instance masks ``int64 (H, W)`` (255 = void), binary masks
``float32 (1, H, W)`` in {0, 1}, flow ``float32 (2, H, W)`` in pixels of the output size.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from voslab.data import transforms
from voslab.data.transforms import to_image_tensor
from voslab.errors import VOSDataError

__all__ = ["FramePairs", "Clips", "Triplets", "RefPrevCur", "to_image_tensor", "binary_foreground"]

VOID = 255


def binary_foreground(mask: torch.Tensor) -> torch.Tensor:
    """Instance ids -> float {0, 1}: every object is foreground, background and void (255) are not."""
    return ((mask > 0) & (mask != VOID)).float()


class _VideoSampler(Dataset):
    """Shared machinery: sequence list, output size, per-item generator, reading and augmenting."""

    min_frames = 1

    def __init__(self, dataset, size: tuple[int, int] = (96, 160), augment: bool = True,
                 length: int | None = None, seed: int = 0, scale: tuple[float, float] = (0.8, 1.25),
                 flip_p: float = 0.5, cache_mb: float = 256):
        self.sequences = list(dataset)
        self.cache_bytes, self._cache, self._cached_bytes = int(float(cache_mb) * 2**20), {}, 0
        self.size = (int(size[0]), int(size[1]))
        self.augment, self.length, self.seed = bool(augment), length, int(seed)
        self.scale, self.flip_p = scale, flip_p
        self.epoch = 0
        self.usable = [i for i, seq in enumerate(self.sequences) if len(seq) >= self.min_frames]
        if not self.usable:
            raise VOSDataError(f"{type(self).__name__}: no sequence has at least {self.min_frames} frames "
                               f"(got {len(self.sequences)} sequences); use longer videos or fewer frames per item")

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (augmentation, random frames) for a new pass over the data."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index``: a function of (seed, epoch, index) only."""
        state = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def randint(self, generator: torch.Generator, high: int) -> int:
        return int(torch.randint(high, (1,), generator=generator))

    def load(self, seq, indices: list[int], generator: torch.Generator, with_flow: str | None = None):
        """Read frames/masks(/flow) of ``indices``, resize or augment them jointly.

        -> images (N, 3, H, W) float, masks (N, H, W) int64, flow (N, 2, H, W) float | None.
        """
        decoded = [self._decoded(seq, i) for i in indices]
        images = torch.stack([to_image_tensor(frame) for frame, _ in decoded])  # (N, 3, H0, W0)
        masks = torch.stack([mask for _, mask in decoded])  # (N, H0, W0)
        flow = None
        if with_flow:
            flow = torch.stack([torch.from_numpy(np.ascontiguousarray(seq.flow(i, with_flow))).permute(2, 0, 1)
                                for i in indices]).float()  # (N, 2, H0, W0)
        if self.augment:
            return transforms.augment(images, masks, flow, size=self.size, generator=generator,
                                      scale=self.scale, flip_p=self.flip_p)
        return transforms.resize(images, masks, flow, size=self.size)

    def _decoded(self, seq, i: int) -> tuple[np.ndarray, torch.Tensor]:
        """Frame i of ``seq`` (uint8 (H, W, 3)) and its mask (int64 (H, W)), from the memory cache
        when there (items hold copies: augmentation never writes into the cache)."""
        key = (id(seq), int(i))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        frame, mask = np.asarray(seq.frame(i)), self._mask(seq, i)
        size = frame.nbytes + mask.numel() * mask.element_size()
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[key] = (frame, mask)
            self._cached_bytes += size
        return frame, mask

    @staticmethod
    def _mask(seq, i: int) -> torch.Tensor:
        mask = seq.mask(i)
        if mask is None:
            raise VOSDataError(f"sequence {seq.name!r}: frame {i} has no annotation; training samplers need "
                               "annotated frames (use a fully annotated split, e.g. DAVIS train)")
        return torch.from_numpy(np.ascontiguousarray(mask)).long()

    def pick(self, index: int, generator: torch.Generator) -> tuple[int, int]:
        """Map an item index to (sequence index, frame index) over all usable frames; with ``length``
        set, a random sequence and frame instead."""
        if self.length is not None:
            s = self.usable[self.randint(generator, len(self.usable))]
            return s, self.randint(generator, len(self.sequences[s]))
        for s in self.usable:
            n = len(self.sequences[s])
            if index < n:
                return s, index
            index -= n
        raise IndexError(index)

    def __len__(self) -> int:
        if self.length is not None:
            return int(self.length)
        return sum(len(self.sequences[s]) for s in self.usable)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__} index {index} out of range (len {len(self)})")
        index = index % len(self)
        return self.make_item(index, self.generator(index))

    def make_item(self, index: int, generator: torch.Generator) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class FramePairs(_VideoSampler):
    """Anchor frame + another frame of one video (AD-Net), binary foreground masks.

    ``anchor="first"``: the anchor is frame 0 and the other frame is any later frame;
    ``anchor="random"``: both are random distinct frames. Item: ``anchor``/``frame`` (3, H, W),
    ``anchor_mask``/``mask`` (1, H, W) float {0, 1}, ``index`` (2,) long = (anchor frame, frame),
    ``sequence`` () long.
    """

    min_frames = 2

    def __init__(self, dataset, size: tuple[int, int] = (96, 160), anchor: str = "first",
                 augment: bool = True, length: int | None = None, seed: int = 0, **aug):
        if anchor not in ("first", "random"):
            raise VOSDataError(f"FramePairs: anchor must be 'first' or 'random', got {anchor!r}")
        self.anchor = anchor
        super().__init__(dataset, size, augment, length, seed, **aug)

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        s, t = self.pick(index, generator)
        seq = self.sequences[s]
        n = len(seq)
        if self.anchor == "first":
            anchor, t = 0, (t if t > 0 else 1 + self.randint(generator, n - 1))
        else:
            anchor = (t + 1 + self.randint(generator, n - 1)) % n  # any frame but t
        images, masks, _ = self.load(seq, [anchor, t], generator)
        binary = binary_foreground(masks).unsqueeze(1)  # (2, 1, H, W)
        return {"anchor": images[0], "frame": images[1], "anchor_mask": binary[0], "mask": binary[1],
                "index": torch.tensor([anchor, t]), "sequence": torch.tensor(s)}


class Clips(_VideoSampler):
    """``n_frames`` consecutive frames (every ``stride``-th) of one video.

    Item: ``frames`` (T, 3, H, W), ``masks`` (T, H, W) int64 ids (255 = void), ``flow`` (T, 2, H, W)
    when ``flow="forward"|"backward"``, ``index`` (T,) long frame indices, ``sequence`` () long.
    """

    def __init__(self, dataset, n_frames: int, size: tuple[int, int] = (96, 160), stride: int = 1,
                 augment: bool = True, length: int | None = None, seed: int = 0, flow: str | None = None,
                 **aug):
        if flow not in (None, "forward", "backward"):
            raise VOSDataError(f"Clips: flow must be None, 'forward' or 'backward', got {flow!r}")
        self.n_frames, self.stride, self.flow = int(n_frames), int(stride), flow
        self.min_frames = (self.n_frames - 1) * self.stride + 1
        super().__init__(dataset, size, augment, length, seed, **aug)

    def _starts(self, s: int) -> int:
        return len(self.sequences[s]) - self.min_frames + 1

    def __len__(self) -> int:
        if self.length is not None:
            return int(self.length)
        return sum(self._starts(s) for s in self.usable)

    def pick(self, index: int, generator: torch.Generator) -> tuple[int, int]:
        if self.length is not None:
            s = self.usable[self.randint(generator, len(self.usable))]
            return s, self.randint(generator, self._starts(s))
        for s in self.usable:
            if index < self._starts(s):
                return s, index
            index -= self._starts(s)
        raise IndexError(index)

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        s, start = self.pick(index, generator)
        indices = list(range(start, start + self.min_frames, self.stride))
        images, masks, flow = self.load(self.sequences[s], indices, generator, with_flow=self.flow)
        item = {"frames": images, "masks": masks, "index": torch.tensor(indices), "sequence": torch.tensor(s)}
        if flow is not None:
            item["flow"] = flow
        return item


class Triplets(_VideoSampler):
    """A target frame plus ``n_frames - 1`` other random frames of the same video (AGNN's graph
    nodes: N' = 3 by default, as in its code).

    Item: ``frames`` (N', 3, H, W) with the target first, ``masks`` (N', 1, H, W) float {0, 1},
    ``index`` (N',) long, ``sequence`` () long.
    """

    def __init__(self, dataset, size: tuple[int, int] = (96, 160), augment: bool = True,
                 length: int | None = None, seed: int = 0, n_frames: int = 3, **aug):
        if int(n_frames) < 1:
            raise VOSDataError(f"Triplets: n_frames must be at least 1, got {n_frames}")
        self.n_frames = self.min_frames = int(n_frames)
        super().__init__(dataset, size, augment, length, seed, **aug)

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        s, t = self.pick(index, generator)
        n = len(self.sequences[s])
        others = [i for i in torch.randperm(n, generator=generator).tolist() if i != t][:self.n_frames - 1]
        indices = [t, *others]
        images, masks, _ = self.load(self.sequences[s], indices, generator)
        return {"frames": images, "masks": binary_foreground(masks).unsqueeze(1),
                "index": torch.tensor(indices), "sequence": torch.tensor(s)}


class RefPrevCur(_VideoSampler):
    """FEELVOS training sample: a random reference frame, then frames t-1 and t.

    Item: ``ref``/``prev``/``cur`` (3, H, W), ``ref_mask``/``prev_mask``/``cur_mask`` (H, W) int64
    instance ids (255 = void), ``index`` (3,) long = (ref, t-1, t), ``sequence`` () long.
    """

    min_frames = 2

    def make_item(self, index: int, generator: torch.Generator) -> dict:
        s, t = self.pick(index, generator)
        n = len(self.sequences[s])
        t = max(t, 1)  # the current frame needs a previous one
        candidates = [i for i in range(n) if i not in (t - 1, t)] or [t - 1]  # 2-frame videos: ref = prev
        ref = candidates[self.randint(generator, len(candidates))]
        indices = [ref, t - 1, t]
        images, masks, _ = self.load(self.sequences[s], indices, generator)
        return {"ref": images[0], "prev": images[1], "cur": images[2],
                "ref_mask": masks[0], "prev_mask": masks[1], "cur_mask": masks[2],
                "index": torch.tensor(indices), "sequence": torch.tensor(s)}
