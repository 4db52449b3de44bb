"""Post-processing: clean-up helpers, AD-Net's temporal gate, flow-based instance pruning."""
from __future__ import annotations

import numpy as np
import pytest

from voslab.postprocess import (
    fill_holes,
    gate_by_previous_mask,
    label_instances,
    link_instances,
    prune_static_instances,
    remove_small,
)

T, H, W = 8, 64, 96
PAN = 2.0  # camera pans right by 2 px/frame: the background flow is (+2, 0) everywhere


def _square(mask: np.ndarray, top: int, left: int, size: int) -> None:
    mask[top:top + size, left:left + size] = 1


def _scene(distractor_size: int = 8, mover_size: int = 20, mover_speed: float = 3.0):
    """A moving object (own motion on top of the pan) and a static distractor (moves with the pan)."""
    masks = np.zeros((T, H, W), np.uint8)
    flows = np.zeros((T, H, W, 2), np.float32)
    flows[..., 0] = PAN
    movers, distractors = np.zeros_like(masks), np.zeros_like(masks)
    for t in range(T):
        _square(movers[t], 30, 5 + int(t * (PAN + mover_speed)), mover_size)
        _square(distractors[t], 8, 60 + int(t * PAN), distractor_size)
        flows[t][movers[t] > 0, 0] = PAN + mover_speed
    masks = movers | distractors
    return masks, flows, movers, distractors


def test_static_distractor_is_pruned_and_moving_object_kept():
    masks, flows, movers, distractors = _scene()
    out, report = prune_static_instances(masks, flows, return_report=True)
    assert out.dtype == np.uint8 and out.shape == masks.shape
    np.testing.assert_array_equal(out, movers)  # the distractor is gone in every frame, mover intact
    assert report.n_tracks == 2 and len(report.pruned_tracks) == 1


def test_small_but_moving_object_is_kept():
    masks, flows, movers, distractors = _scene()
    # give the small object its own motion: it is no longer static with respect to the camera
    flows[distractors > 0, 1] = 2.0
    np.testing.assert_array_equal(prune_static_instances(masks, flows), masks)


def test_static_object_that_is_largest_is_kept():
    masks, flows, movers, distractors = _scene(distractor_size=30, mover_size=10)
    out = prune_static_instances(masks, flows)
    np.testing.assert_array_equal(out, masks)  # big static thing is not "small": kept


def test_pruning_needs_consistent_evidence():
    masks, flows, movers, distractors = _scene()
    # the distractor moves in 6 of 8 frames: flagged only in 2 -> below min_fraction, kept
    for t in range(6):
        flows[t][distractors[t] > 0, 1] = 3.0
    np.testing.assert_array_equal(prune_static_instances(masks, flows), masks)


def test_pruning_rejects_wrong_flow_shape():
    masks, flows, *_ = _scene()
    with pytest.raises(ValueError, match="flows must be"):
        prune_static_instances(masks, flows[:-1])


def test_linking_follows_overlap():
    masks, flows, movers, distractors = _scene()
    labels, ids = label_instances(masks)
    track = link_instances(labels, ids)
    # two tracks over the video, each component of a frame in a different one
    assert len(np.unique(track[1:])) == 2
    mover_tracks = {int(track[labels[t][movers[t] > 0][0]]) for t in range(T)}
    assert len(mover_tracks) == 1


def test_fill_holes_and_remove_small():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:12, 2:12] = 1
    mask[5:8, 5:8] = 0  # a hole
    mask[15, 15] = 1  # a speck
    filled = fill_holes(mask)
    assert filled[6, 6] == 1 and filled.sum() == 100 + 1
    cleaned = remove_small(mask, min_area=5)
    assert cleaned[15, 15] == 0 and cleaned.sum() == mask.sum() - 1
    video = np.stack([mask, mask])
    assert remove_small(video, 5).shape == (2, 20, 20)


def test_gate_by_previous_mask_suppresses_far_blobs():
    size = (480, 854)
    prev = np.zeros(size, np.uint8)
    prev[200:300, 300:400] = 1  # area 10 000: inside the official (5 000, 100 000) range
    pred = np.zeros(size, np.uint8)
    pred[210:310, 310:410] = 1  # near the previous object: kept
    pred[10:40, 800:840] = 1  # far away: removed
    gated = gate_by_previous_mask(pred, prev)
    assert gated[250, 350] == 1 and gated[20, 820] == 0
    # the dilation reaches 50 px beyond the (opened) previous mask, no further
    pred2 = np.zeros(size, np.uint8)
    pred2[250, 449] = pred2[250, 451] = 1
    gated2 = gate_by_previous_mask(pred2, prev)
    assert gated2[250, 449] == 1 and gated2[250, 451] == 0
    # outside the area range (tiny previous mask) or no previous mask: unchanged
    tiny = np.zeros(size, np.uint8)
    tiny[0:5, 0:5] = 1
    np.testing.assert_array_equal(gate_by_previous_mask(pred, tiny), pred)
    np.testing.assert_array_equal(gate_by_previous_mask(pred, None), pred)


def test_gate_scales_with_image_size():
    # at half the reference size the same scene (scaled) gives the same decision
    prev = np.zeros((240, 427), np.uint8)
    prev[100:150, 150:200] = 1
    pred = np.zeros_like(prev)
    pred[125, 224] = pred[125, 226] = 1
    gated = gate_by_previous_mask(pred, prev)
    assert gated[125, 224] == 1 and gated[125, 226] == 0
