"""LVO: shapes, gradients, the ConvGRU step against hand-computed values, the bidirectional pass,
the stop-and-go augmentation, the motion target, overfitting, save/load, inference, CLI."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from voslab import cli, postprocess, zoo
from voslab.models import lvo
from voslab.models.lvo import LVO, VARIANTS, LVOConfig, build_model
from roundtrip import checkpoint_round_trip

SMALL = dict(backbone="tiny", backbone_kwargs={"width": 4}, appearance_dim=8, motion_width=4, fusion_dim=8,
             hidden_dim=4, kernel_size=7, classifier_dim=4)
B, T, H, W = 2, 3, 40, 56  # 1/8 grid 5 x 7


def small_model(seed: int = 0, **overrides) -> LVO:
    torch.manual_seed(seed)
    return build_model({"model": {**SMALL, **overrides}})


def clip(seed: int = 0, b: int = B, t: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, H, W, generator=g), 3 * torch.randn(b, t, 2, H, W, generator=g)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_for_every_variant(variant):
    model = small_model(variant=variant)
    frames, flow = clip()
    out = model(frames, flow, return_maps=True)
    h, w = math.ceil(H / 8), math.ceil(W / 8)
    assert out["logits"].shape == (B, T, 1, H, W)
    assert out["coarse_logits"].shape == (B, T, 1, h, w)
    assert out["fused"].shape == (B, T, 8, h, w)
    d = 1 if variant == "forward" else 2
    assert out["states"].shape == (B, T, d * 4, h, w)
    assert (out["appearance"] is None) == (variant == "motion")
    assert (out["motion"] is None) == (variant == "appearance")
    if out["appearance"] is not None:
        assert out["appearance"].shape == (B, T, 8, h, w)
        assert out["appearance"].abs().max() <= 1  # tanh
    if out["motion"] is not None:
        assert out["motion"].shape == (B, T, 5, h, w)  # m decoder features + the logit
        assert out["motion_logits"].shape == (B, T, 1, H // 4, W // 4)
    assert ("update" in out) == (variant != "no_memory")
    if "update" in out:
        assert out["update"].shape == out["reset"].shape == out["states"].shape


def test_variant_without_motion_needs_no_flow_and_others_do():
    frames, _ = clip()
    assert small_model(variant="appearance")(frames)["logits"].shape == (B, T, 1, H, W)
    with pytest.raises(ValueError, match="pass flow"):
        small_model(variant="full")(frames)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    model = small_model(variant=variant)
    frames, flow = clip()
    masks = (torch.rand(B, T, 1, H, W) > 0.7).float()
    masks[..., 10:25, 10:30] = 1
    batch = {"frames": frames, "masks": masks, "flow": flow, "flow_gt": flow}
    lvo.training_step(model, batch, {"train": {"pos_weight": 2.0}})["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_memory_loss_does_not_reach_the_motion_stream():
    """The motion stream learns from its own loss only (the paper keeps MP-Net fixed)."""
    model = small_model()
    frames, flow = clip()
    model(frames, flow)["logits"].sum().backward()
    assert all(p.grad is None for p in model.motion_net.parameters())
    assert all(p.grad is not None for p in model.memory_gru.parameters())


# ---------------------------------------------------------------------------- the memory
def test_convgru_step_against_hand_computed_values():
    """One ConvGRU step of LVO's memory on a 1x1 grid, 1 input and 1 hidden channel: the equations of
    the paper, z = s(Wxz x + Whz h + bz), r = s(Wxr x + Whr h + br), h~ = tanh(Wxh x + Whh (r h) + bh),
    h' = (1 - z) h + z h~, with the 7x7 kernels' centre taps as the weights."""
    model = small_model(hidden_dim=1, fusion_dim=1)
    cell = model.memory_gru.cells["fw"]
    with torch.no_grad():
        for conv in (cell.gates, cell.candidate):
            conv.weight.zero_()
        # gates: output channel 0 = z, 1 = r; input channel 0 = x, 1 = h
        cell.gates.weight[0, 0, 3, 3], cell.gates.weight[0, 1, 3, 3], cell.gates.bias[0] = 0.5, -1.0, 0.1
        cell.gates.weight[1, 0, 3, 3], cell.gates.weight[1, 1, 3, 3], cell.gates.bias[1] = 2.0, 0.3, -0.2
        cell.candidate.weight[0, 0, 3, 3], cell.candidate.weight[0, 1, 3, 3], cell.candidate.bias[0] = 1.5, 0.7, 0.05
    x, h = 0.8, -0.4
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    z = sig(0.5 * x - 1.0 * h + 0.1)
    r = sig(2.0 * x + 0.3 * h - 0.2)
    cand = math.tanh(1.5 * x + 0.7 * r * h + 0.05)
    expected = (1 - z) * h + z * cand
    out, gates = cell(torch.tensor([[[[x]]]]), torch.tensor([[[[h]]]]), return_gates=True)
    assert out.item() == pytest.approx(expected, abs=1e-6)
    assert gates["update"].item() == pytest.approx(z, abs=1e-6)
    assert gates["reset"].item() == pytest.approx(r, abs=1e-6)
    assert cell.gates.kernel_size == (7, 7) and cell.candidate.kernel_size == (7, 7)


def test_bidirectional_states_are_forward_then_backward_concatenated():
    model = small_model().eval()
    x = torch.randn(1, 4, 8, 5, 7)
    states, _ = model.memory(x)
    fw, bw = model.memory_gru.cells["fw"], model.memory_gru.cells["bw"]
    h = None
    for t in range(4):  # forward in time
        h = fw(x[:, t], h)
        torch.testing.assert_close(states[:, t, :4], h)
    h = None
    for t in reversed(range(4)):  # backward in time
        h = bw(x[:, t], h)
        torch.testing.assert_close(states[:, t, 4:], h)


def test_bidirectional_first_frame_sees_the_future_forward_does_not():
    frames, flow = clip(b=1, t=4)
    changed = frames.clone()
    changed[:, -1] = torch.rand_like(changed[:, -1])
    for variant, sees in (("full", True), ("forward", False)):
        model = small_model(variant=variant).eval()
        with torch.no_grad():
            a = model(frames, flow)["logits"][:, 0]
            b = model(changed, flow)["logits"][:, 0]
        assert bool((a - b).abs().max() > 0) == sees, variant


def test_no_memory_variant_treats_frames_independently():
    model = small_model(variant="no_memory").eval()
    frames, flow = clip(b=1, t=3)
    with torch.no_grad():
        whole = model(frames, flow)["logits"]
        single = model(frames[:, 1:2], flow[:, 1:2])["logits"]
    torch.testing.assert_close(whole[:, 1:2], single)


# ---------------------------------------------------------------------------- training pieces
def test_stop_and_go_repeats_frames_and_removes_motion():
    frames, flow = clip(b=1, t=6)
    item = {"frames": frames[0], "masks": torch.rand(6, 1, H, W), "flow": flow[0], "flow_gt": flow[0] + 1}
    end, stopped = lvo.stop_and_go(item, 2, at_end=True)
    assert stopped.tolist() == [False, False, False, True, True, True]
    for key in ("frames", "masks"):
        assert torch.equal(end[key][4], item[key][3]) and torch.equal(end[key][5], item[key][3])
        assert torch.equal(end[key][:4], item[key][:4])
    assert (end["flow"][3:] == 0).all() and (end["flow_gt"][3:] == 0).all()
    assert torch.equal(end["flow"][:3], item["flow"][:3])
    start, stopped = lvo.stop_and_go(item, 2, at_end=False)
    assert stopped.tolist() == [True, True, True, False, False, False]
    assert torch.equal(start["frames"][0], item["frames"][2]) and torch.equal(start["frames"][1], item["frames"][2])
    assert (start["flow"][:3] == 0).all() and torch.equal(start["flow"][3:], item["flow"][3:])
    assert not (item["flow"] == 0).any()  # the input item is unchanged


def test_moving_target_removes_the_camera_motion():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:5] = 1
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0] = 3.0  # the camera pans 3 px right
    flow[0, 0, 2:5, 2:5] = 6.0  # frame 0: the object moves on its own; frame 1: it moves with the camera
    target = lvo.moving_target(mask, flow)
    assert torch.equal(target[0], mask[0]) and target[1].sum() == 0


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = small_model()
    h, w = 64, 96
    g = torch.Generator().manual_seed(1)
    frames, flow = torch.rand(2, 3, 3, h, w, generator=g), torch.randn(2, 3, 2, h, w, generator=g)
    masks = torch.zeros(2, 3, 1, h, w)
    masks[..., 16:48, 24:72] = 1
    frames = 0.5 * frames + 0.5 * masks  # the object is brighter than the background
    batch = {"frames": frames, "masks": masks, "flow": flow, "flow_gt": flow}
    cfg = {"train": {"optimizer": "adam", "lr": 3e-2, "steps": 150}}
    optimizer, scheduler = zoo.get("lvo").configure_optimizer(model, cfg)
    losses = []
    for _ in range(150):
        out = lvo.training_step(model, batch, cfg)
        optimizer.zero_grad()
        out["memory_loss"].backward()
        optimizer.step()
        scheduler.step()
        losses.append(out["memory_loss"].item())
    assert losses[-1] < 0.25 * losses[0], (losses[::10], out["iou"])
    assert out["iou"] > 0.85


def test_rmsprop_option():
    model = small_model()
    optimizer, _ = lvo.configure_optimizer(model, {"train": {"optimizer": "rmsprop", "lr": 1e-4, "steps": 10}})
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_model().eval()
    clone = checkpoint_round_trip(model, build_model, tmp_path)
    frames, flow = clip()
    with torch.no_grad():
        torch.testing.assert_close(clone(frames, flow)["logits"], model(frames, flow)["logits"], rtol=0, atol=0)


def test_train_dataset_items_and_estimated_flow_follow_the_augmentation():
    cfg = lvo.PRESETS["smoke"]
    data = lvo.train_dataset({**cfg, "train": {**cfg["train"], "augment": True, "stop_p": 0.0}})
    item = data[3]
    t, (h, w) = cfg["train"]["clip_len"], cfg["train"]["size"]
    assert item["frames"].shape == (t, 3, h, w) and item["masks"].shape == (t, 1, h, w)
    assert item["flow"].shape == item["flow_gt"].shape == (t, 2, h, w)
    # DIS flow on the crop agrees with the ground truth far better than with the mirrored ground truth
    gt, est = item["flow_gt"][:-1], item["flow"][:-1]
    mirrored = gt.flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    assert (est - gt).abs().mean() < (est - mirrored).abs().mean()


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="variant"):
        LVOConfig(variant="bogus")
    with pytest.raises(ValueError, match="flow"):
        LVOConfig(flow="gt")
    with pytest.raises(ValueError, match="unknown LVOConfig"):
        build_model({"model": {"hidden": 3}})


def test_presets_are_complete():
    for name, preset in lvo.PRESETS.items():
        assert set(preset) == {"data", "model", "train", "eval"}, name
        LVOConfig(**preset["model"])
        fields = {f.name for f in dataclasses.fields(LVOConfig)}
        assert set(preset["eval"]) - fields <= {"split"}, name
    assert lvo.PRESETS["cpu"]["train"]["scenarios"] == ["camouflage", "stop_and_go", "static_start"]
    assert lvo.TASK == "unsupervised"


# ---------------------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def synthetic_seq(tmp_path_factory):
    from voslab.data import synthetic
    from voslab.data.davis import DAVIS

    root = synthetic.generate(tmp_path_factory.mktemp("syn"), split="val", n_videos=1, n_frames=4, size=(48, 80),
                              seed=0, scenario="stop_and_go")
    return DAVIS(root, "val", year=2016, annotations="Annotations_binary")[0]


def test_predict_sequence_returns_masks_at_the_video_size(synthetic_seq):
    model = small_model().eval()
    masks = lvo.predict_sequence(model, synthetic_seq, None)
    assert masks.shape == (4, 48, 80) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    oracle = lvo.predict_sequence(model, synthetic_seq, {"eval": {"flow": "oracle"}})
    assert oracle.shape == masks.shape


def test_estimated_flow_differs_from_the_oracle_and_is_close_to_it(synthetic_seq):
    est = lvo.video_flow_for(synthetic_seq, LVOConfig(flow="estimated"))
    gt = lvo.video_flow_for(synthetic_seq, LVOConfig(flow="oracle"))
    assert est.shape == gt.shape == (4, 48, 80, 2)
    assert not np.allclose(est, gt)
    assert np.abs(est - gt).mean() < np.abs(gt).mean() + 1.0


def test_predict_logits_equal_the_forward_pass(synthetic_seq):
    model = small_model().eval()
    opts = model.cfg
    flow = lvo.video_flow_for(synthetic_seq, opts)
    logits = lvo.predict_logits(model, synthetic_seq.frames(), flow, opts)["logits"]
    frames = torch.from_numpy(synthetic_seq.frames()).permute(0, 3, 1, 2).float()[None] / 255
    with torch.no_grad():
        direct = model(frames, torch.from_numpy(flow).permute(0, 3, 1, 2)[None])["logits"][0]
    torch.testing.assert_close(logits, direct)


def test_crf_option_gives_a_clear_message_or_runs(synthetic_seq, monkeypatch):
    model = small_model().eval()
    if postprocess.crf_available():
        masks = lvo.predict_sequence(model, synthetic_seq, {"eval": {"crf": True}})
        assert masks.shape == (4, 48, 80) and masks.dtype == np.uint8
    import builtins

    real_import = builtins.__import__

    def no_crf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError("No module named 'pydensecrf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crf)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        lvo.predict_sequence(model, synthetic_seq, {"eval": {"crf": True}})


@pytest.mark.skipif(not postprocess.crf_available(), reason="pydensecrf2 not installed (optional extra 'crf')")
def test_dense_crf_snaps_a_blurry_probability_to_the_colour_edge():
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[10:30, 15:45] = 220  # a bright rectangle
    yy, xx = np.mgrid[:40, :60]
    prob = np.exp(-(((yy - 20) / 12) ** 2 + ((xx - 30) / 18) ** 2))  # a blob roughly over it
    prob = (0.15 + 0.7 * prob).astype(np.float32)
    refined = postprocess.dense_crf(frame, prob)
    truth = frame[..., 0] > 0
    iou = lambda m: (m & truth).sum() / (m | truth).sum()  # noqa: E731
    assert iou(refined.astype(bool)) > iou(prob > 0.5) and iou(refined.astype(bool)) > 0.9


# ---------------------------------------------------------------------------- CLI
def test_cli_trains_and_evaluates_the_smoke_preset(tmp_path, capsys):
    weights = tmp_path / "lvo.pt"
    assert cli.main(["train", "lvo", "--preset", "smoke", "--steps", "3", "--out", str(weights)]) == 0
    assert weights.is_file()
    assert cli.main(["evaluate", "lvo", "--preset", "smoke", "--ckpt", str(weights)]) == 0
    assert "J&F-Mean" in capsys.readouterr().out
