"""Builds notebooks/05_feelvos.ipynb (run: python notebooks/build_05_feelvos.py; then nbstripout)."""
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
# 05 · FEELVOS: embedding learning with global and local matching

> Paul Voigtlaender, Yuning Chai, Florian Schroff, Hartwig Adam, Bastian Leibe, Liang-Chieh Chen.
> **FEELVOS: Fast End-to-End Embedding Learning for Video Object Segmentation.** CVPR 2019.
> Official code: `tensorflow/models/research/feelvos` (TF 1.x).

*Semi-supervised*, *many objects*: the masks of every object in the first frame are given; follow
them all. Earlier methods fine-tuned a network on the first frame (slow) or matched pixels to the
first frame only (PML: noisy). FEELVOS learns a **pixel embedding** in which pixels of one object
are close, and feeds two distance maps per object to a small network:

1. **global matching**: each pixel's distance to the nearest first-frame pixel of the object — finds
   the object wherever it is, but also wherever something *looks* like it;
2. **local matching**: the distance to the nearest pixel of the object in the **previous** frame,
   within a window of $k$ positions — sharp, follows the object, but lost when it vanishes;
3. the **previous prediction**, and the backbone features,

into a **dynamic segmentation head** run once per object (shared weights) whose logits are softmaxed
across objects; trained end to end with a bootstrapped cross-entropy. The distance is
$d(p,q) = 1 - \frac{2}{1+\exp(\lVert e_p-e_q\rVert^2)}$.

Two synthetic scenarios isolate the two matchings: `identical_instances` (copies of one object: only
continuity — local matching — tells them apart) and `occlude_reappear` (an object vanishes behind an
occluder and reappears far away: only the first frame — global matching — finds it again).
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
from voslab import exercises, inference, metrics, notebook, stats, viz, zoo
from voslab.data.transforms import to_image_tensor
from voslab.exercises import todo
from voslab.models import feelvos
from voslab.nn.matching import global_matching_naive
from voslab.utils import Timer, seed_everything, select_device

voslab.require(">=0.1")
''')
md(r'''
## Parameters

The next cell is tagged `parameters`: literals only, so papermill can override them
(`papermill 05_feelvos.ipynb out.ipynb -p PRESET smoke`). `None`/`"auto"` take the preset's value.
''')
code(r'''
PRESET = "auto"         # smoke | cpu | gpu; auto: $VOSLAB_PRESET, else cpu
SEED = 0                # seed of the main model (initial weights, batch order) and of every seeded draw
DEVICE = "auto"         # auto | cpu | cuda
CKPT = "auto"           # auto: reuse the cached weights of an identical run, else train; retrain: always train; or a folder
OUTPUT_DIR = None       # where 05_feelvos.json goes; None: $VOSLAB_OUTPUT_DIR, else outputs
INTERACTIVE = None      # None: sliders in a live Jupyter kernel, static figures elsewhere
SOLUTIONS = True        # False: the exercise cells stay stubs for you to fill in (the notebook still runs)
STEPS = None            # training steps of the main model; None: the preset's
ABLATION_STEPS = None   # training steps of each ablation run; None: the preset's ablation_steps
ABLATION_SEEDS = None   # seeds of the mechanism on/off runs; None: the preset's ablation_seeds
REAL = False            # section 8, real DAVIS video: auto (when the frames and weights are found), True or False
DATA_ROOT = None        # a DAVIS-2016-layout folder for section 8; None: the shared 240p copy
''', tags=["parameters"])
code(r'''
P = notebook.resolve(globals(), model="feelvos")
cfg = P.config                                      # the preset (a copy): "data", "model", "train", "eval"
ABLATION_STEPS = int(ABLATION_STEPS or STEPS)
ABLATION_SEEDS = [int(s) for s in (ABLATION_SEEDS or [SEED])]
device = select_device(DEVICE)
recipe = zoo.get("feelvos")                         # build_model, train_dataset, training_step, predict_sequence
timings: dict[str, float] = {}
checks: dict[str, bool] = {}


def variant_config(steps: int, **model) -> dict:
    """The preset with one schedule and some model options changed (with the seed: the cache key)."""
    config = copy.deepcopy(cfg)
    config["train"]["steps"] = int(steps)
    config["model"].update(model)
    return config


def load_or_train(config: dict, seed: int = SEED, **fit_kwargs):
    """-> (model in eval mode on `device`, History): `recipe.train` (= `voslab train feelvos`) unless cached."""
    cache = None if CKPT in ("auto", "retrain") else CKPT
    model, history = recipe.load_or_train(config, seed=seed, cache=cache, force=CKPT == "retrain",
                                          device=device, **fit_kwargs)
    return model.to(device).eval(), history


main_cfg = variant_config(STEPS)
print(f"device {device}; main model {STEPS} steps; ablation {ABLATION_STEPS} steps x seeds {ABLATION_SEEDS}")
print("model:", main_cfg["model"])
''')
md(r'''
## 1. The data: identical instances and occlusion with reappearance

`feelvos.scenario_splits` splits the preset's train and val videos evenly over FEELVOS's two
scenarios; every score below breaks down by scenario.
''')
code(r'''
with Timer() as timer:
    val_splits = feelvos.scenario_splits(cfg, "val")                  # {scenario: DAVIS}
    train_splits = feelvos.scenario_splits(cfg, "train")
timings["data"] = timer.seconds
val_list = [(scenario, seq) for scenario, videos in val_splits.items() for seq in videos]
scenario_of = {f"{sc}/{seq.name}": sc for sc, seq in val_list}
for scenario, videos in val_splits.items():
    print(f"{scenario:<20} train {len(train_splits[scenario])} videos, val {len(videos)} videos, "
          f"objects per val video {np.mean([len(s.object_ids) for s in videos]):.1f}")
rng = np.random.default_rng(SEED)
demo = {sc: videos[int(rng.integers(len(videos)))] for sc, videos in val_splits.items()}   # seeded draws
for sc, seq in demo.items():
    display(viz.contact_sheet(seq.frames(), seq.masks(), ncols=6, titles=[f"{sc} t={t}" for t in range(len(seq))]))
''')
md(r'''
## 2. Building FEELVOS step by step

### 2.1 Features at stride 4 and the pixel embedding

The backbone (here a tiny from-scratch CNN; the paper: DeepLabv3+ Xception-65) gives features at
stride 4 through a DeepLabv3+ decoder; one separable convolution maps them to the embedding.
''')
code(r'''
seed_everything(SEED)
model0 = recipe.build_model(main_cfg).to(device).eval()              # untrained
seq = demo["identical_instances"]
frames = to_image_tensor(seq.frames(), device)                       # (T, 3, H, W)
with torch.no_grad():
    features, emb = model0.embed(frames)                             # (T, F, H/4, W/4), (T, C, H/4, W/4)
print("frames", tuple(frames.shape), "-> features", tuple(features.shape), "-> embeddings", tuple(emb.shape))
''')
md(r'''
### 2.2 The distance

$d(p,q) = 1 - \frac{2}{1+\exp(\lVert e_p-e_q\rVert^2)}$: 0 for identical embeddings, towards 1 for far
ones. **Exercise 1**: write it for embeddings of shape `(..., C)`.
''')
code(r'''
def my_distance(e_p: torch.Tensor, e_q: torch.Tensor) -> torch.Tensor:
    """e_p, e_q (..., C) -> (...): 1 - 2 / (1 + exp(squared L2 distance))."""
    todo("the squared L2 distance over the last axis, then the formula")
''', tags=["exercise"])
code(r'''
if SOLUTIONS:
    def my_distance(e_p: torch.Tensor, e_q: torch.Tensor) -> torch.Tensor:
        """e_p, e_q (..., C) -> (...): 1 - 2 / (1 + exp(squared L2 distance))."""
        d2 = ((e_p - e_q) ** 2).sum(-1)
        return 1 - 2 / (1 + torch.exp(d2))
''', tags=["solution"])
code(r'''
distance_mistakes = {
    "you used the L2 norm, not its square": lambda a, b: 1 - 2 / (1 + torch.exp(((a - b) ** 2).sum(-1).sqrt())),
    "sigmoid(d2) without the (x - 0.5) * 2 rescaling": lambda a, b: torch.sigmoid(((a - b) ** 2).sum(-1)),
    "1 - exp(-d2) is another distance": lambda a, b: 1 - torch.exp(-((a - b) ** 2).sum(-1)),
}
g = torch.Generator().manual_seed(0)
checks["exercise_distance"] = exercises.check(
    "distance", my_distance, feelvos.distance,
    [(torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)),
     (torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))],
    mistakes=distance_mistakes,
    random_cases=lambda rng: (torch.from_numpy(rng.normal(size=(2, 3, 6))), torch.from_numpy(rng.normal(size=(2, 3, 6)))))
''')
md(r'''
### 2.3 Global matching to the first frame

For each object $o$ (background included) and each pixel $p$ of frame $t$:
$G_o(p) = \min_{q \in \mathcal{P}_{0,o}} d(p, q)$ over the first frame's pixels of $o$. Built here with
the full distance matrix (one object at a time), checked against the library's chunked version.
''')
code(r'''
def my_global_matching(emb_t, emb_0, labels_0, n_objects):
    """emb_t, emb_0 (C, h, w); labels_0 (h, w) -> (K, h, w)."""
    C, h, w = emb_t.shape
    d = my_distance(emb_t.reshape(C, -1).T[:, None], emb_0.reshape(C, -1).T[None])   # (hw, hw)
    out = torch.ones(n_objects, h * w, dtype=emb_t.dtype)
    for o in range(n_objects):
        mask = labels_0.flatten() == o
        if mask.any():
            out[o] = d[:, mask].amin(1)
    return out.view(n_objects, h, w)


K = 1 + max(seq.object_ids)
labels_small = feelvos.labels_to_grid(torch.from_numpy(seq.masks().astype(np.int64)).to(device), emb.shape[-2:])
t_demo = len(seq) // 2
try:
    mine = my_global_matching(emb[t_demo].cpu(), emb[0].cpu(), labels_small[0].cpu(), K)
    with torch.no_grad():
        library = model0.global_map(emb[t_demo:t_demo + 1], emb[:1], labels_small[:1], K)[0].cpu()
    torch.testing.assert_close(mine, library, atol=1e-5, rtol=0)
    checks["global_matching_matches_library"] = True
except NotImplementedError:
    print("write my_distance first (exercise 1)")
print("global map", tuple(library.shape) if "library" in dir() else "-")
''')
md(r'''
### 2.4 Local matching to the previous frame

$L_o(p) = \min d(p, q)$ over the previous frame's pixels $q$ of object $o$ with
$\lVert p - q\rVert_\infty \le k$ (1 where there is none). **Exercise 2**: write it with one shifted
copy of the previous frame per offset $(dy, dx)$ (no loop over pixels).
''')
code(r'''
def my_local_matching(emb_t, emb_prev, labels_prev, n_objects, k):
    """emb_t, emb_prev (C, h, w); labels_prev (h, w) long -> (K, h, w)."""
    todo("pad emb_prev and labels_prev by k (labels with an id that is no object), loop over the (2k+1)^2 "
         "offsets, compute the distance to the shifted previous frame and keep, per object, the minimum")
''', tags=["exercise"])
code(r'''
if SOLUTIONS:
    def my_local_matching(emb_t, emb_prev, labels_prev, n_objects, k):
        """emb_t, emb_prev (C, h, w); labels_prev (h, w) long -> (K, h, w)."""
        C, h, w = emb_t.shape
        prev = F.pad(emb_prev, (k, k, k, k))                                     # (C, h+2k, w+2k)
        labels = F.pad(labels_prev, (k, k, k, k), value=-1)                       # off-image: no object
        out = torch.ones(n_objects, h, w, dtype=emb_t.dtype)
        for dy in range(2 * k + 1):
            for dx in range(2 * k + 1):
                d = 1 - 2 / (1 + torch.exp(((emb_t - prev[:, dy:dy + h, dx:dx + w]) ** 2).sum(0)))   # (h, w)
                lab = labels[dy:dy + h, dx:dx + w]
                for o in range(n_objects):
                    out[o] = torch.where(lab == o, torch.minimum(out[o], d), out[o])
        return out
''', tags=["solution"])
code(r'''
def local_reference(emb_t, emb_prev, labels_prev, n_objects, k):
    return feelvos.local_matching(emb_t[None], emb_prev[None], labels_prev[None], n_objects, window=k)[0]


def window_too_small(emb_t, emb_prev, labels_prev, n_objects, k):     # range(-k + 1, k) instead of range(-k, k + 1)
    return local_reference(emb_t, emb_prev, labels_prev, n_objects, max(k - 1, 0))


def random_local_case(rng):
    h, w = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    return (torch.from_numpy(rng.normal(size=(4, h, w))), torch.from_numpy(rng.normal(size=(4, h, w))),
            torch.from_numpy(rng.integers(0, 3, (h, w))), 3, int(rng.integers(1, 3)))


checks["exercise_local"] = exercises.check(
    "local matching", my_local_matching, local_reference,
    [(emb[t_demo].double().cpu(), emb[t_demo - 1].double().cpu(), labels_small[t_demo - 1].cpu(), K, 2)],
    mistakes={"your window is one position too small (k - 1)": window_too_small},
    random_cases=random_local_case, atol=1e-6)
''')
md(r'''
### 2.5 The dynamic segmentation head

For each object the head sees $[$features, $G_o$, $L_o$, previous probability of $o]$ — the same
weights for every object — and outputs one logit; the logits of all objects are softmaxed. Below: the
head run object by object equals the library's batched call.
''')
code(r'''
with torch.no_grad():
    prev_prob = feelvos.one_hot(labels_small[t_demo - 1:t_demo], K)
    g_map = model0.global_map(emb[t_demo:t_demo + 1], emb[:1], labels_small[:1], K)
    l_map = model0.local_map(emb[t_demo:t_demo + 1], emb[t_demo - 1:t_demo], labels_small[t_demo - 1:t_demo], K)
    per_object = torch.cat([model0.head(torch.cat([features[t_demo:t_demo + 1], g_map[:, o:o + 1], l_map[:, o:o + 1],
                                                   prev_prob[:, o:o + 1]], 1)) for o in range(K)], 1)   # (1, K, h, w)
    batched = model0.head_logits(features[t_demo:t_demo + 1], [g_map, l_map, prev_prob])
torch.testing.assert_close(per_object, batched, atol=1e-5, rtol=1e-5)
checks["head_matches_library"] = True
print("logits", tuple(batched.shape), "-> softmax across objects sums to", float(batched.softmax(1).sum(1).mean()))
''')
md(r'''
## 3. Training

### 3.1 Samples and the bootstrapped loss

A sample is a random **reference** frame and two adjacent frames (previous, current) of one video;
the previous frame's **ground truth** is used for local matching and as the previous prediction. The
loss is cross-entropy over the hardest `top_k_percent` pixels, the kept share falling linearly from
100% to 15% over `hard_mining_steps`.
''')
code(r'''
train_data = recipe.train_dataset(main_cfg)
batch = default_collate([train_data[i] for i in range(4)])
print("indices (ref, prev, cur):", batch["index"].tolist(), " objects:", batch["n_objects"].tolist())
seed_everything(SEED)
net = recipe.build_model(main_cfg)
out = net(batch["ref"], batch["ref_mask"], batch["prev"], batch["prev_mask"], batch["cur"],
          n_objects=int(batch["n_objects"].max()),
          valid=torch.arange(int(batch["n_objects"].max()))[None] < batch["n_objects"][:, None])
pixel_ce = F.cross_entropy(out["logits"], batch["cur_mask"], ignore_index=255, reduction="none").flatten()
pixel_ce = pixel_ce[(batch["cur_mask"] != 255).flatten()].sort(descending=True).values
by_hand = {f: pixel_ce[:int(np.ceil(f * len(pixel_ce)))].mean() for f in (1.0, 0.15)}
for f, v in by_hand.items():
    torch.testing.assert_close(v, feelvos.bootstrapped_cross_entropy(out["logits"], batch["cur_mask"], f))
seed_everything(SEED)
net2 = recipe.build_model(main_cfg)
torch.testing.assert_close(feelvos.training_step(net2, batch, main_cfg)["loss"], by_hand[1.0])   # step 0: all pixels
checks["loss_matches_library"] = True
steps_axis = np.arange(0, 2 * model0.cfg.hard_mining_steps + 1)
plt.figure(figsize=(5, 2.4))
plt.plot(steps_axis, [feelvos.hard_pixel_fraction(s, model0.cfg.top_k_percent,
                                                  model0.cfg.hard_mining_steps) for s in steps_axis])
plt.xlabel("step"); plt.ylabel("share of pixels in the loss"); plt.title("bootstrapping phased in")
plt.tight_layout(); plt.show()
''')
md(r'''
### 3.2 Training with the library loop

`recipe.load_or_train` runs `recipe.train` (sampler, loss, Adam + poly schedule, `voslab.engine.fit`)
and caches the weights.
''')
code(r'''
with Timer() as timer:
    model, history = load_or_train(main_cfg, validate=recipe.validator(main_cfg, n_samples=32),
                                   validate_every=max(1, STEPS // 5))
timings["train_or_load"] = timer.seconds
train_seconds = history.seconds
print(f"training took {train_seconds:.1f} s ({STEPS} steps)")
if len(history):
    display(viz.plot_curves(history, keys=["loss", "val_loss", "acc", "val_acc"], smoothing=0.6,
                            title="FEELVOS training: bootstrapped CE and pixel accuracy"))
''')
md(r'''
## 4. Evaluation: DAVIS-2017 semi-supervised $\mathcal{J}\&\mathcal{F}$

`recipe.predict_sequence` is FEELVOS's online protocol: frame by frame, embeddings of the first
frame kept, the previous frame's embeddings and prediction carried forward.
''')
code(r'''
def evaluate(net, config: dict, predict_fn=None) -> dict:
    """-> {"J&F": mean over videos, "per_video": {scenario/name: J&F averaged over objects}, "seconds"}."""
    fn = predict_fn or functools.partial(recipe.predict_sequence, cfg=config)
    per_video, start = {}, time.perf_counter()
    for scenario, videos in val_splits.items():
        res, _ = inference.evaluate_model(net, videos, fn, recipe.protocol(), progress=False)
        for name in {r["sequence"] for r in res.rows}:
            per_video[f"{scenario}/{name}"] = float(np.mean([r["J&F-Mean"] for r in res.rows if r["sequence"] == name]))
    return {"J&F": float(np.mean(list(per_video.values()))), "per_video": per_video,
            "seconds": time.perf_counter() - start}


with Timer() as timer:
    main_scores = evaluate(model, main_cfg)
timings["evaluate"] = timer.seconds
by_scenario = stats.per_scenario([main_scores["per_video"]], scenario_of)
print(f"FEELVOS J&F {main_scores['J&F']:.3f} over {len(main_scores['per_video'])} val videos")
for sc, v in by_scenario.items():
    print(f"  {sc:<20} {v['mean']:.3f} ({v['n_videos']} videos)")
worst = min(main_scores["per_video"], key=main_scores["per_video"].get)
for label, (sc, seq) in (("seeded random draw", ("identical_instances", demo["identical_instances"])),
                         ("worst video", (worst.split("/")[0], val_splits[worst.split("/")[0]][worst.split("/")[1]]))):
    pred = inference.predict(model, seq, functools.partial(recipe.predict_sequence, cfg=main_cfg))
    print(f"{label}: {sc}/{seq.name}  J&F {main_scores['per_video'][f'{sc}/{seq.name}']:.3f}")
    display(viz.compare(seq.frames(), pred, seq.masks()))
''')
md(r'''
## 5. What the matchings see

### 5.1 Global vs local distance maps (the paper's Figure 2)

For one object of the demo video: the global map (distance to the first frame's object pixels) finds
every copy — noisy, with false positives on the look-alike instances — while the local map (previous
frame, window $k$) is sharp around the object. One colour scale, ground-truth outline in white.
''')
code(r'''
seq = demo["identical_instances"]
given = feelvos.given_masks(seq)
run = feelvos.predict_video(model, seq.frames(), given, window=main_cfg["model"]["window"], return_maps=True)
obj = seq.object_ids[0]
t_show = len(seq) // 2
gt = seq.masks()[t_show] == obj
fig, axes = plt.subplots(1, 3, figsize=(12, 2.8))
axes[0].imshow(viz.overlay(seq.frame(t_show), seq.masks()[t_show])); axes[0].set_title(f"frame {t_show}, ground truth")
for ax, key in zip(axes[1:], ("global", "local")):
    heat = F.interpolate(run[key][t_show:t_show + 1, obj:obj + 1], size=seq.size, mode="nearest")[0, 0]
    im = ax.imshow(heat, vmin=0, vmax=1, cmap="viridis")
    ax.contour(gt, levels=[0.5], colors="white", linewidths=1)
    ax.set_title(f"{key} distance to object {obj}")
fig.colorbar(im, ax=axes[1:], shrink=0.8)
plt.show()
small_gt = feelvos.labels_to_grid(torch.from_numpy(seq.masks().astype(np.int64)), run["global"].shape[-2:])
on, off = small_gt[1:] == obj, (small_gt[1:] != obj) & (small_gt[1:] > 0)   # the object vs the other copies
map_stats = {key: {"on object": float(run[key][1:, obj][on].mean()),
                   "on other instances": float(run[key][1:, obj][off].mean()) if off.any() else float("nan")}
             for key in ("global", "local")}
for key, v in map_stats.items():
    print(f"{key:<6} mean distance to object {obj}: on it {v['on object']:.3f}, on the other copies {v['on other instances']:.3f}")
''')
md(r'''
### 5.2 The embedding space, and nearest-neighbour assignment (PML) vs the head

Left: the embeddings' first three principal components as RGB. Middle: each pixel assigned to the
object with the smallest global distance (what PML does); right: the head's prediction. Then over
the val split: J&F of the nearest-neighbour assignment vs FEELVOS.
''')
code(r'''
with torch.no_grad():
    _, e = model.embed(to_image_tensor(seq.frames()[t_show:t_show + 1], device))       # (1, C, h, w)
flat = e[0].flatten(1).T.cpu()                                                            # (hw, C)
flat = flat - flat.mean(0)
_, _, V = torch.pca_lowrank(flat, q=3, center=False)
rgb = (flat @ V[:, :3]).view(*e.shape[-2:], 3)
rgb = ((rgb - rgb.amin((0, 1))) / (rgb.amax((0, 1)) - rgb.amin((0, 1)) + 1e-8)).numpy()
nn_pred = run["global"][t_show].argmin(0)
fig, axes = plt.subplots(1, 3, figsize=(12, 2.8))
axes[0].imshow(rgb); axes[0].set_title("embedding PCA (RGB)")
axes[1].imshow(viz.overlay(seq.frame(t_show), F.interpolate(nn_pred[None, None].float(), size=seq.size)[0, 0].long()))
axes[1].set_title("nearest neighbour (global, PML-like)")
axes[2].imshow(viz.overlay(seq.frame(t_show), run["masks"][t_show])); axes[2].set_title("FEELVOS head")
plt.show()


@torch.no_grad()
def predict_nearest_neighbour(net, seq, config):
    out = feelvos.predict_video(net, seq.frames(), feelvos.given_masks(seq), return_maps=True)
    labels = out["global"].argmin(1)                                                      # (T, h, w)
    masks = F.interpolate(labels[:, None].float(), size=seq.size, mode="nearest")[:, 0].numpy().astype(np.uint8)
    masks[0] = out["masks"][0]
    return masks


nn_scores = evaluate(model, main_cfg, functools.partial(predict_nearest_neighbour, config=main_cfg))
print(f"nearest-neighbour assignment J&F {nn_scores['J&F']:.3f} vs FEELVOS head {main_scores['J&F']:.3f}")
''')
md(r'''
## 6. Does each matching matter? The ablation, with confidence intervals

Same preset and schedule (`ABLATION_STEPS`) for every run: both matchings, global only, local only
(each over `ABLATION_SEEDS`), and without the previous-prediction input (first seed). The verdict
comes from `stats.paired_effect`: per-video differences averaged over seeds, a 95% bootstrap interval
over the val videos, overall and per scenario.
''')
code(r'''
ablation_runs: dict[str, dict] = {}
VARIANTS = {"both": {}, "global only": {"use_local": False}, "local only": {"use_global": False},
            "no previous prediction": {"use_prev": False}}


def run_variant(variant: str, seed: int) -> None:
    config = variant_config(ABLATION_STEPS, **VARIANTS[variant])
    net, hist = load_or_train(config, seed=seed)
    scored = evaluate(net, config)
    ablation_runs[f"{variant} seed {seed}"] = {"variant": variant, "seed": seed, "J&F-Mean": scored["J&F"],
                                               "train_seconds": hist.seconds, "per_video": scored["per_video"]}


with Timer() as timer:
    for seed in ABLATION_SEEDS:
        for variant in ("both", "global only", "local only"):
            run_variant(variant, seed)
    run_variant("no previous prediction", ABLATION_SEEDS[0])
timings["ablation"] = timer.seconds
for label, r in ablation_runs.items():
    print(f"{label:<30} J&F {r['J&F-Mean']:.3f}  ({r['train_seconds']:.1f} s)")
''')
code(r'''
def per_seed(variant: str, seeds=None) -> list[dict]:
    return [r["per_video"] for r in ablation_runs.values() if r["variant"] == variant
            and (seeds is None or r["seed"] in seeds)]


comparisons = {
    "both vs global only (local matching)": (per_seed("both"), per_seed("global only")),
    "both vs local only (global matching)": (per_seed("both"), per_seed("local only")),
    "both vs no previous prediction": (per_seed("both", ABLATION_SEEDS[:1]), per_seed("no previous prediction")),
}
effects = {}
for name, (a, b) in comparisons.items():
    effects[name] = stats.paired_effect(a, b, seed=SEED)
    for sc, eff in stats.per_scenario_effects(a, b, scenario_of, seed=SEED).items():
        effects[f"{name} [{sc}]"] = eff
for name, effect in effects.items():
    print(f"{name:<60} {effect.describe()}")
''')
md(r'''
### 6.1 Window size $k$: accuracy vs time

The main model evaluated with other local windows (trained with the preset's $k$; the other values
are an inference-time change, so they also measure how far the head generalises).
''')
code(r'''
window_sweep = {}
ks = sorted({0, 1, 2, main_cfg["model"]["window"], 2 * main_cfg["model"]["window"]})
for k in ks:
    config = copy.deepcopy(main_cfg)
    config["eval"]["window"] = k
    scored = evaluate(model, config)
    n_frames = sum(len(s) for _, s in val_list)
    window_sweep[k] = {"J&F": scored["J&F"], "ms_per_frame": 1000 * scored["seconds"] / n_frames}
    print(f"k = {k:>2}: J&F {scored['J&F']:.3f}, {window_sweep[k]['ms_per_frame']:.1f} ms/frame (incl. scoring)")
fig, ax = plt.subplots(1, 2, figsize=(9, 2.6))
ax[0].plot(ks, [window_sweep[k]["J&F"] for k in ks], "o-"); ax[0].set(xlabel="k", ylabel="J&F")
ax[1].plot(ks, [window_sweep[k]["ms_per_frame"] for k in ks], "o-"); ax[1].set(xlabel="k", ylabel="ms / frame")
plt.tight_layout(); plt.show()
''')
md(r'''
## 7. Change one thing, predict, then measure

Each experiment changes the trained model's inference and re-scores the val split. **Before running**,
write in `MY_PREDICTIONS` whether J&F goes "up", "down" or stays the "same" (within 0.01).

* 7.1: the previous prediction fed to the head is replaced by zeros.
* 7.2: the global reference is the **previous** frame's prediction instead of the first frame.
''')
code(r'''
MY_PREDICTIONS = {"7.1 zero previous prediction": None, "7.2 previous frame as global reference": None}
''', tags=["prediction"])
code(r'''
for experiment, guess in MY_PREDICTIONS.items():
    exercises.predict(experiment, guess, choices=("up", "down", "same"))
''')
code(r'''
class ZeroPrev(torch.nn.Module):
    """Wraps a FEELVOS model: the head's last input map (previous probability) set to zero."""

    def __init__(self, net):
        super().__init__()
        self.net, self.cfg = net, net.cfg

    def embed(self, x):
        return self.net.embed(x)

    def global_map(self, *a, **k):
        return self.net.global_map(*a, **k)

    def local_map(self, *a, **k):
        return self.net.local_map(*a, **k)

    def head_logits(self, features, maps, valid=None):
        return self.net.head_logits(features, [*maps[:-1], torch.zeros_like(maps[-1])], valid)


@torch.no_grad()
def predict_previous_reference(net, seq, config):
    """Online inference where the global reference of frame t is frame t-1 with its prediction."""
    frames, given = seq.frames(), feelvos.given_masks(seq)
    masks = [given[0]]
    for t in range(1, len(seq)):
        out = feelvos.predict_video(net, frames[t - 1:t + 1], {0: masks[-1]}, window=config["model"]["window"])
        masks.append(out["masks"][1])
    return np.stack(masks)


with Timer() as timer:
    experiments = {"as trained": main_scores["J&F"],
                   "7.1 zero previous prediction": evaluate(ZeroPrev(model).eval(), main_cfg)["J&F"],
                   "7.2 previous frame as global reference":
                       evaluate(model, main_cfg, functools.partial(predict_previous_reference, config=main_cfg))["J&F"]}
timings["experiments"] = timer.seconds
for name, value in experiments.items():
    print(f"{name:<42} J&F {value:.3f} ({value - experiments['as trained']:+.3f})")
for name in MY_PREDICTIONS:
    change = experiments[name] - experiments["as trained"]
    exercises.reveal(name, change, "up" if change > 0.01 else "down" if change < -0.01 else "same")
''')
md(r'''
## 8. Real video (the `real` preset)

The `real` preset trains FEELVOS with a frozen ImageNet MobileNetV2 on DAVIS-2016 frames at 240p (one
object per video) and scores the held-out sequences. Off by default here (`REAL=False`): it takes up to
30 minutes on 2 cores the first time (`voslab train feelvos --preset real` caches it).
''')
code(r'''
real_scores = {}
if REAL in (True, "auto"):
    from voslab import presets                                                    # noqa: E402 (section 8 only)
    real_cfg = presets.get("feelvos", "real")
    if PRESET == "smoke":
        real_cfg["train"]["steps"] = 4
    real_model, _ = load_or_train(real_cfg)
    for name, videos in feelvos.scenario_splits(real_cfg, "val", DATA_ROOT).items():
        res, _ = inference.evaluate_model(real_model, videos, functools.partial(recipe.predict_sequence, cfg=real_cfg),
                                          recipe.protocol(), progress=False)
        real_scores = {r["sequence"]: r["J&F-Mean"] for r in res.rows}
        print(res.to_markdown())
else:
    print("section 8 skipped (REAL=False)")
''')
md(r'''
## Summary

* FEELVOS segments all objects of a frame in one pass: embeddings once per frame, two distance maps
  per object, a head shared across objects, a softmax across objects.
* Global matching finds an object anywhere (and its look-alikes); local matching follows it from the
  previous frame; the ablation above says, with intervals, which one each scenario needs at this scale.
* Not reproduced here: the Xception-65 backbone, 200k steps on 16 GPUs, the reference frame's own
  augmentation (one crop for the three frames here), identity-initialised embedding head.
''')
code(r'''
print(f"preset {PRESET}: FEELVOS J&F {main_scores['J&F']:.3f} on {len(main_scores['per_video'])} val videos; "
      f"timings {({k: round(v, 1) for k, v in timings.items()})}")
''')
code(r'''
notebook.save_results(OUTPUT_DIR, "05_feelvos", {
    "metrics": {
        "J&F-Mean": main_scores["J&F"],
        "scenario J&F-Mean": {sc: v["mean"] for sc, v in by_scenario.items()},
        "nearest-neighbour J&F-Mean": nn_scores["J&F"],
        "ablation J&F-Mean": {label: r["J&F-Mean"] for label, r in ablation_runs.items()},
        "window sweep": {str(k): v for k, v in window_sweep.items()},
        "experiments J&F-Mean": experiments,
        **({"real": real_scores} if real_scores else {}),
    },
    "effects": {name: effect.as_dict() for name, effect in effects.items()},
    "verdicts": {name: effect.describe() for name, effect in effects.items()},
    "per_video": {"main": main_scores["per_video"], **{label: r["per_video"] for label, r in ablation_runs.items()}},
    "analysis": {"distance_maps": {k: {kk: (None if np.isnan(vv) else vv) for kk, vv in v.items()} for k, v in map_stats.items()}},
    "timings": timings,
    "train_seconds": {"main": train_seconds, **{label: r["train_seconds"] for label, r in ablation_runs.items()}},
    "checks": checks,
    "schedule": {"steps": STEPS, "ablation_steps": ABLATION_STEPS, "ablation_seeds": ABLATION_SEEDS},
    "config": main_cfg,
})
''')

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                          "name": "python3"}, "language_info": {"name": "python"}})
nbformat.write(nb, Path(__file__).with_name("05_feelvos.ipynb"))
