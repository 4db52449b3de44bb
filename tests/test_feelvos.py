"""FEELVOS: shapes, matching against brute-force loops, the distance and the loss by hand, training,
online inference (late entrants), save/load, presets and the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voslab import cli, presets, zoo
from voslab.models import feelvos
from voslab.models.feelvos import FEELVOS, NEG, FEELVOSConfig, build_model
from roundtrip import checkpoint_round_trip

SMALL = dict(backbone="tiny", backbone_kwargs={"width": 8}, feature_dim=8, embed_dim=4, head_layers=1, head_kernel=3,
             head_dim=8, window=2, hard_mining_steps=0)
H, W = 24, 32  # stride-4 grid 6 x 8


def small_model(seed: int = 0, **overrides) -> FEELVOS:
    torch.manual_seed(seed)
    return build_model({"model": {**SMALL, **overrides}})


def sample(batch: int = 2, k: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    frames = {n: torch.rand(batch, 3, H, W, generator=g) for n in ("ref", "prev", "cur")}
    masks = {}
    for n in ("ref_mask", "prev_mask", "cur_mask"):
        m = torch.zeros(batch, H, W, dtype=torch.long)
        for obj in range(1, k):  # a block per object, moved a little between frames
            y, x = int(torch.randint(0, H - 8, (1,), generator=g)), int(torch.randint(0, W - 8, (1,), generator=g))
            m[:, y:y + 8, x:x + 8] = obj
        masks[n] = m
    return {**frames, **masks, "n_objects": torch.full((batch,), k)}


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("inputs", [(True, True, True), (True, False, True), (False, True, True), (True, True, False)])
def test_shapes_for_every_input_set(inputs):
    use_global, use_local, use_prev = inputs
    model = small_model(use_global=use_global, use_local=use_local, use_prev=use_prev)
    b = sample()
    out = model(b["ref"], b["ref_mask"], b["prev"], b["prev_mask"], b["cur"], n_objects=3, return_maps=True)
    assert out["logits"].shape == (2, 3, H, W)
    assert out["global"].shape == out["local"].shape == (2, 3, H // 4, W // 4)
    assert out["embeddings"].shape == (2, 4, H // 4, W // 4)
    assert model.head[0][0].in_channels == 8 + sum(inputs)  # features + the configured maps


def test_gradients_reach_every_parameter():
    model = small_model()
    out = feelvos.training_step(model, sample(), {})
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_weights_saved_with_the_old_decoder_names_still_load():
    """Before nn.modules.SkipDecoder, the decoder's convolutions were ``skip_proj.*`` and ``decoder.*``."""
    model = small_model(seed=1)
    renamed = {}
    for key, value in model.state_dict().items():
        key = key.replace("decoder.skip_proj.", "skip_proj.").replace("decoder.fuse.", "decoder.")
        renamed[key] = value
    assert any(k.startswith("skip_proj.") for k in renamed) and any(k.startswith("decoder.0.") for k in renamed)
    fresh = small_model(seed=2)
    fresh.load_state_dict(renamed)  # strict
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


# ---------------------------------------------------------------------------- distance and matching
def test_distance_formula_by_hand():
    e_p, e_q = torch.tensor([0.3, -1.0, 0.5]), torch.tensor([0.1, 0.2, -0.4])
    d2 = sum((a - b) ** 2 for a, b in zip(e_p.tolist(), e_q.tolist()))
    assert feelvos.distance(e_p, e_q).item() == pytest.approx(1 - 2 / (1 + math.exp(d2)), abs=1e-6)
    assert feelvos.distance(e_p, e_p).item() == 0.0
    assert feelvos.distance(torch.zeros(3), torch.full((3,), 30.0)).item() == pytest.approx(1.0)  # no overflow


def _brute_global(emb, ref_emb, ref_labels, k):
    B, C, h, w = emb.shape
    out = torch.ones(B, k, h, w)
    for b in range(B):
        for y in range(h):
            for x in range(w):
                for obj in range(k):
                    best = None
                    for yy in range(h):
                        for xx in range(w):
                            if int(ref_labels[b, yy, xx]) == obj:
                                d = float(feelvos.distance(emb[b, :, y, x], ref_emb[b, :, yy, xx]))
                                best = d if best is None else min(best, d)
                    out[b, obj, y, x] = 1.0 if best is None else best
    return out


def _brute_local(emb, prev_emb, prev_labels, k, window):
    B, C, h, w = emb.shape
    out = torch.ones(B, k, h, w)
    for b in range(B):
        for y in range(h):
            for x in range(w):
                for dy in range(-window, window + 1):
                    for dx in range(-window, window + 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and int(prev_labels[b, yy, xx]) < k:
                            obj = int(prev_labels[b, yy, xx])
                            d = float(feelvos.distance(emb[b, :, y, x], prev_emb[b, :, yy, xx]))
                            out[b, obj, y, x] = min(float(out[b, obj, y, x]), d)
    return out


def _maps(seed=0):
    g = torch.Generator().manual_seed(seed)
    emb, other = torch.randn(2, 4, 5, 6, generator=g) * 0.7, torch.randn(2, 4, 5, 6, generator=g) * 0.7
    labels = torch.randint(0, 3, (2, 5, 6), generator=g)
    labels[1][labels[1] == 2] = 1  # object 2 absent from the second sample: distance 1 everywhere
    labels[0, 0, 0] = 255  # void never matches
    return emb, other, labels


def test_global_matching_against_brute_force_loops():
    emb, ref_emb, labels = _maps()
    model = small_model().eval()
    expected = _brute_global(emb, ref_emb, labels, 4)
    torch.testing.assert_close(model.global_map(emb, ref_emb, labels, 4), expected, atol=1e-5, rtol=0)
    assert (expected[:, 3] == 1).all() and (expected[1, 2] == 1).all()


def test_global_matching_caps_reference_pixels_only_while_training():
    emb, ref_emb, labels = _maps()
    model = small_model(max_ref_per_object=2).eval()
    full = model.global_map(emb, ref_emb, labels, 3)
    model.train()
    capped = model.global_map(emb, ref_emb, labels, 3, generator=torch.Generator().manual_seed(0))
    assert (capped >= full - 1e-6).all() and not torch.allclose(capped, full)  # a min over a subset
    model.cfg.max_ref_per_object = 1000  # a cap above every object's count changes nothing
    torch.testing.assert_close(model.global_map(emb, ref_emb, labels, 3), full)


@pytest.mark.parametrize("window", [0, 1, 2])
def test_local_matching_against_brute_force_loops(window):
    emb, prev_emb, labels = _maps(1)
    model = small_model().eval()
    expected = _brute_local(emb, prev_emb, labels, 3, window)
    torch.testing.assert_close(model.local_map(emb, prev_emb, labels, 3, window), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- dynamic head
def test_head_is_shared_across_objects_and_masks_absent_ones():
    model = small_model().eval()
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 8, 6, 8, generator=g)
    maps = [torch.rand(1, 3, 6, 8, generator=g) for _ in range(3)]
    logits = model.head_logits(features, maps)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model.head_logits(features, [m[:, perm] for m in maps]), logits[:, perm])
    alone = model.head_logits(features, [m[:, 1:2] for m in maps])  # one object alone: the same logit
    torch.testing.assert_close(alone[:, 0], logits[:, 1])
    masked = model.head_logits(features, maps, torch.tensor([[True, True, False]]))
    assert (masked[:, 2] == NEG).all() and torch.equal(masked[:, :2], logits[:, :2])


# ---------------------------------------------------------------------------- loss
def test_bootstrapped_cross_entropy_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :3] = 255
    per_pixel = []
    for b in range(2):
        for y in range(4):
            for x in range(5):
                t = int(target[b, y, x])
                if t != 255:
                    z = logits[b, :, y, x].tolist()
                    per_pixel.append(math.log(sum(math.exp(v) for v in z)) - z[t])
    per_pixel.sort(reverse=True)
    for fraction in (1.0, 0.15, 0.5):
        k = math.ceil(fraction * len(per_pixel))
        expected = sum(per_pixel[:k]) / k
        assert feelvos.bootstrapped_cross_entropy(logits, target, fraction).item() == pytest.approx(expected, rel=1e-5)


def test_hard_pixel_fraction_is_phased_in_linearly():
    assert feelvos.hard_pixel_fraction(0, 0.15, 100) == 1.0
    assert feelvos.hard_pixel_fraction(50, 0.15, 100) == pytest.approx(0.575)
    assert feelvos.hard_pixel_fraction(100, 0.15, 100) == pytest.approx(0.15)
    assert feelvos.hard_pixel_fraction(10 ** 6, 0.15, 100) == pytest.approx(0.15)
    model = small_model(hard_mining_steps=4)
    fractions = [float(feelvos.training_step(model, sample(), {})["top_k"]) for _ in range(6)]
    assert fractions == pytest.approx([1.0, 0.7875, 0.575, 0.3625, 0.15, 0.15])
    with torch.no_grad():  # validation does not advance the phase
        feelvos.training_step(model, sample(), {})
    assert int(model.train_steps) == 6


def test_remap_to_reference_keeps_the_reference_objects_only():
    ref = torch.tensor([[0, 3, 3], [7, 7, 255]])
    cur = torch.tensor([[5, 3, 0], [7, 255, 3]])
    ref2, cur2, k = feelvos.remap_to_reference(ref, cur)
    assert k == 3
    assert ref2.tolist() == [[0, 1, 1], [2, 2, 255]]
    assert cur2.tolist() == [[0, 1, 0], [2, 255, 1]]  # id 5 is not in the reference: background


# ---------------------------------------------------------------------------- training
def test_overfits_a_tiny_batch():
    model = small_model(seed=1, feature_dim=16, head_dim=16)
    batch = sample(batch=2, k=3, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        out = feelvos.training_step(model, batch, {})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert float(out["loss"]) < 0.2 * first and float(out["acc"]) > 0.95


def test_training_items_are_remapped_triplets():
    cfg = presets.get("feelvos", "smoke")
    data = feelvos.train_dataset(cfg)
    item = data[0]
    assert item["ref"].shape == item["cur"].shape == (3, 64, 112)
    k = int(item["n_objects"])
    ids = set(item["ref_mask"].unique().tolist()) - {255}
    assert ids == set(range(k)) and set(item["cur_mask"].unique().tolist()) - {255} <= ids
    assert int(item["index"][2]) == int(item["index"][1]) + 1


# ---------------------------------------------------------------------------- inference
def test_online_inference_with_a_late_entrant():
    model = small_model().eval()
    g = np.random.default_rng(0)
    frames = g.integers(0, 255, (5, H, W, 3), dtype=np.uint8)
    first = np.zeros((H, W), np.uint8)
    first[2:10, 2:10] = 1
    late = np.zeros((H, W), np.uint8)
    late[12:20, 20:28] = 2
    out = feelvos.predict_video(model, frames, {0: first, 3: late}, return_maps=True)
    masks = out["masks"]
    assert masks.shape == (5, H, W) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], first)
    assert not (masks[:3] == 2).any()  # object 2 cannot be predicted before it is given
    assert (masks[3][late == 2] == 2).all()  # its given mask overrides the prediction
    assert out["probs"].shape == (5, 3, H // 4, W // 4)
    torch.testing.assert_close(out["probs"][1:].sum(1), torch.ones(4, H // 4, W // 4))
    assert out["global"].shape == out["local"].shape == (5, 3, H // 4, W // 4)
    # a head that always says "background": only the given mask can put object 2 into frame 3
    background = lambda features, maps, valid=None: torch.tensor([10.0, -10.0, -10.0]).view(1, 3, 1, 1).expand(  # noqa: E731
        1, 3, *features.shape[-2:])
    model.head_logits = background
    masks = feelvos.predict_video(model, frames, {0: first, 3: late})["masks"]
    assert not masks[1:3].any() and not masks[4].any()
    np.testing.assert_array_equal(masks[3], late)


def test_predict_sequence_on_a_synthetic_video():
    cfg = presets.get("feelvos", "smoke")
    seq = zoo.get("feelvos").dataset(cfg, "val")[0]
    model = build_model(cfg).eval()
    with torch.inference_mode():
        masks = feelvos.predict_sequence(model, seq, cfg)
    assert masks.shape == (len(seq), *seq.size) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], np.where(seq.mask(0) == 255, 0, seq.mask(0)))
    assert masks.max() <= max(seq.object_ids)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_model().eval()
    clone = checkpoint_round_trip(model, build_model, tmp_path)
    b = sample()
    with torch.no_grad():
        a = model(b["ref"], b["ref_mask"], b["prev"], b["prev_mask"], b["cur"])["logits"]
        c = clone(b["ref"], b["ref_mask"], b["prev"], b["prev_mask"], b["cur"])["logits"]
    assert torch.equal(a, c)


# ---------------------------------------------------------------------------- presets, options, CLI
def test_presets_are_complete_and_build():
    assert set(feelvos.PRESETS) == {"smoke", "cpu", "gpu", "real"}
    for name, cfg in feelvos.PRESETS.items():
        assert {"data", "model", "train", "eval"} <= set(cfg), name
        FEELVOSConfig(**cfg["model"])
    cpu = feelvos.PRESETS["cpu"]
    assert sum(len(s) for s in feelvos.scenario_splits(cpu, "val").values()) >= 48
    assert set(feelvos.scenario_splits(cpu, "val")) == set(feelvos.FEELVOS_SCENARIOS)


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="unknown FEELVOSConfig"):
        build_model({"model": {"windw": 3}})
    with pytest.raises(ValueError, match="window"):
        FEELVOSConfig(window=-1)
    with pytest.raises(ValueError, match="first frame"):
        feelvos.predict_video(small_model().eval(), np.zeros((2, H, W, 3), np.uint8), {1: np.zeros((H, W), np.uint8)})


def test_cli_trains_and_evaluates_the_smoke_preset(tmp_path, capsys):
    weights = tmp_path / "feelvos.pt"
    assert cli.main(["train", "feelvos", "--preset", "smoke", "--steps", "3", "--out", str(weights)]) == 0
    assert weights.is_file()
    assert cli.main(["evaluate", "feelvos", "--preset", "smoke", "--ckpt", str(weights)]) == 0
    assert "J&F-Mean" in capsys.readouterr().out
