"""Builds notebooks/02_agnn.ipynb (run: python notebooks/build_02_agnn.py; then nbstripout)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = []


def md(text: str) -> None:
    cells.append(new_markdown_cell(text.strip("\n")))


def code(text: str, tags: list[str] | None = None) -> None:
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    cells.append(cell)


md(r'''
# 02 · AGNN: zero-shot video object segmentation with an attentive graph neural network

> Wenguan Wang, Xiankai Lu, Jianbing Shen, David Crandall, Ling Shao.
> **Zero-Shot Video Object Segmentation via Attentive Graph Neural Networks.** ICCV 2019.
> Official code: `carrierlxk/AGNN` (PyTorch; training script added a year later, not runnable as-is).

*Zero-shot* (unsupervised) VOS: no mask is given; find the object that is "primary" in the video.
The paper's argument (paraphrased from its introduction): what is primary is a property of the
**whole video**, not of one frame, and earlier methods looked at one frame, or at a pair, or at a
sequence through a recurrent memory that forgets. AGNN makes $N'$ frames of a video the **nodes of a
fully connected graph**; for $K$ rounds every node receives a **message** from every other node
(*inter-attention*: where in frame $j$ is what I see?) and from itself (*intra-attention*), each
message passes a learned **gate** (a blurred or occluded frame should not be listened to), and a
ConvGRU updates the node's state. Each node then reads out its own mask from $[h^K, h^0]$. Training
on $N'$ random frames of a video gives many graphs per video (the paper's augmentation argument).

Scenario: `transient_lookalikes` (look-alikes of the primary object appear for a few frames; one
frame cannot tell them apart, the other frames can); the gate's ablation uses `corrupted_frames`.
''')
code(r'''
# Where voslab is not installed yet (e.g. a hosted notebook service), install it first: from
# $VOSLAB_PIP_SOURCE (a path or a git URL), else from the repository this notebook sits in.
import importlib.util, os, subprocess, sys  # noqa: E401
from pathlib import Path

if importlib.util.find_spec("voslab") is None:
    source = os.environ.get("VOSLAB_PIP_SOURCE") or next(
        (str(p) for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file()), None)
    if source is None:
        raise ModuleNotFoundError("voslab is not installed: `pip install <voslab folder or git URL>[notebooks]`, "
                                  "or set VOSLAB_PIP_SOURCE and rerun this cell")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"{source}[notebooks]"])
''')
code(r'''
from __future__ import annotations

import copy
import functools
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.data import default_collate

import voslab
from voslab import exercises, inference, notebook, stats, viz, zoo
from voslab.data import synthetic
from voslab.data.transforms import to_image_tensor
from voslab.exercises import todo
from voslab.models import agnn
from voslab.models._common import data_config, inference_config
from voslab.utils import Timer, seed_everything, select_device

voslab.require(">=0.1")
''')
md(r'''
## Parameters

The next cell is tagged `parameters`: literals only, so papermill can override them
(`papermill 02_agnn.ipynb out.ipynb -p PRESET smoke`). `None`/`"auto"` take the preset's value.
''')
code(r'''
PRESET = "auto"         # smoke | cpu | gpu; auto: $VOSLAB_PRESET, else cpu
SEED = 0                # seed of the main model (initial weights, batch order) and of every seeded draw
DEVICE = "auto"         # auto | cpu | cuda
CKPT = "auto"           # auto: reuse the cached weights of an identical run, else train; retrain: always train; or a folder
OUTPUT_DIR = None       # where 02_agnn.json goes; None: $VOSLAB_OUTPUT_DIR, else outputs
INTERACTIVE = None      # None: sliders in a live Jupyter kernel, static figures elsewhere
SOLUTIONS = True        # False: the exercise cells stay stubs for you to fill in (the notebook still runs)
STEPS = None            # training steps of the main model; None: the preset's
ABLATION_STEPS = None   # training steps of each ablation run; None: the preset's ablation_steps
ABLATION_SEEDS = None   # seeds of the message-passing on/off runs (K 3 vs 0); None: the preset ablation_seeds
REAL = False            # section 7, real DAVIS video: True or False
DATA_ROOT = None        # a DAVIS-2016-layout folder for section 7; None: the shared 240p copy
''', tags=["parameters"])
code(r'''
P = notebook.resolve(globals(), model="agnn")
cfg = P.config                                      # the preset (a copy): "data", "model", "train", "eval"
ABLATION_STEPS = int(ABLATION_STEPS or STEPS)
ABLATION_SEEDS = [int(s) for s in (ABLATION_SEEDS or [SEED])]
device = select_device(DEVICE)
recipe = zoo.get("agnn")                            # build_model, train_dataset, training_step, predict_sequence
timings: dict[str, float] = {}
checks: dict[str, bool] = {}


def variant_config(steps: int, scenario: str | None = None, **model) -> dict:
    """The preset with one schedule, some model options and (optionally) another scenario."""
    config = copy.deepcopy(cfg)
    config["train"]["steps"] = int(steps)
    config["model"].update(model)
    if scenario is not None:
        for split in ("train", "val"):
            config["data"][split]["scenario"] = scenario
    return config


def load_or_train(config: dict, seed: int = SEED, **fit_kwargs):
    """-> (model in eval mode on `device`, History): `recipe.train` (= `voslab train agnn`) unless cached."""
    cache = None if CKPT in ("auto", "retrain") else CKPT
    model, history = recipe.load_or_train(config, seed=seed, cache=cache, force=CKPT == "retrain",
                                          device=device, **fit_kwargs)
    return model.to(device).eval(), history


main_cfg = variant_config(STEPS)
print(f"device {device}; main model {STEPS} steps; ablation {ABLATION_STEPS} steps x seeds {ABLATION_SEEDS}")
print("model:", main_cfg["model"])
''')
md(r'''
## 1. The data: transient look-alikes

One primary object stays through the video; look-alikes of the same appearance family pass through
for a few frames. A per-frame model cannot know which one is "the" object; a node that hears from
other frames of the video can. Below a seeded random val video, then what a per-frame model (AGNN
with $K=0$: the same layers, no messages) gets wrong on it.
''')
code(r'''
with Timer() as timer:
    val = recipe.dataset(main_cfg, "val")
    val_instances = recipe.dataset(main_cfg, "val", year=2017)          # instance ids: primary and look-alikes
    val_root = synthetic.ensure("val", data_config(main_cfg, "val"))
timings["data"] = timer.seconds
rng = np.random.default_rng(SEED)
demo = val[int(rng.integers(len(val)))]                                  # a seeded draw, not a chosen video
flags = synthetic.frame_flags(synthetic.read_meta(val_root, demo.name))
print(f"{len(val)} val videos of {len(demo)} frames; {demo.name}: look-alikes visible in frames "
      f"{np.flatnonzero(flags['lookalikes']).tolist()}")
display(viz.contact_sheet(demo.frames(), val_instances[demo.name].masks(), ncols=6,
                          titles=[f"t={t}" + (" (look-alike)" if flags["lookalikes"][t] else "") for t in range(len(demo))]))
''')
md(r'''
## 2. Building AGNN step by step

Notation: $N'$ nodes (frames), node state $h_i \in \mathbb{R}^{C\times h\times w}$, written
$H_i \in \mathbb{R}^{C\times P}$ with $P=hw$ positions.

### 2.1 Node embeddings
$h_i^0 = V_i = \mathrm{FCN}(I_i)$: the backbone (here a tiny from-scratch CNN; paper: DeepLabv3-ResNet101)
and a $1\times1$ projection to $C$ channels.
''')
code(r'''
seed_everything(SEED)
model0 = recipe.build_model(main_cfg).to(device).eval()                # untrained
graph = torch.from_numpy(agnn.graph_indices(len(demo), model0.cfg.n_frames, "uniform"))[len(demo) // 2]
frames = to_image_tensor(demo.frames(), device)[graph][None]              # (1, N', 3, H, W): one graph
with torch.no_grad():
    h0 = model0.embed(frames[0])[None]                                    # (1, N', C, h, w)
print("graph of frames", graph.tolist(), "| images", tuple(frames.shape), "-> node embeddings h0", tuple(h0.shape))
''')
md(r'''
### 2.2 Line edges: inter-attention

For the ordered pair ($i \leftarrow j$): $e_{ij} = H_i^\top W_c H_j \in \mathbb{R}^{P\times P}$ with a learnable
$C\times C$ matrix $W_c$; the message is $m_{j\to i} = H_j\,\mathrm{softmax}(e_{ij})^\top$ where the softmax
normalises each **row** (each position of node $i$ distributes its attention over node $j$'s positions).
**Exercise 1**: write it for one pair.
''')
code(r'''
def my_line_message(h_i, h_j, W):
    """h_i, h_j (C, h, w); W (C, C) -> message to node i from node j (C, h, w)."""
    todo("flatten to (C, P), the affinity e = H_i^T W H_j (P, P), a softmax per row, then H_j times its transpose")
''', tags=["exercise"])
code(r'''
if SOLUTIONS:
    def my_line_message(h_i, h_j, W):
        """h_i, h_j (C, h, w); W (C, C) -> message to node i from node j (C, h, w)."""
        Hi, Hj = h_i.flatten(1), h_j.flatten(1)                          # (C, P)
        e = Hi.T @ W @ Hj                                                 # (P_i, P_j)
        return (Hj @ e.softmax(dim=1).T).view_as(h_i)                     # (C, P_i)
''', tags=["solution"])
code(r'''
def line_reference(h_i, h_j, W):
    e = h_i.flatten(1).T @ W @ h_j.flatten(1)
    return (h_j.flatten(1) @ e.softmax(1).T).view_as(h_i)


line_mistakes = {
    "the softmax runs over node i's positions (columns), not over node j's (rows)":
        lambda h_i, h_j, W: (h_j.flatten(1) @ (h_i.flatten(1).T @ W @ h_j.flatten(1)).softmax(0).T).view_as(h_i),
    "W_c is missing (a plain dot product)":
        lambda h_i, h_j, W: line_reference(h_i, h_j, torch.eye(len(W), dtype=W.dtype)),
    "the message carries node i's own features instead of node j's":
        lambda h_i, h_j, W: (h_i.flatten(1) @ (h_i.flatten(1).T @ W @ h_j.flatten(1)).softmax(1).T).view_as(h_i),
}
ref = copy.deepcopy(model0).double().cpu()                                 # a float64 copy for exact checks
Wc = ref.inter.weight.detach()
hd = h0[0].double().cpu()
checks["exercise_line_message"] = exercises.check(
    "line message", my_line_message, line_reference, [(hd[0], hd[1], Wc), (hd[2], hd[0], Wc)],
    mistakes=line_mistakes,
    random_cases=lambda r: tuple(torch.from_numpy(a) for a in (r.normal(size=(4, 3, 5)), r.normal(size=(4, 2, 6)),
                                                                r.normal(size=(4, 4)))))
with torch.no_grad():
    lib_messages, lib_inter = ref.line_messages(hd[None])                     # (1, N', N', C, h, w)
if checks["exercise_line_message"]:
    for i in range(len(graph)):
        for j in range(len(graph)):
            if i != j:
                torch.testing.assert_close(my_line_message(hd[i], hd[j], Wc), lib_messages[0, i, j])
    checks["line_messages_match_library"] = True
    print("every ordered pair matches AGNN.line_messages (batched over samples and pairs)")
''')
md(r'''
### 2.3 Loop edges: intra-attention

$m_{i\to i} = \alpha\,\mathrm{softmax}\big((W_f h_i)^\top (W_h h_i)\big)(W_l h_i) + h_i$, a non-local block whose
scalar $\alpha$ starts at 0 (the block starts as the identity). Built here with the library's weights
(and $\alpha$ set to 0.5 so the attention shows).
''')
code(r'''
intra = copy.deepcopy(ref.intra)
with torch.no_grad():
    intra.alpha.fill_(0.5)
    x = hd[0].flatten(1)                                                                  # (C, P)
    q = intra.query.weight[:, :, 0, 0] @ x + intra.query.bias[:, None]
    k = intra.key.weight[:, :, 0, 0] @ x + intra.key.bias[:, None]
    v = intra.value.weight[:, :, 0, 0] @ x + intra.value.bias[:, None]
    mine = (0.5 * v @ (q.T @ k).softmax(1).T + x).view_as(hd[0])
    torch.testing.assert_close(mine, intra(hd[:1])[0])
checks["loop_message_matches_library"] = True
print("loop message", tuple(mine.shape), "matches IntraAttention")
''')
md(r'''
### 2.4 Gates, aggregation and the node update

Gate (paper): $g_{j\to i} = \sigma\big(\mathrm{GAP}(W_g * m_{j\to i} + b_g)\big) \in [0,1]^C$, one value per channel;
(code: $\sigma(w^\top m)$, one value per position). Aggregation $m_i = \sum_{j} g_{j\to i}\, m_{j\to i}$ over every
node, itself included; update $h_i^k = \mathrm{ConvGRU}(h_i^{k-1}, m_i^k)$ with one cell shared by all nodes.
One round by hand vs `AGNN.propagate`:
''')
code(r'''
with torch.no_grad():
    loop = ref.intra(hd)                                                                  # (N', C, h, w)
    h1_mine = []
    for i in range(len(graph)):
        total = 0
        for j in range(len(graph)):
            msg = loop[i] if i == j else lib_messages[0, i, j]
            g = torch.sigmoid(F.conv2d(msg[None], ref.gate.conv.weight, ref.gate.conv.bias).mean((2, 3), keepdim=True))
            total = total + g[0] * msg                                                    # g: (C, 1, 1)
        h1_mine.append(ref.update(total[None], hd[i][None])[0])
    h1_lib = ref.propagate(hd[None], iterations=1)[0]
torch.testing.assert_close(torch.stack(h1_mine), h1_lib)
checks["one_round_matches_library"] = True
print("one round of message passing by hand = AGNN.propagate(iterations=1)")
''')
md(r'''
### 2.5 Readout and the whole forward pass

$\hat S_i = \sigma\big(R([h_i^K, h_i^0])\big)$: a $3\times3$ conv + BN + ReLU and a $1\times1$ conv to one logit, upsampled.
''')
code(r'''
with torch.no_grad():
    hK = ref.propagate(hd[None])                                                          # K rounds
    mine = ref.readout(hK, hd[None], frames.shape[-2:])
    lib = ref(frames.double().cpu())["logits"]
torch.testing.assert_close(mine, lib)
checks["forward_matches_library"] = True
print("logits per node", tuple(lib.shape))
''')
md(r'''
### 2.6 The loss and one training step

Training samples are $N'$ random frames of one video (one crop and flip for all of them). The paper's
class-balanced BCE, per image with $\eta$ its foreground fraction:
$\mathcal{L} = -\frac{1}{|x|}\sum_x (1-\eta) S_x \log \hat S_x + \eta (1-S_x)\log(1-\hat S_x)$. Built by hand, checked
against `training_step`, then one Adam step.
''')
code(r'''
train_data = recipe.train_dataset(main_cfg)
batch = default_collate([train_data[i] for i in range(2)])
print("frame indices of two samples:", batch["index"].tolist(), " frames", tuple(batch["frames"].shape))
seed_everything(SEED)
net_a = recipe.build_model(main_cfg)
logits = net_a(batch["frames"])["logits"]                                   # (B, N', 1, H, W)
S = batch["masks"]
eta = S.mean((-3, -2, -1), keepdim=True).clamp(0.01, 0.99)
p = torch.sigmoid(logits)
by_hand = -((1 - eta) * S * torch.log(p) + eta * (1 - S) * torch.log(1 - p)).mean()
seed_everything(SEED)
net_b = recipe.build_model(main_cfg)
step = recipe.training_step(net_b, batch, main_cfg)
torch.testing.assert_close(step["loss"], by_hand, rtol=1e-4, atol=1e-6)
optimizer, _ = recipe.configure_optimizer(net_b, main_cfg)
optimizer.zero_grad(); step["loss"].backward(); optimizer.step()
after = recipe.training_step(net_b, batch, main_cfg)["loss"]
checks["loss_matches_library"] = True
print(f"loss by hand {by_hand.item():.4f} = library; after one Adam step {after.item():.4f}")
''')
md(r'''
## 3. Training with the library loop

`recipe.load_or_train` runs `recipe.train` (the sampler above, the loss, Adam + poly schedule,
`voslab.engine.fit`) and caches the weights with their curves.
''')
code(r'''
with Timer() as timer:
    model, history = load_or_train(main_cfg, validate=recipe.validator(main_cfg, n_samples=32),
                                   validate_every=max(1, STEPS // 5))
timings["train_or_load"] = timer.seconds
train_seconds = history.seconds
print(f"training took {train_seconds:.1f} s ({STEPS} steps)")
if len(history):
    display(viz.plot_curves(history, keys=["loss", "val_loss", "iou", "val_iou"], smoothing=0.6,
                            title="AGNN training: balanced BCE and IoU"))
''')
md(r'''
## 4. Evaluation: DAVIS-2016 $\mathcal{J}\&\mathcal{F}$

`recipe.predict_sequence`: every frame is node 0 of a graph with $N'-1$ other frames of its video
(random, seeded, as in the code), the decision threshold of the preset.
''')
code(r'''
def evaluate(net, config: dict, videos=None, predict_fn=None) -> dict:
    """-> {"J&F": mean over videos, "per_video": {name: J&F}, "table", "seconds"}."""
    fn = predict_fn or functools.partial(recipe.predict_sequence, cfg=config)
    start = time.perf_counter()
    res, _ = inference.evaluate_model(net, videos if videos is not None else val, fn, recipe.protocol(), progress=False)
    per_video = {r["sequence"]: float(r["J&F-Mean"]) for r in res.rows}
    return {"J&F": float(np.mean(list(per_video.values()))), "per_video": per_video, "table": res,
            "seconds": time.perf_counter() - start}


with Timer() as timer:
    main_scores = evaluate(model, main_cfg)
timings["evaluate"] = timer.seconds
print(f"AGNN (K = {model.cfg.iterations}) J&F {main_scores['J&F']:.3f} over {len(main_scores['per_video'])} val videos")
print(main_scores["table"].to_markdown())
worst = min(main_scores["per_video"], key=main_scores["per_video"].get)
for label, seq in (("seeded random draw", demo), ("worst video", val[worst])):
    pred = inference.predict(model, seq, functools.partial(recipe.predict_sequence, cfg=main_cfg))
    print(f"{label}: {seq.name}  J&F {main_scores['per_video'][seq.name]:.3f}")
    display(viz.compare(seq.frames(), pred, seq.masks()))
''')
md(r'''
## 5. Look inside

### 5.1 The graph of frames, and where one pixel looks

The demo graph: node 0 (a middle frame) and the two frames sampled for it. The chosen pixel (rule: the
node-0 grid cell nearest the centroid of the object's ground truth) and its intra-attention over its
own frame and its inter-attention onto each other frame, round 1, one colour scale, ground truth
outlined in white.
''')
code(r'''
with torch.no_grad():
    out = model(frames, return_maps=True)                                   # the demo graph, trained model
gt_nodes = torch.from_numpy(demo.masks()[graph.numpy()] > 0)               # (N', H, W)
h, w = out["h0"].shape[-2:]
grid_gt = F.adaptive_avg_pool2d(gt_nodes[:, None].float(), (h, w))[:, 0]    # object share of each grid cell
ys, xs = np.nonzero(gt_nodes[0].numpy())
cy, cx = (ys.mean(), xs.mean()) if len(ys) else (frames.shape[-2] / 2, frames.shape[-1] / 2)
py, px = min(int(cy * h / frames.shape[-2]), h - 1), min(int(cx * w / frames.shape[-1]), w - 1)
p_idx = py * w + px
maps = []
if out["intra"]:
    maps.append(("intra: node 0 onto itself", 0, out["intra"][0][0, 0, p_idx]))
for j in range(1, len(graph)):
    maps.append((f"inter: node 0 onto node {j} (frame {int(graph[j])})", j, out["inter"][0][0, 0, j, p_idx]))
vmax = max(float(m.max()) for _, _, m in maps)
fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.6 * (len(maps) + 1), 2.8))
axes[0].imshow(demo.frame(int(graph[0]))); axes[0].plot(cx, cy, "w+", ms=14, mew=2)
axes[0].set_title(f"node 0 = frame {int(graph[0])}, query pixel")
for ax, (title, node, m) in zip(axes[1:], maps):
    heat = F.interpolate(m.view(1, 1, h, w).cpu(), size=frames.shape[-2:], mode="nearest")[0, 0]
    ax.imshow(demo.frame(int(graph[node])))
    im = ax.imshow(heat, cmap="magma", vmin=0, vmax=vmax, alpha=0.7)
    ax.contour(gt_nodes[node].numpy(), levels=[0.5], colors="white", linewidths=1)
    ax.set_title(title, fontsize=9)
fig.colorbar(im, ax=axes[1:], shrink=0.8, label="attention weight")
plt.show()
''')
md(r'''
How much of a node's attention, from query positions **on** the object, lands on the object in the
other frame, over every val video (uniform graphs, round 1), against chance (the object's share of the
grid), an untrained model, and the mass on look-alikes:
''')
code(r'''
@torch.no_grad()
def attention_mass(net, videos, instances, n_videos=None):
    """Mean over (graph, node i, other node j) of the attention mass from object cells of i onto object
    cells of j, onto look-alike cells of j, and the object's share of j's cells (chance)."""
    rows = {"object": [], "look-alikes": [], "chance": []}
    for seq in list(videos)[:n_videos]:
        inst = instances[seq.name].masks()                                       # (T, H, W) ids
        fg = seq.masks() > 0
        look = (inst > 0) & (inst != 255) & ~fg
        video = to_image_tensor(seq.frames(), device)
        graphs = torch.from_numpy(agnn.graph_indices(len(seq), net.cfg.n_frames, "uniform"))
        res = net(video[graphs], return_maps=True)
        att = res["inter"][0]                                                     # (T, N', N', P, P)
        hh, ww = res["h0"].shape[-2:]
        cells = lambda m: F.adaptive_avg_pool2d(torch.from_numpy(m[graphs.numpy()]).float()[:, :, None].flatten(0, 1),  # noqa: E731
                                                (hh, ww)).view(len(seq), -1, hh * ww).to(device) > 0.5
        obj, lk = cells(fg), cells(look)                                          # (T, N', P)
        for i in range(net.cfg.n_frames):
            for j in range(net.cfg.n_frames):
                if i == j:
                    continue
                a = att[:, i, j]                                                  # (T, P, P)
                q = obj[:, i].float()                                             # queries on the object
                n_q = q.sum(1).clamp(min=1)
                rows["object"].append(((a * obj[:, j, None].float()).sum(2) * q).sum(1) / n_q)
                rows["look-alikes"].append(((a * lk[:, j, None].float()).sum(2) * q).sum(1) / n_q)
                rows["chance"].append(obj[:, j].float().mean(1))
    return {k: float(torch.cat(v).mean()) for k, v in rows.items()}


with Timer() as timer:
    mass = {"trained": attention_mass(model, val, val_instances), "untrained": attention_mass(model0, val, val_instances)}
timings["attention_mass"] = timer.seconds
for name, v in mass.items():
    print(f"{name:<9} attention mass on the object {v['object']:.3f}, on look-alikes {v['look-alikes']:.3f}, "
          f"chance {v['chance']:.3f}")
''')
md(r'''
### 5.2 The message gates: low on a corrupted frame?

The demo graph again, with node 2's frame replaced by a constructed corrupted copy (heavy noise over
half the frame): the mean gate on each edge $j\to i$ (channel gate: mean over channels). Then, over
the `corrupted_frames` val split with the model trained there (section 6), the mean gate on messages
*from* corrupted frames vs from clean frames.
''')
code(r'''
noisy = frames.clone()
g = torch.Generator().manual_seed(SEED)
half = noisy.shape[-1] // 2
noisy[0, 2, :, :, :half] = torch.rand(noisy[0, 2, :, :, :half].shape, generator=g)
with torch.no_grad():
    gates_clean = model(frames, return_maps=True)["gates"][0][0].flatten(2).mean(-1)      # (N', N'): [i, j]
    gates_noisy = model(noisy, return_maps=True)["gates"][0][0].flatten(2).mean(-1)


def draw_graph(ax, images, gates, title):
    n = len(images)
    angles = np.pi / 2 + 2 * np.pi * np.arange(n) / n
    pos = np.stack([np.cos(angles), np.sin(angles)], 1) * 1.2
    for i in range(n):
        for j in range(n):
            if i != j:
                start, end = pos[j], pos[i]
                mid = (start + end) / 2 + 0.12 * np.array([-(end - start)[1], (end - start)[0]])
                ax.annotate("", xy=mid + 0.3 * (end - mid), xytext=start, arrowprops=dict(
                    arrowstyle="->", lw=0.5 + 4 * float(gates[i, j]), color=plt.cm.viridis(float(gates[i, j]))))
                ax.text(*mid, f"{float(gates[i, j]):.2f}", fontsize=8, ha="center")
    for i in range(n):
        ax.imshow(images[i], extent=(pos[i, 0] - 0.45, pos[i, 0] + 0.45, pos[i, 1] - 0.3, pos[i, 1] + 0.3))
        ax.text(pos[i, 0], pos[i, 1] + 0.36, f"node {i}", ha="center", fontsize=9)
    ax.set_xlim(-2, 2); ax.set_ylim(-1.6, 1.9); ax.axis("off"); ax.set_title(title)


to_np = lambda x: (x.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)  # noqa: E731
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
draw_graph(axes[0], [to_np(f) for f in frames[0]], gates_clean, "clean graph: mean gate per edge j -> i")
draw_graph(axes[1], [to_np(f) for f in noisy[0]], gates_noisy, "node 2 corrupted")
plt.show()
print("mean gate of node 2's messages: clean {:.3f}, corrupted {:.3f}".format(
    float(gates_clean[[0, 1], 2].mean()), float(gates_noisy[[0, 1], 2].mean())))
''')
md(r'''
### 5.3 Node predictions after each round

The readout applied to $h^k$, $k = 0..K$ (at $k=0$ the node has heard nothing), for node 0 of the demo
graph, one colour scale; then node 0's mean IoU per round over the val split (uniform graphs).
''')
code(r'''
K = model.cfg.iterations
probs = torch.sigmoid(out["round_logits"][:, 0, 0, 0]).cpu()                        # (K+1, H, W)
fig, axes = plt.subplots(1, K + 1, figsize=(3.2 * (K + 1), 2.4), squeeze=False)
for k in range(K + 1):
    im = axes[0, k].imshow(probs[k], vmin=0, vmax=1, cmap="viridis")
    axes[0, k].contour(gt_nodes[0].numpy(), levels=[0.5], colors="white", linewidths=1)
    axes[0, k].set_title(f"k = {k}")
fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="foreground probability")
plt.show()


@torch.no_grad()
def iou_per_round(net, videos, threshold):
    cut = float(np.log(threshold / (1 - threshold)))
    inter = np.zeros(net.cfg.iterations + 1); union = np.zeros_like(inter)
    for seq in videos:
        video = to_image_tensor(seq.frames(), device)
        graphs = torch.from_numpy(agnn.graph_indices(len(seq), net.cfg.n_frames, "uniform"))
        rl = net(video[graphs], return_maps=True)["round_logits"][:, :, 0, 0] > cut          # (K+1, T, H, W)
        gt = torch.from_numpy(seq.masks() > 0).to(device)
        inter += (rl & gt).flatten(1).sum(1).cpu().numpy(); union += (rl | gt).flatten(1).sum(1).cpu().numpy()
    return (inter / np.maximum(union, 1)).tolist()


round_iou = iou_per_round(model, val, inference_config(model.cfg, main_cfg).threshold)
print("node-0 IoU over the val split by round k:", [round(v, 3) for v in round_iou])
''')
md(r'''
## 6. Does message passing matter? The ablation, with confidence intervals

Same preset and schedule (`ABLATION_STEPS`) for every run. Main rows over `ABLATION_SEEDS`:
$K=3$ vs $K=0$ (no messages: a per-frame model with the same layers). One seed each: $K=1$; the official
code's choices $K=5$ and the spatial gate; and, on `corrupted_frames` (train and val), the gate on vs
off. Verdicts from `stats.paired_effect`: per-video differences averaged over seeds, a 95% bootstrap
interval over the val videos.
''')
code(r'''
ablation_runs: dict[str, dict] = {}
corrupted_val = recipe.dataset(variant_config(ABLATION_STEPS, "corrupted_frames"), "val")
VARIANTS = {
    "K=3 (paper)": ({"iterations": 3}, None), "K=0": ({"iterations": 0}, None), "K=1": ({"iterations": 1}, None),
    "K=5 (code)": ({"iterations": 5}, None), "spatial gate (code)": ({"gate": "spatial"}, None),
    "gate on [corrupted]": ({"iterations": 3}, "corrupted_frames"), "gate off [corrupted]": ({"gate": "none"}, "corrupted_frames"),
}


def run_variant(variant: str, seed: int) -> None:
    options, scenario = VARIANTS[variant]
    config = variant_config(ABLATION_STEPS, scenario, **options)
    net, hist = load_or_train(config, seed=seed)
    scored = evaluate(net, config, corrupted_val if scenario else val)
    ablation_runs[f"{variant} seed {seed}"] = {"variant": variant, "seed": seed, "J&F-Mean": scored["J&F"],
                                               "train_seconds": hist.seconds, "per_video": scored["per_video"],
                                               "net": net}


with Timer() as timer:
    for seed in ABLATION_SEEDS:
        for variant in ("K=3 (paper)", "K=0"):
            run_variant(variant, seed)
    for variant in ("K=1", "K=5 (code)", "spatial gate (code)", "gate on [corrupted]", "gate off [corrupted]"):
        run_variant(variant, ABLATION_SEEDS[0])
timings["ablation"] = timer.seconds
for label, r in ablation_runs.items():
    print(f"{label:<34} J&F {r['J&F-Mean']:.3f}  ({r['train_seconds']:.1f} s)")
''')
code(r'''
def per_seed(variant: str, seeds=None) -> list[dict]:
    return [r["per_video"] for r in ablation_runs.values() if r["variant"] == variant
            and (seeds is None or r["seed"] in seeds)]


first = ABLATION_SEEDS[:1]
comparisons = {
    "K=3 vs K=0 (message passing)": (per_seed("K=3 (paper)"), per_seed("K=0")),
    "K=3 vs K=1": (per_seed("K=3 (paper)", first), per_seed("K=1")),
    "K=3 (paper) vs K=5 (code)": (per_seed("K=3 (paper)", first), per_seed("K=5 (code)")),
    "channel gate (paper) vs spatial gate (code)": (per_seed("K=3 (paper)", first), per_seed("spatial gate (code)")),
    "gate on vs off [corrupted_frames]": (per_seed("gate on [corrupted]"), per_seed("gate off [corrupted]")),
}
effects = {name: stats.paired_effect(a, b, seed=SEED) for name, (a, b) in comparisons.items()}
for name, effect in effects.items():
    print(f"{name:<46} {effect.describe()}")
''')
md(r'''
Gates over the `corrupted_frames` val split (the gated model trained there): the mean gate on
messages sent by corrupted frames vs by clean frames, per kind of corruption.
''')
code(r'''
@torch.no_grad()
def gate_by_sender(net, videos, root):
    sums: dict[str, list] = {}
    for seq in videos:
        meta = synthetic.read_meta(root, seq.name)
        kinds = [f["corruption"] or "clean" for f in meta["frames"]]
        graphs = torch.from_numpy(agnn.graph_indices(len(seq), net.cfg.n_frames, "uniform"))
        gates = net(to_image_tensor(seq.frames(), device)[graphs], return_maps=True)["gates"][0]   # (T, N', N', C, 1, 1)
        g = gates.flatten(3).mean(-1).cpu()                                                       # (T, N', N')
        for t, row in enumerate(graphs.tolist()):
            for i in range(len(row)):
                for j in range(len(row)):
                    if i != j:
                        sums.setdefault(kinds[row[j]], []).append(float(g[t, i, j]))
    return {k: float(np.mean(v)) for k, v in sorted(sums.items())}


gated_net = ablation_runs[f"gate on [corrupted] seed {ABLATION_SEEDS[0]}"]["net"]
corrupted_root = synthetic.ensure("val", data_config(variant_config(ABLATION_STEPS, "corrupted_frames"), "val"))
gate_stats = gate_by_sender(gated_net, corrupted_val, corrupted_root)
for kind, value in gate_stats.items():
    print(f"messages sent by {kind:<14} frames: mean gate {value:.3f}")
''')
md(r'''
### 6.1 The inference protocol: random vs uniform graphs

The same main model with the deterministic "uniform" sampling instead of the code's random frames.
''')
code(r'''
uniform_cfg = copy.deepcopy(main_cfg)
uniform_cfg["eval"]["sampling"] = "uniform"
uniform_scores = evaluate(model, uniform_cfg)
effects["random vs uniform graphs (inference)"] = stats.paired_effect(main_scores["per_video"], uniform_scores["per_video"], seed=SEED)
print(f"random {main_scores['J&F']:.3f}, uniform {uniform_scores['J&F']:.3f}:",
      effects["random vs uniform graphs (inference)"].describe())
''')
md(r'''
## 7. Real video (the `real` preset)

The `real` preset trains AGNN with a frozen ImageNet MobileNetV2 on DAVIS-2016 frames at 240p and
scores the 5 held-out sequences. Off by default (`REAL=False`): the first run takes up to 30 minutes
on 2 cores (`voslab train agnn --preset real` caches it).
''')
code(r'''
real_scores = {}
if REAL:
    from voslab import presets                                                    # noqa: E402 (section 7 only)
    real_cfg = presets.get("agnn", "real")
    if PRESET == "smoke":
        real_cfg["train"]["steps"] = 4
    real_model, _ = load_or_train(real_cfg)
    res, _ = inference.evaluate_model(real_model, recipe.dataset(real_cfg, "val", DATA_ROOT),
                                      functools.partial(recipe.predict_sequence, cfg=real_cfg), recipe.protocol(), progress=False)
    real_scores = {r["sequence"]: r["J&F-Mean"] for r in res.rows}
    print(res.to_markdown())
else:
    print("section 7 skipped (REAL=False): run with -p REAL True, or `voslab train agnn --preset real` "
          "then `voslab evaluate agnn --preset real --split val`")
''')
md(r'''
## 8. Change one thing, predict, then measure

Each experiment changes only the trained main model's inference and re-scores the val split.
**Before running**, write in `MY_PREDICTIONS` whether J&F goes "up", "down" or stays the "same" (within 0.01).

* 8.1: graphs of 5 nodes instead of 3 at test time (the sum aggregation accepts any $N'$).
* 8.2: every gate forced to 1 (messages from every frame taken at face value).
''')
code(r'''
MY_PREDICTIONS = {"8.1 five nodes at test time": None, "8.2 gates forced open": None}
''', tags=["prediction"])
code(r'''
for experiment, guess in MY_PREDICTIONS.items():
    exercises.predict(experiment, guess, choices=("up", "down", "same"))
''')
code(r'''
five_cfg = copy.deepcopy(main_cfg)
open_model = copy.deepcopy(model)
open_model.gate = None                                           # gate_messages then returns gates of 1
five_model = copy.deepcopy(model)
five_model.cfg = copy.deepcopy(model.cfg)
five_model.cfg.n_frames = 5
with Timer() as timer:
    experiments = {"as trained": main_scores["J&F"],
                   "8.1 five nodes at test time": evaluate(five_model, five_cfg)["J&F"],
                   "8.2 gates forced open": evaluate(open_model, main_cfg)["J&F"]}
timings["experiments"] = timer.seconds
for name, value in experiments.items():
    print(f"{name:<30} J&F {value:.3f} ({value - experiments['as trained']:+.3f})")
for name in MY_PREDICTIONS:
    change = experiments[name] - experiments["as trained"]
    exercises.reveal(name, change, "up" if change > 0.01 else "down" if change < -0.01 else "same")
''')
md(r'''
## Summary

What this run measured (printed from the results above, not typed):
''')
code(r'''
k_effect = effects["K=3 vs K=0 (message passing)"]
print(f"preset {PRESET}: AGNN (K={model.cfg.iterations}) J&F {main_scores['J&F']:.3f} on {len(val)} val videos.")
print(f"message passing (K=3 vs K=0, {len(ABLATION_SEEDS)} seed(s)): {k_effect.describe()}")
print(f"gate on vs off on corrupted_frames: {effects['gate on vs off [corrupted_frames]'].describe()}")
print(f"inter-attention mass on the object: trained {mass['trained']['object']:.3f}, untrained "
      f"{mass['untrained']['object']:.3f}, chance {mass['trained']['chance']:.3f}; on look-alikes {mass['trained']['look-alikes']:.3f}")
print(f"timings {({k: round(v, 1) for k, v in timings.items()})}")
''')
md(r'''
Not reproduced here: DeepLabv3-ResNet101 at 473x473, the static saliency images (MSRA10K, DUT) the
code interleaves with video iterations, the instance-level DAVIS-2017 pipeline, and (by default) the
dense CRF (`eval.crf=True` with `pydensecrf` installed).
''')
code(r'''
notebook.save_results(OUTPUT_DIR, "02_agnn", {
    "metrics": {
        "J&F-Mean": main_scores["J&F"],
        "ablation J&F-Mean": {label: r["J&F-Mean"] for label, r in ablation_runs.items()},
        "uniform graphs J&F-Mean": uniform_scores["J&F"],
        "node-0 IoU by round": round_iou,
        "experiments J&F-Mean": experiments,
        **({"real": real_scores} if real_scores else {}),
    },
    "effects": {name: effect.as_dict() for name, effect in effects.items()},
    "verdicts": {name: effect.describe() for name, effect in effects.items()},
    "per_video": {"main": main_scores["per_video"], **{label: r["per_video"] for label, r in ablation_runs.items()}},
    "analysis": {"attention_mass": mass, "gate_by_sender": gate_stats,
                 "demo_gates": {"clean": gates_clean.tolist(), "node 2 corrupted": gates_noisy.tolist()}},
    "timings": timings,
    "train_seconds": {"main": train_seconds, **{label: r["train_seconds"] for label, r in ablation_runs.items()}},
    "checks": checks,
    "schedule": {"steps": STEPS, "ablation_steps": ABLATION_STEPS, "ablation_seeds": ABLATION_SEEDS},
    "config": main_cfg,
})
''')

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                          "name": "python3"}, "language_info": {"name": "python"}})
nbformat.write(nb, Path(__file__).with_name("02_agnn.ipynb"))
