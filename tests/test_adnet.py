"""AD-Net: shapes, branches against brute-force references, variants, training, inference protocol."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from voslab.flow import video_flow
from voslab.models import adnet
from voslab import inference, zoo
from voslab.models.adnet import VARIANT_BRANCHES, ADNet, ADNetConfig, binarize, build_model
from roundtrip import checkpoint_round_trip

SMALL = dict(backbone="tiny", embed_dim=16, backbone_kwargs={"width": 8})
H, W = 40, 56  # embedding grid 5 x 7 at output stride 8


def small_model(seed: int = 0, **overrides) -> ADNet:
    torch.manual_seed(seed)
    return build_model({"model": {**SMALL, **overrides}})


def pair(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, H, W, generator=g), torch.rand(batch, 3, H, W, generator=g)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("variant", list(VARIANT_BRANCHES))
def test_shapes_for_every_variant(variant):
    model = small_model(variant=variant)
    out = model(*pair(), return_maps=True)
    n = math.ceil(H / 8) * math.ceil(W / 8)
    assert out["logits"].shape == (2, 1, H, W)
    assert out["anchor_emb"].shape == out["frame_emb"].shape == (2, 16, n // 7, 7)
    assert ("transition" in out) == ("anchor_diffusion" in VARIANT_BRANCHES[variant])
    assert ("intra" in out) == ("intra" in VARIANT_BRANCHES[variant])
    for key in ("transition", "intra"):
        if key in out:
            assert out[key].shape == (2, n, n)
    assert set(model(*pair())) == {"logits"}


@pytest.mark.parametrize("variant", list(VARIANT_BRANCHES))
def test_gradients_reach_every_parameter(variant):
    model = small_model(variant=variant, dropout=0.0)
    anchor, frame = pair()
    mask = (torch.rand(2, 1, H, W) > 0.5).float()
    loss = adnet.training_step(model, {"anchor": anchor, "frame": frame, "mask": mask})["loss"]
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# ---------------------------------------------------------------------------- branches
def _embeddings(seed: int = 0, batch: int = 2, c: int = 6, h: int = 3, w: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c, h, w, generator=g, dtype=torch.float64), \
        torch.randn(batch, c, h, w, generator=g, dtype=torch.float64)


def _brute_force_diffusion(query_map: torch.Tensor, source_map: torch.Tensor, value_map: torch.Tensor):
    """out[:, :, j] = sum_i softmax_i(<q_j, s_i> / sqrt(C)) v_i, one position j at a time."""
    b, c = query_map.shape[:2]
    q, s, v = (m.flatten(2) for m in (query_map, source_map, value_map))  # (B, C, N)
    out = torch.zeros_like(q)
    rows = torch.zeros(b, q.shape[2], s.shape[2], dtype=q.dtype)
    for n in range(b):
        for j in range(q.shape[2]):
            scores = torch.tensor([float(q[n, :, j] @ s[n, :, i]) / math.sqrt(c) for i in range(s.shape[2])],
                                  dtype=q.dtype)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            rows[n, j] = weights
            out[n, :, j] = sum(weights[i] * v[n, :, i] for i in range(s.shape[2]))
    return out.view_as(query_map), rows


def test_anchor_diffusion_matches_brute_force_loop_current_layout():
    model = small_model(variant="inter", diffusion_layout="current").double()
    x0, xt = _embeddings()
    out, transition = model.anchor_diffusion(x0, xt)
    # for each CURRENT position j: a softmax over anchor positions mixes the anchor embeddings
    expected, rows = _brute_force_diffusion(xt, x0, x0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(transition, rows)


def test_anchor_diffusion_matches_brute_force_loop_paper_layout():
    model = small_model(variant="inter").double()  # the default: the paper's Figure 2 and nets.py
    x0, xt = _embeddings()
    out, transition = model.anchor_diffusion(x0, xt)
    # official code: for each ANCHOR position i, a softmax over current positions mixes X_t
    expected, rows = _brute_force_diffusion(x0, xt, xt)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(transition, rows)
    current, _ = small_model(variant="inter", diffusion_layout="current").double().anchor_diffusion(x0, xt)
    assert not torch.allclose(out, current)  # the two layouts really differ


def test_anchor_layout_output_lies_on_the_anchor_grid():
    model = small_model(variant="inter").double()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 16, 4, 6, generator=g, dtype=torch.float64)  # anchor grid 4 x 6
    xt = torch.randn(1, 16, 5, 7, generator=g, dtype=torch.float64)  # current grid 5 x 7
    out, transition = model.anchor_diffusion(x0, xt)
    assert out.shape == x0.shape and transition.shape == (1, 24, 35)
    expected, _ = _brute_force_diffusion(x0, xt, xt)
    torch.testing.assert_close(out, expected)
    current, transition = small_model(variant="inter", diffusion_layout="current").double().anchor_diffusion(x0, xt)
    assert current.shape == xt.shape and transition.shape == (1, 35, 24)


def test_transition_rows_are_distributions():
    out = small_model(variant="full")(*pair(), return_maps=True)
    for key in ("transition", "intra"):
        p = out[key]
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:2]))


def test_intra_branch_is_non_local_with_itself():
    model = small_model(variant="intra").double()
    _, xt = _embeddings(seed=3)
    out, attention = model.intra_frame(xt)
    expected, rows = _brute_force_diffusion(xt, xt, xt)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(attention, rows)
    # and it is the anchor-diffusion computation with the current frame as its own anchor
    self_anchored, _ = small_model(variant="inter").double().anchor_diffusion(xt, xt)
    torch.testing.assert_close(out, self_anchored)


# ---------------------------------------------------------------------------- variants
def _head_input(model: ADNet, anchor, frame) -> torch.Tensor:
    captured = {}
    hook = model.head_layers.register_forward_hook(lambda mod, args, out: captured.setdefault("x", args[0]))
    model(anchor, frame)
    hook.remove()
    return captured["x"]


@pytest.mark.parametrize("variant", list(VARIANT_BRANCHES))
def test_variants_differ_only_in_the_documented_branches(variant):
    full, model = small_model(seed=0, variant="full"), small_model(seed=0, variant=variant)
    # same parameter names and shapes, except the first head conv: input width (#branches) x C;
    # backbone and embedding are built first, so one seed gives them identical values
    full_state, state = full.state_dict(), model.state_dict()
    assert set(full_state) == set(state)
    for key, value in state.items():
        if key == "head_layers.0.weight":
            assert value.shape == (16, 16 * len(VARIANT_BRANCHES[variant]), 1, 1)
        elif key.startswith("head_layers."):
            assert value.shape == full_state[key].shape
        else:
            torch.testing.assert_close(value, full_state[key])
    # the head sees exactly the documented concatenation
    model.eval()
    anchor, frame = pair()
    with torch.no_grad():
        x0, xt = model.embed(anchor), model.embed(frame)
        parts = {"skip": xt, "anchor": x0, "intra": model.intra_frame(xt)[0],
                 "anchor_diffusion": model.anchor_diffusion(x0, xt)[0]}
        expected = torch.cat([parts[name] for name in VARIANT_BRANCHES[variant]], dim=1)
        torch.testing.assert_close(_head_input(model, anchor, frame), expected)


def test_base_variant_ignores_the_anchor():
    # training mode (batch statistics): at initialisation, eval-mode features barely depend on the input
    anchor, frame = pair()
    other = torch.zeros_like(anchor)
    base, full = small_model(variant="base", dropout=0.0), small_model(variant="full", dropout=0.0)
    with torch.no_grad():
        torch.testing.assert_close(base(anchor, frame)["logits"], base(other, frame)["logits"])
        diff = full(anchor, frame)["logits"] - full(other, frame)["logits"]
    assert diff.abs().max() > 1e-3


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="variant"):
        ADNetConfig(variant="ad")
    with pytest.raises(ValueError, match="threshold_on"):
        ADNetConfig(threshold_on="sigmoid")
    with pytest.raises(ValueError, match="decoder"):
        ADNetConfig(decoder="s8")
    with pytest.raises(ValueError, match="unknown ADNetConfig option"):
        build_model({"model": {"embed": 8}})
    with pytest.raises(ValueError, match="unknown inference option.*treshold"):
        adnet.predict_sequence(small_model().eval(), ArraySequence(_toy_video()), {"eval": {"treshold": 0.3}})


# ---------------------------------------------------------------------------- training
def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = small_model(dropout=0.0)
    anchor, frame = pair(batch=2, seed=1)
    mask = torch.zeros(2, 1, H, W)
    mask[:, :, 10:30, 15:40] = 1
    batch = {"anchor": anchor, "frame": frame, "mask": mask}
    cfg = {"train": {"optimizer": "adam", "lr": 1e-2, "steps": 60}}
    optimizer, scheduler = zoo.get("adnet").configure_optimizer(model, cfg)
    losses = []
    for _ in range(60):
        out = adnet.training_step(model, batch, cfg)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.2 * losses[0], losses
    assert out["iou"] > 0.8


def test_configure_optimizer_sgd_with_poly_decay():
    model = small_model()
    optimizer, scheduler = zoo.get("adnet").configure_optimizer(
        model, {"train": {"optimizer": "sgd", "lr": 0.1, "steps": 10, "momentum": 0.9, "poly_power": 1.0}})
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_model(variant="full").eval()
    clone = checkpoint_round_trip(model, build_model, tmp_path)
    anchor, frame = pair()
    with torch.no_grad():
        torch.testing.assert_close(clone(anchor, frame)["logits"], model(anchor, frame)["logits"], rtol=0, atol=0)


# ---------------------------------------------------------------------------- inference
def test_binarize_threshold_options():
    logits = torch.tensor([-1.0, 0.1, 0.3, 0.6])
    # paper: sigmoid(l) > 0.5  <=>  l > 0
    assert binarize(logits, "probability", 0.5).tolist() == [False, True, True, True]
    # official eval.py: raw logit > 0.5 (= sigmoid > 0.62)
    assert binarize(logits, "logit", 0.5).tolist() == [False, False, False, True]
    assert binarize(logits, "probability", 0.6).tolist() == [False, False, False, True]  # logit(0.6)=0.405


class ArraySequence:
    """The slice of ``voslab.data.sequence.Sequence`` that predict_sequence reads."""

    def __init__(self, frames: np.ndarray, flows: np.ndarray | None = None):
        self._frames, self._flows = frames, flows
        self.name, self.size = "toy", frames.shape[1:3]
        self.has_flow = flows is not None

    def __len__(self):
        return len(self._frames)

    def frames(self):
        return self._frames

    def frame(self, i):
        return self._frames[i]

    def flow(self, i, direction="forward"):
        return self._flows[i]


def _toy_video(t: int = 5, h: int = 45, w: int = 70) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def test_predict_logits_embeds_the_anchor_once_and_matches_forward():
    model = small_model(variant="full").eval()
    frames = _toy_video(t=5, h=40, w=56)
    cfg = dataclasses.replace(model.cfg, batch_frames=2)
    logits = adnet.predict_logits(model, frames, cfg)  # (T, 1, H, W)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model(video[:1].expand(5, -1, -1, -1), video)["logits"]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_mirror_and_scales_average_logits():
    model = small_model(variant="full").eval()
    frames = _toy_video(t=3, h=40, w=56)
    plain = adnet.predict_logits(model, frames, model.cfg)
    flipped = adnet.predict_logits(model, frames[:, :, ::-1].copy(), model.cfg).flip(-1)
    mirrored = adnet.predict_logits(model, frames, dataclasses.replace(model.cfg, mirror=True))
    torch.testing.assert_close(mirrored, (plain + flipped) / 2, rtol=1e-4, atol=1e-5)
    multi = adnet.predict_logits(model, frames, dataclasses.replace(model.cfg, scales=(0.75, 1.0, 1.5), mirror=True))
    assert multi.shape == plain.shape and not torch.allclose(multi, mirrored)


def _constant_logit_model(value: float) -> ADNet:
    model = small_model().eval()
    final = model.head_layers[-1]
    torch.nn.init.zeros_(final.weight)
    torch.nn.init.constant_(final.bias, value)
    return model


def test_predict_sequence_threshold_options():
    seq = ArraySequence(_toy_video())
    model = _constant_logit_model(0.3)  # sigmoid(0.3) = 0.57: foreground for the paper, not for the code
    assert adnet.predict_sequence(model, seq, {"eval": {"threshold_on": "probability"}}).min() == 1
    assert adnet.predict_sequence(model, seq, {"eval": {"threshold_on": "logit"}}).max() == 0


def test_predict_sequence_is_the_thresholded_logits_at_the_video_size():
    seq = ArraySequence(_toy_video(t=4, h=45, w=70), flows=np.zeros((4, 45, 70, 2), np.float32))
    model = small_model(variant="full").eval()
    plain = adnet.predict_sequence(model, seq, None)
    logits = adnet.predict_logits(model, seq.frames(), model.cfg)[:, 0]  # (T, H, W)
    np.testing.assert_array_equal(plain, binarize(logits).numpy().astype(np.uint8))
    everything = {"eval": {"scales": (0.75, 1.0), "mirror": True, "prev_mask_dilation": True,
                           "instance_pruning": True, "inference_size": (40, 64), "batch_frames": 3}}
    masks = adnet.predict_sequence(model, seq, everything)
    assert masks.shape == (4, 45, 70) and masks.dtype == np.uint8


def test_inference_predict_restores_training_mode():
    model = small_model(variant="full").train()
    seq = ArraySequence(_toy_video(t=3, h=40, w=56))
    seq.size = (40, 56)
    masks = inference.predict(model, seq, adnet.predict_sequence)
    assert masks.shape == (3, 40, 56) and model.training


def test_predict_sequence_on_a_synthetic_video(tmp_path):
    from voslab.data import synthetic
    from voslab.data.davis import DAVIS

    root = synthetic.generate(tmp_path / "syn", split="val", n_videos=1, n_frames=4, size=(48, 80), seed=0)
    seq = DAVIS(root, "val", year=2016, annotations="Annotations_binary")[0]
    model = small_model().eval()
    pruned = adnet.predict_sequence(model, seq, {"eval": {"instance_pruning": True}})
    plain = adnet.predict_sequence(model, seq, None)
    assert pruned.shape == plain.shape == (4, 48, 80) and pruned.dtype == np.uint8
    assert (pruned <= plain).all()  # pruning only removes pixels


def test_presets_are_complete():
    for name, preset in adnet.PRESETS.items():
        assert set(preset) == {"data", "model", "train", "eval"}, name
        assert set(preset["data"]) == {"train", "val"}
        ADNetConfig(**preset["model"])
        fields = {f.name for f in dataclasses.fields(ADNetConfig)}
        assert set(preset["eval"]) - fields <= {"split"}, name
    assert adnet.TASK == "unsupervised"


def _two_squares(t: int = 4, h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A large square moving right 3 px/frame and a small one that never moves, as frames
    (textured, so flow sees the motion) and as the foreground both should get."""
    rng = np.random.default_rng(1)
    background = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)  # textured, so the flow there is 0
    frames = np.repeat(background[None], t, axis=0)
    fg = np.zeros((t, h, w), np.uint8)
    big = rng.integers(150, 255, (16, 16, 3), dtype=np.uint8)
    small = rng.integers(0, 60, (6, 6, 3), dtype=np.uint8)
    for k in range(t):
        x = 4 + 3 * k
        frames[k, 12:28, x:x + 16], fg[k, 12:28, x:x + 16] = big, 1
        frames[k, 30:36, 46:52], fg[k, 30:36, 46:52] = small, 1
    return frames, fg


def test_instance_pruning_removes_the_small_static_instance(monkeypatch):
    frames, fg = _two_squares()
    seq = ArraySequence(frames)  # no Flow/ folder: the flow is estimated from the frames
    flows = video_flow(seq, "forward", method="auto", cache=False)
    assert flows.shape == (4, 40, 56, 2) and flows.dtype == np.float32 and np.abs(flows[:2]).max() > 0
    logits = torch.from_numpy(fg).float()[:, None] * 8 - 4  # (T, 1, H, W): +4 on both squares
    monkeypatch.setattr(adnet, "predict_logits", lambda model, frames, cfg: logits)
    model = small_model().eval()
    kept = adnet.predict_sequence(model, seq, {"eval": {"instance_pruning": True}})
    unpruned = adnet.predict_sequence(model, seq, None)
    np.testing.assert_array_equal(unpruned, fg)  # both squares without pruning
    assert kept[:, 30:36, 46:52].sum() == 0  # the small static square is pruned
    assert (kept[:, 12:28] == fg[:, 12:28]).all()  # the moving one is kept


def test_recipe_reports_cached_weights_only_after_training(tmp_path):
    """`Recipe.cached_weights` (what REAL="auto" asks) is None until load_or_train has saved exactly
    these weights; another seed or preset is another file."""
    from voslab import presets, zoo

    recipe = zoo.get("adnet")
    cfg = presets.get("adnet", "smoke")
    cfg["train"]["steps"] = 2
    assert recipe.cached_weights(cfg, cache=tmp_path) is None
    recipe.load_or_train(cfg, cache=tmp_path, progress=False)
    path = recipe.cached_weights(cfg, cache=tmp_path)
    assert path is not None and path.is_file() and path.parent == tmp_path
    assert recipe.cached_weights(cfg, seed=1, cache=tmp_path) is None
    cfg["train"]["steps"] = 3
    assert recipe.cached_weights(cfg, cache=tmp_path) is None


# ---------------------------------------------------------------------------- the stride-4 decoder (voslab option)
def test_decoder_none_keeps_the_papers_head_and_state_dict_names():
    model = small_model()
    assert not hasattr(model, "decoder") and isinstance(model.head_layers[-1], torch.nn.Conv2d)
    assert model.head_layers[-1].out_channels == 1  # the logit comes straight from the head (checkpoints unchanged)


def test_decoder_s4_shapes_and_gradients_reach_every_parameter():
    model = small_model(decoder="s4", decoder_channels=8, dropout=0.0)
    anchor, frame = pair()
    mask = (torch.rand(2, 1, H, W) > 0.5).float()
    assert model(anchor, frame)["logits"].shape == (2, 1, H, W)
    adnet.training_step(model, {"anchor": anchor, "frame": frame, "mask": mask})["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_decoder_s4_reads_the_stride4_map_and_resolves_finer_than_the_embedding_grid():
    model = small_model(decoder="s4", decoder_channels=8).eval()
    anchor, frame = pair(batch=1)
    with torch.no_grad():
        emb_a = model.embed(anchor)
        emb_f, skip = model.embed_frame(frame)  # (1, C, 5, 7), (1, C_s4, 10, 14)
        assert skip.shape[-2:] == (H // 4, W // 4)
        base = model.head(emb_a, emb_f, (H // 4, W // 4), skip=skip)["logits"]
        poked = skip.clone()
        poked[..., 3, 5] += 5.0  # one stride-4 cell
        changed = (model.head(emb_a, emb_f, (H // 4, W // 4), skip=poked)["logits"] - base).abs()[0, 0] > 1e-6
    # the 3x3 fuse conv spreads one stride-4 cell to its 3x3 neighbours and no further
    assert changed[3, 5] and changed.sum() <= 9 and not changed[:, :3].any()
    with pytest.raises(ValueError, match="embed_frame"):
        model.head(emb_a, emb_f, (H, W))


def test_decoder_s4_predict_logits_matches_forward():
    model = small_model(decoder="s4", decoder_channels=8).eval()
    frames = _toy_video(t=4, h=40, w=56)
    logits = adnet.predict_logits(model, frames, dataclasses.replace(model.cfg, batch_frames=3))
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model(video[:1].expand(4, -1, -1, -1), video)["logits"]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
