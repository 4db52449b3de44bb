"""AGSS-VOS: shapes, each block against a hand-computed reference, one pass for K objects against a
loop over the objects, the loss and the soft aggregation by hand, flow warping, training (fallback,
overfitting), online inference (late entrants), save/load, presets and the CLI."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voslab import cli, presets, zoo
from voslab.flow import warp
from voslab.models import agss
from voslab.models.agss import AGSS, AGSSConfig, build_model, soft_aggregate, soft_iou_loss
from roundtrip import checkpoint_round_trip

SMALL = dict(backbone="tiny", backbone_kwargs={"width": 4}, decoder_dim=8, gc_kernel=3, flow="none")
H, W = 32, 48


def small_model(seed: int = 0, **overrides) -> AGSS:
    torch.manual_seed(seed)
    return build_model({"model": {**SMALL, **overrides}})


def blocks(batch: int = 2, k: int = 3, seed: int = 0) -> torch.Tensor:
    """(B, K, H, W) float masks: a 10x10 block per object at a random place."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(batch, k, H, W)
    for b in range(batch):
        for o in range(k):
            y, x = int(torch.randint(0, H - 10, (1,), generator=g)), int(torch.randint(0, W - 10, (1,), generator=g))
            m[b, o, y:y + 10, x:x + 10] = 1
    return m


def clip_batch(batch: int = 2, T: int = 3, k: int = 2, seed: int = 0) -> dict:
    """A training batch: blocks moving right by 2 pixels a frame on a textured background."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 1, 3, H, W, generator=g).expand(batch, T, 3, H, W).clone()
    masks = torch.zeros(batch, T, H, W, dtype=torch.long)
    for o in range(1, k + 1):
        y, x = 4 + 12 * (o - 1) % (H - 12), 4
        for t in range(T):
            masks[:, t, y:y + 10, x + 2 * t:x + 2 * t + 10] = o
            frames[:, t, o % 3, y:y + 10, x + 2 * t:x + 2 * t + 10] = 1.0
    return {"frames": frames, "masks": masks, "n_objects": torch.full((batch,), k)}


# ---------------------------------------------------------------------------- shapes and gradients
@pytest.mark.parametrize("options", [{}, {"use_agnostic": False}, {"use_attention": False},
                                     {"mask_input": "features"}, {"output_stride": 16}])
def test_shapes_for_every_variant(options):
    model = small_model(**options).eval()
    image, prev = torch.rand(2, 3, H, W), blocks(2, 3)
    ref = model.reference(image, prev.max(1, keepdim=True).values)
    out = model(image, prev, ref, return_maps=True)
    assert out["probs"].shape == out["raw"].shape == (2, 3, H, W)
    assert out["bg"].shape == (2, H, W)
    torch.testing.assert_close(out["probs"].sum(1) + out["bg"], torch.ones(2, H, W))
    if model.cfg.use_agnostic:
        assert out["agnostic"].shape == (2, 8, H // 8, W // 8)
    else:
        assert out["agnostic"] is None and ref is None
    if model.cfg.use_attention:
        assert out["attention"].shape == (2, 3, 8, H // 8, W // 8)


@pytest.mark.parametrize("options", [{}, {"mask_input": "features"}])
def test_gradients_reach_every_parameter(options):
    model = small_model(**options)
    out = agss.training_step(model, clip_batch(), {})
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# ---------------------------------------------------------------------------- blocks by hand
def test_soft_aggregation_by_hand():
    p = torch.tensor([0.8, 0.4, 0.1]).view(1, 3, 1, 1)
    bg = 1 - 0.8
    odds = [bg / (1 - bg)] + [v / (1 - v) for v in (0.8, 0.4, 0.1)]
    expected = torch.tensor([o / sum(odds) for o in odds]).view(1, 4, 1, 1)
    torch.testing.assert_close(soft_aggregate(p), expected)
    # an object that is not valid gets 0 and leaves the others' normalisation
    valid = torch.tensor([[True, False, True]])
    odds_v = [bg / (1 - bg), 0.8 / 0.2, 0.0, 0.1 / 0.9]
    torch.testing.assert_close(soft_aggregate(p, valid), torch.tensor([o / sum(odds_v) for o in odds_v]).view(1, 4, 1, 1))
    # clamping: a certain object (p = 1) stays finite
    out = soft_aggregate(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    assert torch.isfinite(out).all() and out[0, 1].item() > 0.999


def test_soft_iou_losses_by_hand():
    p = torch.tensor([[[[0.9, 0.2], [0.5, 0.0]]]])  # (1, 1, 2, 2)
    y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    inter, union = 0.9 + 0.5, (0.9 + 1 - 0.9) + 0.2 + (0.5 + 1 - 0.5)
    assert soft_iou_loss(p, y).item() == pytest.approx(1 - inter / union, abs=1e-5)
    mn, mx = 0.9 + 0.0 + 0.5 + 0.0, 1.0 + 0.2 + 1.0 + 0.0
    assert soft_iou_loss(p, y, kind="maxmin").item() == pytest.approx(1 - mn / mx, abs=1e-5)
    # void pixels are left out; an empty target with an empty prediction costs 0
    ignore = torch.tensor([[[False, True], [False, False]]])
    assert soft_iou_loss(p, y, ignore=ignore).item() == pytest.approx(1 - 1.4 / 2.0, abs=1e-5)
    assert soft_iou_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0, abs=1e-5)
    # invalid objects do not count
    p2, y2 = torch.cat([p, torch.ones_like(p)], 1), torch.cat([y, torch.zeros_like(y)], 1)
    assert soft_iou_loss(p2, y2, torch.tensor([[True, False]])).item() == pytest.approx(1 - inter / union, abs=1e-5)


def test_mask_encoder_adds_the_mask_conv_to_conv1():
    model = small_model().eval()
    enc, image, mask = model.encoder, torch.rand(2, 3, H, W), blocks(2, 1)[:, :1]
    with torch.no_grad():
        out = enc(image, mask)
        # by hand: conv1(normalised image) + conv1_p(mask) -> BN -> ReLU -> the rest of the tiny backbone
        bb, first = enc.backbone, enc.backbone.stem[0]
        h = F.relu(first[1](first[0](bb.normalize(image)) + F.conv2d(mask, enc.conv1_p.weight, stride=2, padding=3)))
        s4 = bb.stage4(bb.stem[1](h))
        torch.testing.assert_close(out["s4"], s4)
        torch.testing.assert_close(out["out"], bb.aspp(bb.context(bb.stage8(s4))))
        # with conv1_p zeroed the encoder is the plain backbone
        enc.conv1_p.weight.zero_()
        plain = bb.features(image)
        torch.testing.assert_close(enc(image, mask)["out"], plain["out"])
        torch.testing.assert_close(enc.objects(image, mask), plain["s4"])


def test_attention_guided_decoder_by_hand():
    model = small_model().eval()
    image, prev = torch.rand(1, 3, H, W), blocks(1, 2)
    with torch.no_grad():
        ref = model.reference(image, prev.max(1, keepdim=True).values)
        out = model(image, prev, ref)
        m3 = model.agnostic(image, prev.max(1, keepdim=True).values, ref)
        for k in range(2):
            mask = prev[:, k:k + 1]
            r2 = model.encoder(image, mask, upto="s4")["s4"]
            atn = model.attention(torch.cat([r2, F.interpolate(mask, size=r2.shape[-2:], mode="bilinear",
                                                               align_corners=False)], 1))
            logits = F.interpolate(model.predict(model.refine2(r2, m3 * atn)), size=(H, W), mode="bilinear",
                                   align_corners=False)
            torch.testing.assert_close(out["raw"][:, k], logits.softmax(1)[:, 1])


def test_one_pass_for_k_objects_equals_a_loop_and_is_permutation_equivariant():
    model = small_model().eval()
    image, prev = torch.rand(2, 3, H, W), blocks(2, 4, seed=3)  # two clips: objects must not mix across them
    with torch.no_grad():
        ref = model.reference(image, prev.max(1, keepdim=True).values)
        out = model(image, prev, ref)
        # the instance-agnostic part sees only the merged mask: one object at a time with the same merged
        # mask and reference gives each object's raw probability
        m3 = model.agnostic(image, prev.max(1, keepdim=True).values, ref)
        loop = []
        for k in range(4):
            r2, atn = model.specific(image, prev[:, k:k + 1])
            loop.append(model.decode(m3, atn, r2, 1, (H, W)))
        loop = torch.cat(loop, dim=1)
        torch.testing.assert_close(out["raw"], loop)
        perm = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(model(image, prev[:, perm], ref)["probs"], out["probs"][:, perm])


def test_per_object_baseline_runs_the_whole_network_once_per_object():
    model = small_model().eval()
    image, prev = torch.rand(1, 3, H, W), blocks(1, 3, seed=1)
    with torch.no_grad():
        refs = model.reference_per_object(image, prev)
        out = model(image, prev, refs, per_object=True)
        for k in range(3):
            single = model(image, prev[:, k:k + 1], refs[k])["raw"]
            torch.testing.assert_close(out["raw"][:, k:k + 1], single)
        # with one object the two are the same network
        one = model(image, prev[:, :1], model.reference(image, prev[:, :1]))
        torch.testing.assert_close(model(image, prev[:, :1], refs[:1], per_object=True)["probs"], one["probs"])


# ---------------------------------------------------------------------------- flow warping
def test_warp_previous_with_gt_flow_none_and_dis():
    mask = torch.zeros(1, 1, H, W)
    mask[..., 10:20, 10:20] = 1
    # backward flow of the current frame: each pixel came from 3 pixels to its left
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = -3
    warped, used = agss.warp_previous(mask, torch.zeros(1, 3, H, W), torch.zeros(1, 3, H, W), "gt", flow)
    assert torch.equal(used, flow)
    assert warped[0, 0, 15, 22].item() == pytest.approx(1.0) and warped[0, 0, 15, 11].item() == pytest.approx(0.0)
    same, zero = agss.warp_previous(mask, torch.zeros(1, 3, H, W), torch.zeros(1, 3, H, W), "none")
    assert torch.equal(same, mask) and not zero.any()
    with pytest.raises(ValueError, match="oracle"):
        agss.warp_previous(mask, torch.zeros(1, 3, H, W), torch.zeros(1, 3, H, W), "gt")
    # DIS recovers a 3-pixel shift of a textured image
    g = torch.Generator().manual_seed(0)
    prev_img = F.interpolate(torch.rand(1, 3, 16, 24, generator=g), size=(64, 96), mode="bilinear")
    cur_img = torch.roll(prev_img, shifts=3, dims=-1)
    est = agss.estimate_backward_flow(cur_img, prev_img)
    assert est[0, 0, 16:48, 16:80].median().item() == pytest.approx(-3, abs=0.5)


def _id_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean IoU over the objects of ``target`` (H, W) ids."""
    ids = [o for o in target.unique().tolist() if o not in (0, 255)]
    return float(np.mean([((pred == o) & (target == o)).sum().item() / max(((pred == o) | (target == o)).sum().item(), 1)
                          for o in ids]))


def test_sampler_gt_flow_carries_each_mask_onto_the_next_frame_through_scale_crop_and_flip():
    """The oracle's training input: the clip's backward flow, resized, cropped and mirrored with the
    frames, warps mask t-1 onto mask t (better than no warping, and better than a flow whose dx was
    not negated under the flip or whose direction is reversed)."""
    cfg = presets.get("agss", "smoke")
    videos = [seq for part in agss.scenario_splits(cfg, "train").values() for seq in part]
    data = agss.AGSSClips(videos, n_frames=3, size=(80, 96), augment=True, scale=(1.2, 1.2), flip_p=1.0,
                          length=12, seed=0, flow="backward")
    scores = {"unwarped": [], "flow": [], "dx not negated": [], "reversed": []}
    for i in range(len(data)):
        item = data[i]
        masks, flow = item["masks"], item["flow"]
        assert flow.shape == (3, 2, 80, 96)
        for t in range(1, 3):
            prev = masks[t - 1][None, None].float()
            unflipped = flow[t:t + 1].clone()
            unflipped[:, 0] *= -1
            for name, f in (("flow", flow[t:t + 1]), ("dx not negated", unflipped), ("reversed", -flow[t:t + 1])):
                scores[name].append(_id_iou(warp(prev, f, mode="nearest")[0, 0].long(), masks[t]))
            scores["unwarped"].append(_id_iou(masks[t - 1], masks[t]))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["flow"] > mean["unwarped"] + 0.03, mean
    assert mean["flow"] > max(mean["dx not negated"], mean["reversed"]) + 0.05, mean


class _CopyPrevious(torch.nn.Module):
    """A network that outputs its (warped) previous masks: its accuracy is the flow's."""

    def __init__(self, cfg: AGSSConfig):
        super().__init__()
        self.cfg, self.dummy = cfg, torch.nn.Parameter(torch.zeros(()))

    def reference(self, image, merged):
        return None

    def forward(self, image, prev, ref, valid=None, return_maps=False, per_object=False):
        return {"probs": (prev > 0.5).float()}


@pytest.mark.parametrize("inference_size", [None, (48, 80)])
def test_inference_with_gt_flow_tracks_the_objects_at_any_inference_size(inference_size):
    """predict_video(flow="gt") with a network that copies its warped input: the stored backward flow,
    scaled to the inference size, carries the first mask along the video better than no warping."""
    cfg = presets.get("agss", "smoke")
    seq = agss.scenario_splits(cfg, "val")["many_objects"][0]
    gt_flow = np.stack([seq.flow(i, "backward") for i in range(len(seq))])
    truth = torch.from_numpy(seq.masks().astype(np.int64))
    score = {}
    for how in ("gt", "none"):
        opts = AGSSConfig(flow=how, inference_size=inference_size)
        out = agss.predict_video(_CopyPrevious(opts), seq.frames(), agss.given_masks(seq), opts,
                                 gt_flow=gt_flow if how == "gt" else None)
        score[how] = np.mean([_id_iou(torch.from_numpy(out["masks"][t]).long(), truth[t]) for t in range(1, len(seq))])
    assert score["gt"] > score["none"] + 0.05, score


# ---------------------------------------------------------------------------- training
def test_training_step_feeds_back_the_ground_truth_below_the_threshold():
    batch = clip_batch(T=4)
    always = agss.training_step(small_model(fallback_iou=1.01), batch, {})
    never = agss.training_step(small_model(fallback_iou=0.0), batch, {})
    assert always["fallback"].item() == 1.0 and never["fallback"].item() == 0.0
    assert set(always) == {"loss", "iou", "fallback"} and always["loss"].ndim == 0


def test_overfits_a_tiny_batch():
    model = small_model(decoder_dim=16, backbone_kwargs={"width": 8})
    batch = clip_batch(T=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        out = agss.training_step(model, batch, {})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert out["loss"].item() < 0.35 < first


def test_training_items_are_clips_renumbered_to_the_first_frame():
    cfg = presets.get("agss", "smoke")
    data = agss.train_dataset(cfg)
    item = data[0]
    T = cfg["train"]["clip_len"]
    assert item["frames"].shape == (T, 3, *cfg["train"]["size"]) and item["masks"].shape == (T, *cfg["train"]["size"])
    k = int(item["n_objects"])
    assert k >= 1 and set(torch.unique(item["masks"][0]).tolist()) - {255} == set(range(k + 1))
    assert int(item["masks"][item["masks"] != 255].max()) <= k
    masks, k2 = agss.remap_to_first(torch.tensor([[[0, 7], [3, 255]], [[9, 7], [3, 3]]]))
    assert k2 == 2 and masks.tolist() == [[[0, 2], [1, 255]], [[0, 2], [1, 1]]]


def test_head_parameters_get_the_learning_rate_multiplier():
    model = small_model(head_lr_mult=10.0)
    opt, _ = agss.configure_optimizer(model, {"train": {"lr": 1e-3, "steps": 10}})
    head = {id(p) for n, p in model.named_parameters() if n.startswith(("attention.", "predict.", "refine2."))}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= head and group["lr"] == pytest.approx(1e-2) or not ids & head and group["lr"] == pytest.approx(1e-3)


# ---------------------------------------------------------------------------- inference
def test_online_inference_with_a_late_entrant():
    model = small_model().eval()
    T = 5
    frames = (np.random.default_rng(0).random((T, H, W, 3)) * 255).astype(np.uint8)
    first = np.zeros((H, W), np.uint8)
    first[4:14, 4:14] = 1
    late = np.zeros((H, W), np.uint8)
    late[18:28, 30:40] = 2
    out = agss.predict_video(model, frames, {0: first, 3: late}, return_maps=True)
    masks = out["masks"]
    assert masks.shape == (T, H, W) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], first)
    assert not (masks[1:3] == 2).any()  # object 2 is not tracked before its mask is given
    assert (masks[3][late == 2] == 2).all()  # its given mask is kept at frame 3
    assert out["probs"].shape == out["warped"].shape == (T, 2, H, W)
    assert out["agnostic"].shape == (T, H // 8, W // 8) and out["attention"].shape == (T, 2, H // 8, W // 8)
    assert out["guided"].shape == (T, 2, H // 8, W // 8) and (out["guided"] >= 0).all()
    single = agss.predict_video(model, frames, {0: first, 3: late}, per_object=True)
    assert single["masks"].shape == (T, H, W)


def test_predict_sequence_on_a_synthetic_video():
    cfg = presets.get("agss", "smoke")
    seq = zoo.get("agss").dataset(cfg, "val")[0]
    model = build_model(cfg).eval()
    for flow in ("dis", "gt"):
        with torch.inference_mode():
            masks = agss.predict_sequence(model, seq, {"eval": {"flow": flow}})
        assert masks.shape == (len(seq), *seq.size) and masks.dtype == np.uint8
        np.testing.assert_array_equal(masks[0], np.where(seq.mask(0) == 255, 0, seq.mask(0)))
        assert masks.max() <= max(seq.object_ids)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_model().eval()
    clone = checkpoint_round_trip(model, build_model, tmp_path)
    image, prev = torch.rand(1, 3, H, W), blocks(1, 2)
    with torch.no_grad():
        a = model(image, prev, model.reference(image, prev.max(1, keepdim=True).values))["probs"]
        c = clone(image, prev, clone.reference(image, prev.max(1, keepdim=True).values))["probs"]
    assert torch.equal(a, c)


# ---------------------------------------------------------------------------- presets, options, CLI
def test_presets_are_complete_and_build():
    assert set(agss.PRESETS) == {"smoke", "cpu", "gpu", "real"}
    for name, cfg in agss.PRESETS.items():
        assert {"data", "model", "train", "eval"} <= set(cfg), name
        AGSSConfig(**cfg["model"])
    cpu = agss.PRESETS["cpu"]
    assert set(cpu["train"]["scenarios"]) == set(agss.AGSS_SCENARIOS)
    assert cpu["data"]["val"]["n_videos"] >= 48 and len(cpu["train"]["ablation_seeds"]) >= 3
    smoke = agss.scenario_splits(presets.get("agss", "smoke"), "val")  # the val videos divided over the scenarios
    assert set(smoke) == set(agss.AGSS_SCENARIOS) and all(len(part) >= 1 for part in smoke.values())
    assert zoo.get("agss").task == "semi"


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="unknown AGSSConfig"):
        build_model({"model": {"flwo": "dis"}})
    with pytest.raises(ValueError, match="flow"):
        AGSSConfig(flow="flownet2")
    with pytest.raises(ValueError, match="both be False"):
        AGSSConfig(use_agnostic=False, use_attention=False)
    with pytest.raises(ValueError, match="first frame"):
        agss.predict_video(small_model().eval(), np.zeros((2, H, W, 3), np.uint8), {1: np.zeros((H, W), np.uint8)})


def test_cli_trains_and_evaluates_the_smoke_preset(tmp_path, capsys):
    weights = tmp_path / "agss.pt"
    assert cli.main(["train", "agss", "--preset", "smoke", "--steps", "2", "--out", str(weights)]) == 0
    assert weights.is_file()
    assert cli.main(["evaluate", "agss", "--preset", "smoke", "--ckpt", str(weights)]) == 0
    assert "J&F-Mean" in capsys.readouterr().out
