"""AGNN: shapes, each block against a hand-computed / brute-force reference, the graph's invariances,
training (loss by hand, overfitting), inference protocol, save/load, presets and the CLI."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from voslab import cli, inference, zoo
from voslab.models import agnn
from voslab.models.agnn import AGNN, AGNNConfig, build_model, graph_indices
from roundtrip import checkpoint_round_trip

SMALL = dict(backbone="tiny", channels=8, backbone_kwargs={"width": 4})
H, W = 24, 40  # embedding grid 3 x 5 at output stride 8
VARIANTS = [
    {},
    {"gate": "spatial"},
    {"gate": "none"},
    {"aggregation": "concat"},
    {"intra": "encoder"},
    {"intra": "none"},
    {"iterations": 0},
    {"iterations": 5, "gate": "spatial", "aggregation": "concat", "intra": "encoder"},  # the official code
    {"n_frames": 4},
]


def small_model(seed: int = 0, alpha: float | None = 0.7, **overrides) -> AGNN:
    """A small AGNN; the intra-attention's alpha (0 at init) set so its layers matter."""
    torch.manual_seed(seed)
    model = build_model({"model": {**SMALL, **overrides}})
    if alpha is not None and model.intra is not None:
        with torch.no_grad():
            model.intra.alpha.fill_(alpha)
    return model


def clips(batch: int = 2, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def states(batch: int = 2, n: int = 3, c: int = 8, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_shapes_for_every_variant(options):
    n = options.get("n_frames", 3)
    k = options.get("iterations", 3)
    model = small_model(**options)
    out = model(clips(n=n), return_maps=True)
    p = 3 * 5
    assert out["logits"].shape == (2, n, 1, H, W)
    assert out["h0"].shape == (2, n, 8, 3, 5)
    assert out["round_logits"].shape == (k + 1, 2, n, 1, H, W)
    assert len(out["states"]) == k + 1 and len(out["inter"]) == len(out["gates"]) == k
    assert len(out["intra"]) == (k if model.cfg.intra == "graph" else 0)
    gate_shape = {"channel": (8, 1, 1), "spatial": (1, 3, 5), "none": (1, 1, 1)}[model.cfg.gate]
    for inter, gates in zip(out["inter"], out["gates"]):
        assert inter.shape == (2, n, n, p, p)
        assert gates.shape == (2, n, n, *gate_shape)
    for intra in out["intra"]:
        assert intra.shape == (2, n, p, p)
    torch.testing.assert_close(out["round_logits"][-1], out["logits"])
    assert set(model(clips(n=n))) == {"logits"}


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_gradients_reach_every_parameter(options):
    n = options.get("n_frames", 3)
    model = small_model(**options)
    masks = (torch.rand(2, n, 1, H, W, generator=torch.Generator().manual_seed(3)) > 0.6).float()
    agnn.training_step(model, {"frames": clips(n=n), "masks": masks})["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_iterations_zero_builds_no_edges():
    model = small_model(iterations=0)
    assert model.inter is None and model.gate is None and model.update is None and model.intra is None
    with pytest.raises(ValueError, match="iterations=0"):
        model.propagate(torch.zeros(1, 3, 8, 3, 5), iterations=2)


# ---------------------------------------------------------------------------- blocks by hand
def _softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


def test_line_messages_match_a_brute_force_loop():
    model = small_model().double()
    h = states()
    messages, attention = model.line_messages(h)
    wc = model.inter.weight  # (C, C)
    b, n, c, hh, ww = h.shape
    for s, i, j in itertools.product(range(b), range(n), range(n)):
        if i == j:
            assert messages[s, i, i].abs().sum() == 0 and attention[s, i, i].abs().sum() == 0
            continue
        hi, hj = h[s, i].reshape(c, -1), h[s, j].reshape(c, -1)  # (C, P)
        for p in range(hh * ww):
            e = torch.tensor([float(hi[:, p] @ wc @ hj[:, q]) for q in range(hh * ww)], dtype=h.dtype)  # e_ij[p, :]
            row = _softmax(e)
            torch.testing.assert_close(attention[s, i, j, p], row)
            expected = sum(row[q] * hj[:, q] for q in range(hh * ww))  # m_ji at p
            torch.testing.assert_close(messages[s, i, j].reshape(c, -1)[:, p], expected)


def test_loop_message_matches_a_brute_force_loop():
    model = small_model(alpha=0.6).double()
    h = states(batch=1, n=2)
    m, attention = model.loop_messages(h)
    blk = model.intra
    c = h.shape[2]
    for i in range(2):
        x = h[0, i].reshape(c, -1)  # (C, P)
        q = blk.query.weight[:, :, 0, 0] @ x + blk.query.bias[:, None]
        k = blk.key.weight[:, :, 0, 0] @ x + blk.key.bias[:, None]
        v = blk.value.weight[:, :, 0, 0] @ x + blk.value.bias[:, None]
        for p in range(x.shape[1]):
            row = _softmax(torch.stack([q[:, p] @ k[:, r] for r in range(x.shape[1])]))  # no 1/sqrt(C): the paper's
            torch.testing.assert_close(attention[0, i, p], row)
            expected = 0.6 * (v @ row) + x[:, p]
            torch.testing.assert_close(m[0, i].reshape(c, -1)[:, p], expected)


def test_intra_attention_starts_as_the_identity():
    model = small_model(alpha=None)
    h = states(batch=1).float()
    torch.testing.assert_close(model.loop_messages(h)[0], h)


@pytest.mark.parametrize("mode", ["channel", "spatial", "none"])
def test_gates_by_hand(mode):
    model = small_model(gate=mode).double()
    messages = states(batch=1, n=2).unsqueeze(2).expand(1, 2, 2, 8, 3, 4).contiguous()  # (1, N, N, C, h, w)
    gated, gates = model.gate_messages(messages)
    m = messages[0, 1, 0]  # (C, h, w)
    if mode == "channel":  # sigmoid(GAP(W_g * m + b_g)): one value per channel
        w, b = model.gate.conv.weight[:, :, 0, 0], model.gate.conv.bias
        expected = torch.sigmoid((torch.einsum("dc,chw->dhw", w, m) + b[:, None, None]).mean((1, 2)))[:, None, None]
    elif mode == "spatial":  # sigmoid(w . m): one value per position, no bias
        w = model.gate.conv.weight[0, :, 0, 0]
        expected = torch.sigmoid(torch.einsum("c,chw->hw", w, m))[None]
    else:
        expected = torch.ones(1, 1, 1, dtype=m.dtype)
    torch.testing.assert_close(gates[0, 1, 0], expected)
    torch.testing.assert_close(gated[0, 1, 0], m * expected)


def test_sum_aggregation_by_hand():
    model = small_model().double()
    gated = states(batch=1, n=3).unsqueeze(1).expand(1, 3, 3, 8, 3, 4).clone()  # [:, i, j] = x_j
    gated[0, 2, 1] *= 3.0
    present = ~torch.eye(3, dtype=torch.bool)
    m = model.aggregate(gated, present)
    torch.testing.assert_close(m[0, 0], gated[0, 0, 1] + gated[0, 0, 2])
    torch.testing.assert_close(m[0, 2], gated[0, 2, 0] + gated[0, 2, 1])
    torch.testing.assert_close(model.aggregate(gated, torch.ones(3, 3, dtype=torch.bool))[0, 1], gated[0, 1].sum(0))


def test_concat_aggregation_puts_the_loop_first_then_the_others_in_order():
    model = small_model(aggregation="concat").double()
    gated = states(batch=1, n=3).unsqueeze(1).expand(1, 3, 3, 8, 3, 4).clone() * torch.arange(1, 4).view(1, 3, 1, 1, 1, 1)
    m = model.aggregate(gated, torch.ones(3, 3, dtype=torch.bool))
    expected = model.fusion(torch.cat([gated[0, 1, 1], gated[0, 1, 0], gated[0, 1, 2]])[None])[0]
    torch.testing.assert_close(m[0, 1], expected)
    with pytest.raises(ValueError, match="concat"):
        model.aggregate(states(batch=1, n=2).unsqueeze(1).expand(1, 2, 2, 8, 3, 4), torch.ones(2, 2, dtype=torch.bool))


def test_one_round_composed_by_hand():
    """h^1_i = ConvGRU(h^0_i, sum_j g_ji m_ji) with the loop edge m_ii = intra(h^0_i) among the j."""
    model = small_model().double()
    h0 = states(batch=2, n=3)
    h1, maps = model.propagate(h0, iterations=1, return_maps=True)
    line, _ = model.line_messages(h0)
    loop, _ = model.loop_messages(h0)
    for s, i in itertools.product(range(2), range(3)):
        incoming = [loop[s, i] if j == i else line[s, i, j] for j in range(3)]
        total = sum(model.gate(msg[None])[0] for msg in incoming)
        expected = model.update(total[None], h0[s, i][None])[0]
        torch.testing.assert_close(h1[s, i], expected)
    torch.testing.assert_close(maps["states"][1], h1)


# ---------------------------------------------------------------------------- invariances of the graph
def test_samples_of_a_batch_do_not_talk_to_each_other():
    model = small_model().eval()
    x = clips(batch=3)
    together = model(x)["logits"]
    for s in range(3):
        torch.testing.assert_close(model(x[s:s + 1])["logits"][0], together[s], atol=1e-5, rtol=1e-5)


def test_permuting_the_nodes_permutes_the_outputs():
    model = small_model().eval()
    x = clips()
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model(x[:, perm])["logits"], model(x)["logits"][:, perm], atol=1e-5, rtol=1e-5)


def test_without_messages_a_node_ignores_the_other_frames():
    for options, independent in (({"iterations": 0}, True), ({}, False)):
        model = small_model(**options).double().eval()
        h0 = states(n=3)
        other = h0.clone()
        other[:, 1:] = torch.randn_like(other[:, 1:])
        out = model.readout(model.propagate(h0), h0, (H, W))[:, 0]
        out_other = model.readout(model.propagate(other), other, (H, W))[:, 0]
        assert torch.allclose(out, out_other) == independent, options


def test_a_closed_gate_blocks_the_message():
    """With the spatial gate forced shut (large negative weights on a positive message), node i's
    update no longer depends on the sender."""
    model = small_model(gate="spatial", intra="none").double()
    with torch.no_grad():
        model.gate.conv.weight.fill_(-50.0)
    h0 = states(batch=1, n=2).abs() + 0.1  # positive states: positive messages, gate = sigmoid(-50 * sum) ~ 0
    h1 = model.propagate(h0, iterations=1)
    h0b = h0.clone()
    h0b[0, 1] = h0b[0, 1] * 3.0
    torch.testing.assert_close(model.propagate(h0b, iterations=1)[0, 0], h1[0, 0], atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------- loss and training
def test_balanced_bce_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    eta = 0.25  # one foreground pixel of four
    p = torch.sigmoid(logits)[0, 0]
    expected = -((1 - eta) * torch.log(p[0, 0]) + eta * torch.log(1 - p[0, 1])
                 + eta * torch.log(1 - p[1, 0]) + eta * torch.log(1 - p[1, 1])) / 4
    torch.testing.assert_close(agnn.balanced_bce(logits, target), expected)
    empty = torch.zeros_like(target)  # eta clamped to eta_min: the background still counts
    expected_empty = -(0.01 * torch.log(1 - torch.sigmoid(logits))).mean()
    torch.testing.assert_close(agnn.balanced_bce(logits, empty), expected_empty)


def test_training_step_losses():
    model = small_model()
    x = clips()
    masks = torch.zeros(2, 3, 1, H, W)
    masks[..., 4:12, 8:20] = 1
    batch = {"frames": x, "masks": masks}
    logits = model(x)["logits"]
    torch.testing.assert_close(agnn.training_step(model, batch, None)["loss"], agnn.balanced_bce(logits, masks))
    ratio = masks.mean((-3, -2, -1), keepdim=True)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks, reduction="none").mean((-3, -2, -1), keepdim=True)
    code = (bce / ratio).mean() + 0.8 * (torch.sigmoid(logits) - masks).abs().mean()
    torch.testing.assert_close(agnn.training_step(model, batch, {"train": {"loss": "code"}})["loss"], code)
    with pytest.raises(ValueError, match="loss"):
        agnn.training_step(model, batch, {"train": {"loss": "dice"}})


def test_overfits_a_tiny_batch():
    model = small_model(seed=1)
    x = clips(batch=2, seed=1)
    masks = torch.zeros(2, 3, 1, H, W)
    masks[0, :, :, 4:16, 6:22] = 1
    masks[1, :, :, 10:22, 20:36] = 1
    batch = {"frames": x, "masks": masks}
    cfg = {"train": {"optimizer": "adam", "lr": 1e-2, "steps": 150}}
    optimizer, scheduler = zoo.get("agnn").configure_optimizer(model, cfg)
    losses = []
    for _ in range(150):
        out = agnn.training_step(model, batch, cfg)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        scheduler.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    assert out["iou"] > 0.6, out["iou"]  # the balanced loss trades precision at the edges for recall


def test_configure_optimizer_groups_encoder_and_graph():
    model = small_model()
    optimizer, _ = agnn.configure_optimizer(model, {"train": {"optimizer": "sgd", "lr": 0.1, "encoder_lr_mult": 0.01,
                                                              "graph_lr_mult": 10.0}})
    encoder, graph = optimizer.param_groups
    assert encoder["lr"] == pytest.approx(0.001) and graph["lr"] == pytest.approx(1.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith(("backbone.", "embedding.")) for p in encoder["params"])
    assert any(names[id(p)].startswith("inter.") for p in graph["params"])
    assert len(encoder["params"]) + len(graph["params"]) == len(list(model.parameters()))


def test_train_dataset_gives_n_frames_of_one_video(tmp_path):
    from voslab.data import synthetic

    root = synthetic.generate(tmp_path / "syn", split="train", n_videos=2, n_frames=5, size=(32, 48), seed=0)
    data = agnn.train_dataset({"model": {"n_frames": 4}, "train": {"steps": 3, "batch_size": 2, "size": (32, 48)}}, root)
    item = data[0]
    assert len(data) == 6 and item["frames"].shape == (4, 3, 32, 48) and item["masks"].shape == (4, 1, 32, 48)
    assert len(set(item["index"].tolist())) == 4


# ---------------------------------------------------------------------------- inference
def test_graph_indices():
    uniform = graph_indices(9, 3, "uniform")
    np.testing.assert_array_equal(uniform[0], [0, 3, 6])
    np.testing.assert_array_equal(uniform[7], [7, 1, 4])
    rand = graph_indices(10, 4, "random", seed=3)
    assert rand.shape == (10, 4) and (rand[:, 0] == np.arange(10)).all()
    for row in rand:
        assert len(set(row.tolist())) == 4  # distinct frames, t not repeated
    np.testing.assert_array_equal(rand, graph_indices(10, 4, "random", seed=3))  # reproducible
    assert not np.array_equal(rand, graph_indices(10, 4, "random", seed=4))
    assert graph_indices(2, 3, "random").shape == (2, 3)  # shorter than N': repeats allowed
    assert (graph_indices(1, 3, "uniform") == 0).all()


class ArraySequence:
    """The slice of ``voslab.data.sequence.Sequence`` that predict_sequence reads."""

    def __init__(self, frames: np.ndarray):
        self._frames, self.name, self.size = frames, "toy", frames.shape[1:3]

    def __len__(self):
        return len(self._frames)

    def frames(self):
        return self._frames


def _toy_video(t: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (t, H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("sampling", ["random", "uniform"])
def test_predict_logits_is_node_zero_of_each_frames_graph(sampling):
    model = small_model().eval()
    frames = _toy_video()
    cfg = dataclasses.replace(model.cfg, sampling=sampling, batch_graphs=2)
    logits, graphs = agnn.predict_logits(model, frames, cfg, return_graphs=True)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model(video[torch.from_numpy(graphs)])["logits"][:, 0]  # (T, 1, H, W)
    assert logits.shape == (5, 1, H, W)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_scales_and_mirror_average_logits():
    model = small_model().eval()
    frames = _toy_video()
    base = model.cfg
    one = agnn.predict_logits(model, frames, base)
    mirrored = agnn.predict_logits(model, frames[:, :, ::-1].copy(), base).flip(-1)
    both = agnn.predict_logits(model, frames, dataclasses.replace(base, mirror=True))
    torch.testing.assert_close(both, (one + mirrored) / 2, atol=1e-5, rtol=1e-5)
    multi = agnn.predict_logits(model, frames, dataclasses.replace(base, scales=(1.0, 2.0)))
    assert multi.shape == one.shape and not torch.allclose(multi, one)


def test_predict_sequence_is_the_thresholded_logits_at_the_video_size():
    model = small_model().eval()
    seq = ArraySequence(_toy_video())
    masks = inference.predict(model, seq, agnn.predict_sequence)
    logits = agnn.predict_logits(model, seq.frames(), model.cfg)
    assert masks.shape == (5, H, W) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, (torch.sigmoid(logits[:, 0]) > 0.5).numpy())
    small = agnn.predict_sequence(model, seq, {"eval": {"inference_size": (16, 24), "threshold": 0.3}})
    assert small.shape == (5, H, W)
    with pytest.raises(ValueError, match="unknown inference option"):
        agnn.predict_sequence(model, seq, {"eval": {"treshold": 0.3}})


# ---------------------------------------------------------------------------- save / load, presets, CLI
def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = small_model(gate="spatial").eval()
    clone = checkpoint_round_trip(model, build_model, tmp_path)
    x = clips()
    torch.testing.assert_close(clone(x)["logits"], model(x)["logits"], rtol=0, atol=0)


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="unknown AGNNConfig"):
        build_model({"model": {"iteratons": 3}})
    for bad in ({"gate": "sigmoid"}, {"aggregation": "mean"}, {"intra": "both"}, {"sampling": "all"},
                {"iterations": -1}, {"threshold": 1.5}):
        with pytest.raises(ValueError):
            AGNNConfig(**bad)


def test_presets_are_complete():
    assert set(agnn.PRESETS) == {"smoke", "cpu", "gpu", "real"}
    fields = {f.name for f in dataclasses.fields(AGNNConfig)}
    for name, preset in agnn.PRESETS.items():
        assert set(preset) == {"data", "model", "train", "eval"}, name
        AGNNConfig(**preset["model"])
        assert set(preset["eval"]) - fields <= {"split"}, name
        assert {"steps", "ablation_steps", "batch_size", "lr"} <= set(preset["train"]), name
    assert agnn.PRESETS["cpu"]["data"]["val"]["n_videos"] >= 48
    assert agnn.PRESETS["real"]["train"]["finetune"] and agnn.PRESETS["real"]["model"]["pretrained"]
    assert agnn.TASK == "unsupervised"
    for name in ("smoke", "cpu"):
        build_model(agnn.PRESETS[name])


def test_cli_trains_and_evaluates_the_smoke_preset(tmp_path, capsys):
    weights = tmp_path / "agnn.pt"
    assert cli.main(["train", "agnn", "--preset", "smoke", "--steps", "3", "--out", str(weights)]) == 0
    assert weights.is_file()
    assert cli.main(["evaluate", "agnn", "--preset", "smoke", "--ckpt", str(weights)]) == 0
    assert "J&F-Mean" in capsys.readouterr().out
