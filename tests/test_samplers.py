"""voslab.data.samplers and voslab.data.transforms: shapes, determinism, joint augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voslab.data import synthetic, transforms
from voslab.data.samplers import Clips, FramePairs, RefPrevCur, Triplets, binary_foreground
from voslab.errors import VOSDataError

SIZE = (32, 48)


class FakeSequence:
    """In-memory stand-in with the `Sequence` interface (name, len, frame, mask, flow, size)."""

    def __init__(self, name, frames, masks, flow_fw=None, flow_bw=None):
        self.name, self._frames, self._masks = name, frames, masks
        self._flow = {"forward": flow_fw, "backward": flow_bw}

    def __len__(self):
        return len(self._frames)

    @property
    def size(self):
        return self._frames.shape[1:3]

    def frame(self, i):
        return self._frames[i]

    def mask(self, i):
        return self._masks[i]

    def flow(self, i, direction="forward"):
        return self._flow[direction][i]


def synthetic_sequence(seed: int, n_frames: int = 5, size=(40, 60)) -> FakeSequence:
    v = synthetic.render_video(seed, n_frames, size, 1.0)
    return FakeSequence(f"synth-{seed}", v["frames"], v["instances"], v["flow_forward"], v["flow_backward"])


def marker_sequence(n_frames: int = 4, size=(40, 60)) -> FakeSequence:
    """Frames whose red channel *is* the mask: any misalignment between image and mask shows."""
    rng = np.random.default_rng(0)
    h, w = size
    masks = np.zeros((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        masks[t, top:top + h // 3, left:left + w // 4] = 1 + t % 2  # two ids
        masks[t, -3:, :5] = 255  # a void corner
    frames = np.zeros((n_frames, h, w, 3), np.uint8)
    frames[..., 0] = np.where((masks > 0) & (masks != 255), 255, 0)
    frames[..., 1] = np.linspace(0, 255, w)[None, None, :].astype(np.uint8)  # left-right ramp
    return FakeSequence("marker", frames, masks)


@pytest.fixture(scope="module")
def dataset():
    return [synthetic_sequence(0), synthetic_sequence(1, n_frames=3)]


# ------------------------------------------------------------------------------------ transforms
def test_hflip_negates_flow_dx_and_mirrors_everything():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    mask = torch.arange(2 * 4 * 5).view(2, 4, 5)
    flow = torch.randn(2, 2, 4, 5)
    fi, fm, ff = transforms.hflip(image, mask, flow)
    assert torch.equal(fi[..., 0], image[..., -1]) and torch.equal(fm[..., 0], mask[..., -1])
    assert torch.equal(ff[:, 0, :, 0], -flow[:, 0, :, -1]) and torch.equal(ff[:, 1, :, 0], flow[:, 1, :, -1])


def test_resize_scales_flow_vectors_and_keeps_mask_ids():
    flow = torch.zeros(2, 40, 60)
    flow[0], flow[1] = 3.0, -2.0
    mask = torch.randint(0, 3, (40, 60))
    mask[0, 0] = 255
    _, small_mask, small_flow = transforms.resize(None, mask, flow, size=(20, 15))
    assert torch.allclose(small_flow[0], torch.full((20, 15), 3.0 * 15 / 60))
    assert torch.allclose(small_flow[1], torch.full((20, 15), -2.0 * 20 / 40))
    assert small_mask.dtype == mask.dtype and set(small_mask.unique().tolist()) <= {0, 1, 2, 255}


def test_scale_crop_window_matches_manual_crop_and_resize():
    gen = torch.Generator().manual_seed(3)
    params = transforms.sample_scale_crop((40, 60), (20, 30), gen, scale=(1.2, 1.2), flip_p=0.0)
    assert params.height <= 40 and params.width <= 60 and abs(params.width / params.height - 1.5) < 0.1
    image = torch.rand(3, 40, 60)
    out, _, _ = transforms.apply_scale_crop(params, image, size=(20, 30))
    window = image[:, params.top:params.top + params.height, params.left:params.left + params.width]
    manual = F.interpolate(window[None], size=(20, 30), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(out, manual)


def warp_back(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Brute-force reference warp, out(p) = image(p + flow(p)). (C, H, W), (2, H, W)."""
    _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = (xs + flow[0]) / (w - 1) * 2 - 1
    gy = (ys + flow[1]) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], -1)[None]
    return F.grid_sample(image[None], grid, align_corners=True, padding_mode="border")[0]


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_augmented_flow_still_maps_augmented_frames(flip_p):
    """After a joint scale-crop (+flip), frame t+1 warped by the augmented flow gives frame t."""
    v = synthetic.render_video(4, 3, (64, 96), 1.0)
    images = torch.from_numpy(v["frames"][:2]).permute(0, 3, 1, 2).float()  # (2, 3, H, W)
    flow = torch.from_numpy(v["flow_forward"][:2]).permute(0, 3, 1, 2)  # (2, 2, H, W)
    gen = torch.Generator().manual_seed(0)
    aug_images, _, aug_flow = transforms.augment(images, None, flow, size=(48, 64), generator=gen,
                                                 scale=(1.1, 1.3), flip_p=flip_p)
    good = (warp_back(aug_images[1], aug_flow[0]) - aug_images[0]).abs().mean()
    wrong_sign = aug_flow[0].clone()
    wrong_sign[0] = -wrong_sign[0]  # what forgetting to negate dx on a flip looks like
    bad = (warp_back(aug_images[1], wrong_sign) - aug_images[0]).abs().mean()
    unwarped = (aug_images[1] - aug_images[0]).abs().mean()
    assert good < 0.7 * unwarped and good < 0.7 * bad, (good, bad, unwarped)


def test_augment_rejects_mismatched_sizes():
    with pytest.raises(VOSDataError, match="mask"):
        transforms.augment(torch.rand(3, 10, 10), torch.zeros(8, 8), size=(8, 8), generator=torch.Generator())


# ------------------------------------------------------------------------------------ samplers
def test_frame_pairs_shapes_and_first_anchor(dataset):
    pairs = FramePairs(dataset, size=SIZE, anchor="first", augment=True, seed=0)
    assert len(pairs) == 5 + 3
    for i in range(len(pairs)):
        item = pairs[i]
        assert item["anchor"].shape == (3, *SIZE) and item["frame"].dtype == torch.float32
        assert item["anchor_mask"].shape == (1, *SIZE) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert 0 <= item["anchor"].min() and item["anchor"].max() <= 1
        assert item["index"].dtype == torch.long and item["index"][0] == 0 and item["index"][1] > 0


def test_frame_pairs_random_anchor_differs_from_frame(dataset):
    pairs = FramePairs(dataset, size=SIZE, anchor="random", augment=False, length=20, seed=1)
    assert len(pairs) == 20
    indices = [pairs[i]["index"].tolist() for i in range(20)]
    assert all(a != b for a, b in indices) and any(a > 0 for a, _ in indices)


def test_frame_pairs_without_augment_equals_resized_source():
    seq = synthetic_sequence(2)
    item = FramePairs([seq], size=(20, 30), anchor="first", augment=False)[2]
    expected = F.interpolate(torch.from_numpy(seq.frame(2)).permute(2, 0, 1)[None].float() / 255, size=(20, 30),
                             mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(item["frame"], expected)
    mask = torch.from_numpy(seq.mask(2) > 0).float()[None, None]
    torch.testing.assert_close(item["mask"], F.interpolate(mask, size=(20, 30), mode="nearest-exact")[0])


def test_items_are_deterministic_per_seed_and_index(dataset):
    a = FramePairs(dataset, size=SIZE, seed=5)
    b = FramePairs(dataset, size=SIZE, seed=5)
    c = FramePairs(dataset, size=SIZE, seed=6)
    for key in ("anchor", "frame", "mask"):
        assert torch.equal(a[3][key], b[3][key])
    assert any(not torch.equal(a[i]["frame"], c[i]["frame"]) for i in range(len(a)))
    before = a[3]["frame"]
    a.set_epoch(1)
    assert not torch.equal(before, a[3]["frame"])


def test_dataloader_workers_agree_with_direct_indexing(dataset):
    clips = Clips(dataset, n_frames=2, size=SIZE, seed=3)
    loader = torch.utils.data.DataLoader(clips, batch_size=3, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    direct = torch.stack([clips[i]["frames"] for i in range(3)])
    assert torch.equal(batch["frames"], direct)


def test_augmentation_moves_image_and_mask_together():
    seq = marker_sequence()
    for flip_p in (0.0, 1.0):
        pairs = FramePairs([seq], size=SIZE, anchor="first", augment=True, seed=0, flip_p=flip_p)
        for i in range(len(pairs)):
            item = pairs[i]
            for image, mask in ((item["anchor"], item["anchor_mask"]), (item["frame"], item["mask"])):
                agree = ((image[0] > 0.5).float() == mask[0]).float().mean()
                assert agree > 0.97


def test_flipped_item_is_the_mirror_of_the_unflipped_one():
    seq = marker_sequence()
    plain = FramePairs([seq], size=SIZE, seed=2, flip_p=0.0)[1]
    flipped = FramePairs([seq], size=SIZE, seed=2, flip_p=1.0)[1]
    for key in ("anchor", "frame", "anchor_mask", "mask"):
        torch.testing.assert_close(flipped[key], plain[key].flip(-1))
    green = flipped["frame"][1]  # the ramp now decreases left to right
    assert green[:, 0].mean() > green[:, -1].mean()


def test_binary_foreground_ignores_void():
    mask = torch.tensor([[0, 1, 2], [255, 3, 0]])
    assert binary_foreground(mask).tolist() == [[0, 1, 1], [0, 1, 0]]


def test_clips_consecutive_frames_masks_and_flow(dataset):
    clips = Clips(dataset, n_frames=3, size=SIZE, augment=False, flow="forward")
    assert len(clips) == (5 - 3 + 1) + (3 - 3 + 1)
    item = clips[1]
    assert item["frames"].shape == (3, 3, *SIZE) and item["masks"].shape == (3, *SIZE)
    assert item["masks"].dtype == torch.long and item["flow"].shape == (3, 2, *SIZE)
    assert item["index"].tolist() == [1, 2, 3]
    raw = torch.from_numpy(dataset[0].flow(1, "forward")).permute(2, 0, 1)  # (2, 40, 60) -> scaled to 32x48
    assert abs(item["flow"][0, 0].mean() - raw[0].mean() * 48 / 60) < 0.1
    strided = Clips(dataset, n_frames=2, stride=2, size=SIZE, augment=False)
    assert strided[0]["index"].tolist() == [0, 2] and len(strided) == 3 + 1


def test_clips_keep_instance_ids_and_void():
    seq = marker_sequence()
    item = Clips([seq], n_frames=2, size=(40, 60), augment=False)[0]
    assert set(item["masks"].unique().tolist()) == {0, 1, 2, 255}


def test_triplets_target_first_and_distinct(dataset):
    triplets = Triplets(dataset, size=SIZE, seed=0)
    for i in range(len(triplets)):
        item = triplets[i]
        index = item["index"].tolist()
        assert item["frames"].shape == (3, 3, *SIZE) and item["masks"].shape == (3, 1, *SIZE)
        assert len(set(index)) == 3
    assert triplets[4]["index"][0] == 4


def test_ref_prev_cur(dataset):
    sampler = RefPrevCur(dataset, size=SIZE, length=30, seed=0)
    for i in range(len(sampler)):
        item = sampler[i]
        ref, prev, cur = item["index"].tolist()
        assert prev + 1 == cur and ref not in (prev, cur)
        assert item["cur_mask"].dtype == torch.long and item["ref"].shape == (3, *SIZE)


def test_too_short_videos_and_bad_options_raise():
    one_frame = FakeSequence("one", np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(VOSDataError, match="at least 2 frames"):
        FramePairs([one_frame], size=(8, 8))
    with pytest.raises(VOSDataError, match="anchor"):
        FramePairs([one_frame], anchor="last")
    with pytest.raises(VOSDataError, match="annotation"):
        unlabelled = FakeSequence("u", np.zeros((2, 8, 8, 3), np.uint8), [None, None])
        FramePairs([unlabelled], size=(8, 8))[0]


def test_with_the_davis_reader_on_generated_data(tmp_path):
    from voslab.data import davis

    root = synthetic.generate(tmp_path, "train", n_videos=2, n_frames=4, size=(40, 60), seed=0)
    data = davis.DAVIS(root, "train", year=2016, annotations="Annotations_binary")
    pairs = FramePairs(data, size=SIZE, augment=False)
    item = pairs[1]
    v = synthetic.render_video(synthetic.video_seed(0, "train", 0), 4, (40, 60), 1.0)
    expected = F.interpolate(torch.from_numpy(v["foreground"][1]).float()[None, None], size=SIZE, mode="nearest-exact")
    torch.testing.assert_close(item["mask"], expected[0])
    clips = Clips(davis.DAVIS(root, "train", year=2017), n_frames=2, size=(40, 60), augment=False, flow="backward")
    np.testing.assert_array_equal(clips[0]["masks"].numpy(), v["instances"][:2])
    np.testing.assert_allclose(clips[0]["flow"].permute(0, 2, 3, 1).numpy(), v["flow_backward"][:2])


def test_to_image_tensor_frames_and_videos():
    video = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)  # (T, H, W, 3)
    images = transforms.to_image_tensor(video)
    assert images.shape == (3, 3, 5, 7) and images.dtype == torch.float32
    np.testing.assert_allclose(images.permute(0, 2, 3, 1).numpy(), video / 255, rtol=1e-6)
    torch.testing.assert_close(transforms.to_image_tensor(video[1]), images[1])  # one frame (H, W, 3)
    torch.testing.assert_close(transforms.to_image_tensor(video, "cpu"), images)


def test_mask_to_grid_keeps_cells_that_are_mostly_foreground():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2, :2] = 1                 # one full 2x2 cell
    masks[1, 0, :3] = 1                  # half of cell (0, 0), a quarter of cell (0, 1)
    masks[1, 1, 0] = 1                   # -> cell (0, 0) is 3/4 foreground
    grid = transforms.mask_to_grid(masks, (2, 2))
    assert grid.dtype == torch.bool and grid.shape == (2, 2, 2)
    assert grid[0].tolist() == [[True, False], [False, False]]
    assert grid[1].tolist() == [[True, False], [False, False]]
    torch.testing.assert_close(transforms.mask_to_grid(torch.from_numpy(masks), (2, 2)), grid)


class CountingSequence(FakeSequence):
    """Counts frame reads, to see the decoded-frame cache at work."""

    reads = 0

    def frame(self, i):
        type(self).reads += 1
        return self._frames[i]


@pytest.mark.parametrize("augment", [False, True])
def test_frame_cache_reads_once_and_changes_nothing(augment):
    CountingSequence.reads = 0
    seqs = [synthetic_sequence(s, n_frames=4) for s in range(2)]
    counted = [CountingSequence(s.name, s._frames, s._masks) for s in seqs]
    cached = FramePairs(counted, size=SIZE, augment=augment, length=40, seed=3)
    plain = FramePairs(seqs, size=SIZE, augment=augment, length=40, seed=3, cache_mb=0)
    for i in range(len(cached)):
        a, b = cached[i], plain[i]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        a["frame"].fill_(0)  # items are copies: writing into one never reaches the cache
    assert CountingSequence.reads <= 8  # 2 videos x 4 frames, each decoded once
    torch.testing.assert_close(cached[0]["anchor"], plain[0]["anchor"], rtol=0, atol=0)
    assert FramePairs(counted, size=SIZE, length=4, cache_mb=0)._cached_bytes == 0
