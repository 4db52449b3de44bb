"""Builds notebooks/04_agss.ipynb (run: python notebooks/build_04_agss.py; then nbstripout)."""
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
# 04 · AGSS-VOS: attention-guided single-shot video object segmentation

> Huaijia Lin, Xiaojuan Qi, Jiaya Jia. **AGSS-VOS: Attention Guided Single-Shot Video Object
> Segmentation.** ICCV 2019. Official code: `dvlab-research/AGSS-VOS` (PyTorch 0.4, FlowNet2-C).

*Semi-supervised*, *many objects*. Methods such as RGMP or OSVOS segment one object at a time: a
video with $K$ objects costs $K$ forward passes, and the objects never compete for a pixel. AGSS-VOS
segments **all objects in one pass** (the paper's abstract: "a single forward pass ... for all
instances", its time stays nearly flat in $K$):

1. an **instance-agnostic module**: the shared encoder reads [current frame, the *merged* previous
   mask of all objects, warped by optical flow] and [first frame, its merged mask], and a global
   convolution + refinement decoder gives a map $m_3$ of "foreground of any object" at 1/8 — once per
   frame, whatever $K$;
2. an **instance-specific module**: the encoder's first stage reads [frame, *this* object's warped
   mask] (the $K$ objects batched) and an attention generator turns it into an attention map
   $a_k$ at 1/8;
3. an **attention-guided decoder**: $m_3 \odot a_k$ refined with the object's 1/4 features gives
   $p_k$, each object's foreground probability; a **soft aggregation** makes the objects compete:
   $q_k = \frac{o_k}{o_{bg} + \sum_j o_j}$, $o = \frac{p}{1-p}$, $p_{bg} = 1 - \max_k p_k$;
4. training on clips with a **soft IoU loss**, each frame reading its own (warped) previous
   prediction, or the ground truth when that prediction's IoU is below 0.5.

FlowNet2 is replaced by OpenCV's DIS flow (estimated, the default); the synthetic ground-truth flow
appears only in rows labelled **oracle**. Scenarios: `many_objects` (4-10 small objects: where the
single shot's speed matters and objects must be told apart), `identical_instances` (copies of one
object: only the warped previous mask says which is which) and `occlude_reappear` (an object passes
behind an occluder: its warped mask vanishes and must be found again).
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
from voslab.data.transforms import to_image_tensor
from voslab.exercises import todo
from voslab.models import agss
from voslab.utils import Timer, seed_everything, select_device

voslab.require(">=0.1")
''')
md(r'''
## Parameters

The next cell is tagged `parameters`: literals only, so papermill can override them
(`papermill 04_agss.ipynb out.ipynb -p PRESET smoke`). `None`/`"auto"` take the preset's value.
''')
code(r'''
PRESET = "auto"         # smoke | cpu | gpu; auto: $VOSLAB_PRESET, else cpu
SEED = 0                # seed of the main model (initial weights, batch order) and of every seeded draw
DEVICE = "auto"         # auto | cpu | cuda
CKPT = "auto"           # auto: reuse the cached weights of an identical run, else train; retrain: always train; or a folder
OUTPUT_DIR = None       # where 04_agss.json goes; None: $VOSLAB_OUTPUT_DIR, else outputs
INTERACTIVE = None      # None: sliders in a live Jupyter kernel, static figures elsewhere
SOLUTIONS = True        # False: the exercise cells stay stubs for you to fill in (the notebook still runs)
STEPS = None            # training steps of the main model; None: the preset's
ABLATION_STEPS = None   # training steps of each ablation run; None: the preset's ablation_steps
ABLATION_SEEDS = None   # seeds of the attention on/off runs; None: the preset's ablation_seeds
REAL = False            # section 8, real DAVIS video: True or False
DATA_ROOT = None        # a DAVIS-2016-layout folder for section 8; None: the shared 240p copy
''', tags=["parameters"])
code(r'''
P = notebook.resolve(globals(), model="agss")
cfg = P.config                                      # the preset (a copy): "data", "model", "train", "eval"
ABLATION_STEPS = int(ABLATION_STEPS or STEPS)
ABLATION_SEEDS = [int(s) for s in (ABLATION_SEEDS or [SEED])]
device = select_device(DEVICE)
recipe = zoo.get("agss")                            # build_model, train_dataset, training_step, predict_sequence
timings: dict[str, float] = {}
checks: dict[str, bool] = {}


def variant_config(steps: int, **model) -> dict:
    """The preset with one schedule and some model options changed (with the seed: the cache key)."""
    config = copy.deepcopy(cfg)
    config["train"]["steps"] = int(steps)
    config["model"].update(model)
    return config


def load_or_train(config: dict, seed: int = SEED, **fit_kwargs):
    """-> (model in eval mode on `device`, History): `recipe.train` (= `voslab train agss`) unless cached."""
    cache = None if CKPT in ("auto", "retrain") else CKPT
    model, history = recipe.load_or_train(config, seed=seed, cache=cache, force=CKPT == "retrain",
                                          device=device, **fit_kwargs)
    return model.to(device).eval(), history


main_cfg = variant_config(ABLATION_STEPS)           # the main model is the ablation's "attention on", seed SEED
print(f"device {device}; main model {ABLATION_STEPS} steps; ablation {ABLATION_STEPS} steps x seeds {ABLATION_SEEDS}")
print("model:", main_cfg["model"])
''')
md(r'''
## 1. The data: many objects, identical instances, occlusion

`agss.scenario_splits` splits the preset's train and val videos evenly over the three scenarios.
''')
code(r'''
with Timer() as timer:
    val_splits = agss.scenario_splits(cfg, "val")                     # {scenario: DAVIS}
    train_splits = agss.scenario_splits(cfg, "train")
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
## 2. Building AGSS-VOS step by step

### 2.1 The previous mask, warped by optical flow

The previous frame's per-object masks are brought onto the current frame with the **backward** flow
of the current frame (current -> previous): $\tilde M_{t-1}(p) = M_{t-1}(p + f_{t\to t-1}(p))$.
DIS estimates it from the two frames; the synthetic set also stores the true flow (an oracle).
''')
code(r'''
seq = demo["many_objects"]
frames_t = to_image_tensor(seq.frames(), device)                     # (T, 3, H, W)
K_demo = max(seq.object_ids)
gt_onehot = agss.one_hot(torch.from_numpy(seq.masks().astype(np.int64)).to(device), K_demo)   # (T, K, H, W)
t_show = len(seq) // 2
warped_dis, flow_dis = agss.warp_previous(gt_onehot[t_show - 1:t_show], frames_t[t_show:t_show + 1],
                                          frames_t[t_show - 1:t_show], "dis")
gt_flow = torch.from_numpy(seq.flow(t_show, "backward")).permute(2, 0, 1)[None].to(device)
warped_gt, _ = agss.warp_previous(gt_onehot[t_show - 1:t_show], frames_t[t_show:t_show + 1],
                                  frames_t[t_show - 1:t_show], "gt", gt_flow)
target = gt_onehot[t_show:t_show + 1]


def soft_iou(a, b):
    return float((a * b).sum() / (a + b - a * b).sum().clamp(min=1e-6))


warp_iou = {"previous mask, unwarped": soft_iou(gt_onehot[t_show - 1:t_show], target),
            "warped with DIS flow": soft_iou(warped_dis, target), "warped with true flow (oracle)": soft_iou(warped_gt, target)}
fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
axes[0].imshow(viz.overlay(seq.frame(t_show), seq.masks()[t_show])); axes[0].set_title(f"frame {t_show}, ground truth")
for ax, (name, m) in zip(axes[1:], [("previous mask, unwarped", gt_onehot[t_show - 1:t_show]),
                                    ("warped with DIS flow", warped_dis), ("warped with true flow (oracle)", warped_gt)]):
    im = ax.imshow(m[0].amax(0).cpu(), vmin=0, vmax=1, cmap="magma")
    ax.contour(seq.masks()[t_show] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(f"{name}\nsoft IoU {warp_iou[name]:.2f}")
fig.colorbar(im, ax=axes[1:], shrink=0.8); plt.show()
''')
md(r'''
### 2.2 The shared encoder and the two modules

The encoder is a backbone with one extra input: a 7x7 stride-2 convolution of the mask added to the
first convolution's output. Below the library's modules run on the demo frame; then the
attention-guided decoder is rebuilt by hand for each object and checked against the library's
single pass over all $K$ objects (`torch.testing.assert_close`).
''')
code(r'''
seed_everything(SEED)
model0 = recipe.build_model(main_cfg).to(device).eval()              # untrained
image, prev = frames_t[t_show:t_show + 1], warped_dis                  # (1, 3, H, W), (1, K, H, W)
with torch.no_grad():
    merged = prev.amax(1, keepdim=True)                                                     # (1, 1, H, W)
    ref = model0.reference(frames_t[:1], gt_onehot[:1].amax(1, keepdim=True))              # (1, C_out, H/8, W/8)
    m3 = model0.agnostic(image, merged, ref)                                                # (1, F, H/8, W/8)
    r2, atn = model0.specific(image, prev)                                                  # (K, C4, H/4, W/4), (K, F, H/8, W/8)
    library = model0(image, prev, ref)
    by_hand = []
    for k in range(K_demo):
        r2_k = model0.encoder(image, prev[:, k:k + 1], upto="s4")["s4"]                    # this object's res2
        a_k = model0.attention(torch.cat([r2_k, F.interpolate(prev[:, k:k + 1], size=r2_k.shape[-2:],
                                                                mode="bilinear", align_corners=False)], 1))
        x = model0.refine2(r2_k, m3 * a_k)                                                  # attention-guided
        logits = F.interpolate(model0.predict(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
        by_hand.append(logits.softmax(1)[:, 1])
    by_hand = torch.stack(by_hand, 1)                                                       # (1, K, H, W)
torch.testing.assert_close(by_hand, library["raw"], atol=1e-5, rtol=1e-5)
checks["decoder_matches_library"] = True
print(f"m3 {tuple(m3.shape)}, r2_obj {tuple(r2.shape)}, attention {tuple(atn.shape)} -> p {tuple(library['raw'].shape)}")
''')
md(r'''
### 2.3 Soft aggregation (exercise 1)

$p_{bg} = 1-\max_k p_k$; clamp every probability to $[10^{-7}, 1-10^{-7}]$; odds $o = p/(1-p)$;
$q_i = o_i / \sum_{j \in \{bg, 1..K\}} o_j$. Write it for `p` of shape `(B, K, H, W)`, returning
`(B, 1 + K, H, W)` with the background first.
''')
code(r'''
def my_soft_aggregate(p: torch.Tensor) -> torch.Tensor:
    """p (B, K, H, W) in [0, 1] -> (B, 1 + K, H, W), background first, summing to 1 per pixel."""
    todo("the background probability, the clamp, the odds, then normalise the odds")
''', tags=["exercise"])
code(r'''
if SOLUTIONS:
    def my_soft_aggregate(p: torch.Tensor) -> torch.Tensor:
        """p (B, K, H, W) in [0, 1] -> (B, 1 + K, H, W), background first, summing to 1 per pixel."""
        probs = torch.cat([1 - p.amax(1, keepdim=True), p], 1).clamp(1e-7, 1 - 1e-7)
        odds = probs / (1 - probs)
        return odds / odds.sum(1, keepdim=True)
''', tags=["solution"])
code(r'''
def _agg(p, bg_fn, use_odds=True):
    probs = torch.cat([bg_fn(p), p], 1).clamp(1e-7, 1 - 1e-7)
    odds = probs / (1 - probs) if use_odds else probs
    return odds / odds.sum(1, keepdim=True)


aggregation_mistakes = {
    "you normalised the probabilities, not the odds p / (1 - p)": lambda p: _agg(p, lambda q: 1 - q.amax(1, keepdim=True), False),
    "the background is 1 - max_k p_k, not 1 - sum_k p_k": lambda p: _agg(p, lambda q: (1 - q.sum(1, keepdim=True))),
    "the background is 1 - max_k p_k, not 1 - mean_k p_k": lambda p: _agg(p, lambda q: 1 - q.mean(1, keepdim=True)),
}
checks["exercise_soft_aggregation"] = exercises.check(
    "soft aggregation", my_soft_aggregate, agss.soft_aggregate,
    [torch.tensor([0.8, 0.4, 0.1], dtype=torch.float64).view(1, 3, 1, 1),
     torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1)],
    mistakes=aggregation_mistakes,
    random_cases=lambda rng: torch.from_numpy(rng.random((2, int(rng.integers(1, 5)), 3, 4))), atol=1e-9)
''')
md(r'''
### 2.4 The loss and one training step (exercise 2)

Per object, a **soft IoU** between the aggregated probability $q$ and the mask $y$:
$\mathcal{L} = 1 - \frac{\sum q y}{\sum (q + y - q y)}$, averaged over the objects. (The official
code's default is $1 - \sum\min(q,y)/\sum\max(q,y)$: `iou_loss="maxmin"`.) Write the soft form for
`(B, K, H, W)` inputs (all objects valid, no void pixels); an empty target with an empty prediction
costs 0 (add $10^{-6}$ to numerator and denominator).
''')
code(r'''
def my_iou_loss(q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """q, y (B, K, H, W) in [0, 1] -> scalar: 1 - soft IoU, per object, averaged."""
    todo("sum over the pixels per (clip, object), then 1 - intersection / union, then the mean")
''', tags=["exercise"])
code(r'''
if SOLUTIONS:
    def my_iou_loss(q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """q, y (B, K, H, W) in [0, 1] -> scalar: 1 - soft IoU, per object, averaged."""
        inter = (q * y).flatten(2).sum(-1)
        union = (q + y - q * y).flatten(2).sum(-1)
        return (1 - (inter + 1e-6) / (union + 1e-6)).mean()
''', tags=["solution"])
code(r'''
def _iou_pooled(q, y):   # one IoU over all objects pooled
    return 1 - ((q * y).sum() + 1e-6) / ((q + y - q * y).sum() + 1e-6)


checks["exercise_iou_loss"] = exercises.check(
    "soft IoU loss", my_iou_loss, agss.soft_iou_loss,
    [(torch.tensor([[[[0.9, 0.2], [0.5, 0.0]]]], dtype=torch.float64), torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64))],
    mistakes={"you pooled all objects into one IoU: average the per-object losses": _iou_pooled,
              "that is the code's max/min form, not the soft IoU": lambda q, y: agss.soft_iou_loss(q, y, kind="maxmin"),
              "you returned the IoU, not 1 - IoU": lambda q, y: 1 - agss.soft_iou_loss(q, y)},
    random_cases=lambda rng: (torch.from_numpy(rng.random((2, 3, 4, 5))), torch.from_numpy((rng.random((2, 3, 4, 5)) > 0.6) * 1.0)),
    atol=1e-9)
''')
code(r'''
train_data = recipe.train_dataset(main_cfg)
batch = default_collate([train_data[i] for i in range(2)])
print("clip", tuple(batch["frames"].shape), "objects", batch["n_objects"].tolist())
seed_everything(SEED)
net = recipe.build_model(main_cfg)
# one step by hand: reference = frame 0, frame 1 reads the warped ground truth of frame 0, later frames
# read their own warped prediction (or the ground truth below IoU 0.5); mean of the frames' losses
K_b = int(batch["n_objects"].max())
valid = torch.arange(K_b)[None] < batch["n_objects"][:, None]
y = agss.one_hot(batch["masks"], K_b)                                           # (B, T, K, H, W)
ref_b = net.reference(batch["frames"][:, 0], y[:, 0].amax(1, keepdim=True))
prev_b, losses = y[:, 0], []
for t in range(1, batch["frames"].shape[1]):
    w, _ = agss.warp_previous(prev_b, batch["frames"][:, t], batch["frames"][:, t - 1], net.cfg.flow,
                              preset=net.cfg.dis_preset)
    q = net(batch["frames"][:, t], w, ref_b, valid)["probs"]
    losses.append(agss.soft_iou_loss(q, y[:, t], valid, net.cfg.iou_loss, batch["masks"][:, t] == 255))
    iou = (((q > 0.5) & (y[:, t] > 0.5)).flatten(2).sum(-1) / ((q > 0.5) | (y[:, t] > 0.5)).flatten(2).sum(-1).clamp(min=1))
    iou = torch.where(((q > 0.5) | (y[:, t] > 0.5)).flatten(2).sum(-1) > 0, iou, torch.ones_like(iou))
    fall = (iou * valid).sum(1) / valid.sum(1) < net.cfg.fallback_iou
    prev_b = torch.where(fall[:, None, None, None], y[:, t], q.detach())
seed_everything(SEED)
net2 = recipe.build_model(main_cfg)
torch.testing.assert_close(torch.stack(losses).mean(), agss.training_step(net2, batch, main_cfg)["loss"])
checks["training_step_matches_library"] = True
print("loss of one clip, by hand = library:", torch.stack(losses).mean().item())
''')
md(r'''
## 3. Training with the library loop

`recipe.load_or_train` runs `recipe.train` (clips, soft IoU loss, Adam + poly schedule,
`voslab.engine.fit`) and caches the weights.
''')
code(r'''
with Timer() as timer:
    model, history = load_or_train(main_cfg, validate=recipe.validator(main_cfg, n_samples=8),
                                   validate_every=max(1, ABLATION_STEPS // 4))
timings["train_or_load"] = timer.seconds
train_seconds = history.seconds
print(f"training took {train_seconds:.1f} s ({ABLATION_STEPS} steps)")
if len(history):
    display(viz.plot_curves(history, keys=["loss", "val_loss", "iou", "val_iou"], smoothing=0.6,
                            title="AGSS-VOS training: soft IoU loss and IoU"))
''')
md(r'''
## 4. Evaluation: DAVIS-2017 semi-supervised $\mathcal{J}\&\mathcal{F}$

`recipe.predict_sequence` is the paper's online protocol: reference features from frame 0 once; per
frame the previous soft masks warped (DIS), one pass for all objects, label = argmax over
[0.5, object probabilities]; objects that appear later join at their first annotated frame.
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
print(f"AGSS-VOS J&F {main_scores['J&F']:.3f} over {len(main_scores['per_video'])} val videos")
for sc, v in by_scenario.items():
    print(f"  {sc:<20} {v['mean']:.3f} ({v['n_videos']} videos)")
table = sorted(main_scores["per_video"].items(), key=lambda kv: kv[1])
print("per-sequence J&F (worst first):", ", ".join(f"{k} {v:.2f}" for k, v in table[:8]), "...")
worst = table[0][0]
for label, (sc, seq) in (("seeded random draw", ("many_objects", demo["many_objects"])),
                         ("worst video", (worst.split("/")[0], val_splits[worst.split("/")[0]][worst.split("/")[1]]))):
    pred = inference.predict(model, seq, functools.partial(recipe.predict_sequence, cfg=main_cfg))
    print(f"{label}: {sc}/{seq.name}  J&F {main_scores['per_video'][f'{sc}/{seq.name}']:.3f}")
    display(viz.compare(seq.frames(), pred, seq.masks()))
''')
md(r'''
## 5. Look inside: warped masks, the two attentions, the aggregation

For the seeded `many_objects` video at frame `t_show`: the merged warped previous mask, the
instance-agnostic map (channel mean of $|m_3|$: "foreground of all objects"), each object's
attention-guided input to the decoder (the energy $\sum_c (m_{3,c}\,a_{k,c})^2$ per position: where
the attention lets $m_3$ through for object $k$; one colour scale for all objects), the normalised per-object probabilities $q_k$ and the final label map. Ground truth outlined in cyan.
''')
code(r'''
seq = demo["many_objects"]
run = agss.predict_video(model, seq.frames(), agss.given_masks(seq), model.cfg, return_maps=True)
masks_gt = seq.masks()
n_show = min(4, run["probs"].shape[1])
fig, axes = plt.subplots(2, 2 + n_show, figsize=(3 * (2 + n_show), 5.6))
axes[0, 0].imshow(viz.overlay(seq.frame(t_show), masks_gt[t_show])); axes[0, 0].set_title("ground truth")
axes[0, 1].imshow(run["warped"][t_show].amax(0), vmin=0, vmax=1, cmap="magma"); axes[0, 1].set_title("warped previous (merged)")
agn = F.interpolate(run["agnostic"][None, None, t_show], size=seq.size, mode="bilinear")[0, 0]
im0 = axes[1, 0].imshow(agn / agn.max().clamp(min=1e-8), vmin=0, vmax=1, cmap="viridis"); axes[1, 0].set_title("instance-agnostic |m3|")
axes[1, 1].imshow(viz.overlay(seq.frame(t_show), run["masks"][t_show])); axes[1, 1].set_title("final labels")
att = F.interpolate(run["guided"][t_show][None], size=seq.size, mode="bilinear")[0]
att = att / att.max().clamp(min=1e-8)
for k in range(n_show):
    im1 = axes[0, 2 + k].imshow(att[k], vmin=0, vmax=1, cmap="viridis"); axes[0, 2 + k].set_title(f"guided energy, object {k + 1}")
    im2 = axes[1, 2 + k].imshow(run["probs"][t_show, k], vmin=0, vmax=1, cmap="magma"); axes[1, 2 + k].set_title(f"q, object {k + 1}")
    for row in (0, 1):
        axes[row, 2 + k].contour(masks_gt[t_show] == k + 1, levels=[0.5], colors="cyan", linewidths=0.8)
axes[1, 0].contour(masks_gt[t_show] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
for ax in axes.flat:
    ax.axis("off")
fig.colorbar(im1, ax=axes[0, :], shrink=0.7); fig.colorbar(im2, ax=axes[1, :], shrink=0.7); plt.show()
''')
md(r'''
**In numbers, over the whole val split**: each object's map is normalised over the positions of
the frame (it sums to 1) and we take its share on object $k$ (ground truth at 1/8). For the guided
energy $\sum_c (m_{3,c} a_{k,c})^2$ this says whether the attention concentrates the decoder's input
on object $k$; next to it the same share of $m_3$'s own energy $\sum_c m_{3,c}^2$ (what the decoder
would read without the attention: all objects at once), chance (object $k$'s area share), and the
untrained model. Attention that picks its object: guided share > $m_3$ share > chance.
''')
code(r'''
def mass_share(energy: torch.Tensor, region: torch.Tensor) -> float:
    """energy (h, w) >= 0, normalised over the positions -> its share inside region (h, w) bool."""
    return float((energy * region).sum() / energy.sum().clamp(min=1e-12))


def attention_mass(net) -> dict:
    guided, agnostic, chance = [], [], []
    for _, seq in val_list:
        r = agss.predict_video(net, seq.frames(), agss.given_masks(seq), net.cfg, return_maps=True)
        gt = torch.from_numpy(seq.masks().astype(np.int64))
        small = F.interpolate(gt[:, None].float(), size=r["guided"].shape[-2:], mode="nearest")[:, 0].long()
        for t in range(1, len(seq)):
            for k in range(r["guided"].shape[1]):
                own = small[t] == k + 1
                if own.any():
                    guided.append(mass_share(r["guided"][t, k], own))
                    agnostic.append(mass_share(r["agnostic_energy"][t], own))
                    chance.append(float(own.float().mean()))
    return {"guided energy on object k": float(np.mean(guided)), "m3 energy on object k": float(np.mean(agnostic)),
            "chance (object k's area)": float(np.mean(chance))}


with Timer() as timer:
    mass = {"trained": attention_mass(model), "untrained": attention_mass(model0)}
timings["attention_mass"] = timer.seconds
for who, m in mass.items():
    print(f"{who:<10} " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
''')
md(r'''
### 5.1 A failure case with occlusion (rule: the lowest-scoring `occlude_reappear` video)

An object passes behind an occluder: its warped mask shrinks to nothing, the next frame's input says
"no object here", and the network, which reads the object only through that warped mask (the first
frame's reference is merged over all objects), has nothing that brings it back when it reappears.
''')
code(r'''
ii = {k: v for k, v in main_scores["per_video"].items() if k.startswith("occlude_reappear/")}
fail_name = min(ii, key=ii.get)
fail_seq = val_splits["occlude_reappear"][fail_name.split("/")[1]]
fail_pred = inference.predict(model, fail_seq, functools.partial(recipe.predict_sequence, cfg=main_cfg))
print(f"{fail_name}: J&F {ii[fail_name]:.3f}")
display(viz.compare(fail_seq.frames(), fail_pred, fail_seq.masks()))
''')
md(r'''
## 6. Does the attention matter? The ablation, with confidence intervals

Same preset and schedule (`ABLATION_STEPS`) for every run. Attention on vs off (off: $m_3$ goes to
the decoder unweighted, the object known only from its own res2 features) over `ABLATION_SEEDS`;
with the first seed also: no instance-agnostic module, no flow warping (the previous mask as is),
and the **oracle** row with the synthetic ground-truth flow (train and test). The verdict comes from
`stats.paired_effect`: per-video differences averaged over seeds, a 95% bootstrap interval over the
val videos, overall and per scenario.
''')
code(r'''
ablation_runs: dict[str, dict] = {}
VARIANTS = {"attention on": {}, "attention off": {"use_attention": False},
            "no instance-agnostic module": {"use_agnostic": False}, "no flow warping": {"flow": "none"},
            "oracle: ground-truth flow": {"flow": "gt"}}


def run_variant(variant: str, seed: int) -> None:
    config = variant_config(ABLATION_STEPS, **VARIANTS[variant])
    if variant == "attention on" and seed == SEED:
        net, hist, scored = model, history, main_scores                 # the main model is this run
    else:
        net, hist = load_or_train(config, seed=seed)
        scored = evaluate(net, config)
    ablation_runs[f"{variant} seed {seed}"] = {"variant": variant, "seed": seed, "J&F-Mean": scored["J&F"],
                                               "train_seconds": hist.seconds, "per_video": scored["per_video"],
                                               "last_losses": float(np.mean(hist.losses[-20:])) if len(hist) else None}


with Timer() as timer:
    for seed in ABLATION_SEEDS:
        for variant in ("attention on", "attention off"):
            run_variant(variant, seed)
    for variant in ("no instance-agnostic module", "no flow warping", "oracle: ground-truth flow"):
        run_variant(variant, ABLATION_SEEDS[0])
timings["ablation"] = timer.seconds
for label, r in ablation_runs.items():
    print(f"{label:<40} J&F {r['J&F-Mean']:.3f}  ({r['train_seconds']:.1f} s, mean loss of the last 20 steps "
          f"{r['last_losses'] if r['last_losses'] is None else round(r['last_losses'], 3)})")
# a run whose loss sits at 1 has collapsed to all-background (no gradient passes the soft aggregation's clamp)
collapsed = [label for label, r in ablation_runs.items() if r["last_losses"] is not None and r["last_losses"] > 0.99]
checks["no_collapsed_run"] = not collapsed
print("collapsed runs:", collapsed or "none")
''')
code(r'''
def per_seed(variant: str, seeds=None) -> list[dict]:
    return [r["per_video"] for r in ablation_runs.values() if r["variant"] == variant
            and (seeds is None or r["seed"] in seeds)]


first = ABLATION_SEEDS[:1]
comparisons = {
    "attention on vs off": (per_seed("attention on"), per_seed("attention off")),
    "full vs no instance-agnostic module": (per_seed("attention on", first), per_seed("no instance-agnostic module")),
    "DIS warping vs no warping": (per_seed("attention on", first), per_seed("no flow warping")),
    "oracle ground-truth flow vs DIS": (per_seed("oracle: ground-truth flow"), per_seed("attention on", first)),
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
### 6.1 Time per frame vs the number of objects: single shot vs one pass per object

The paper's claim: AGSS-VOS's time stays nearly flat in $K$ while a per-object method (the same
network run once per object, RGMP-style) grows linearly. Network time only (flow excluded, it is
the same for both), on a val frame with $K$ synthetic block masks, median of several runs.
''')
code(r'''
def time_forward(net, K: int, per_object: bool, repeats: int = 5) -> float:
    H, W = demo["many_objects"].size
    image = to_image_tensor(demo["many_objects"].frames()[:1], device)
    g = torch.Generator().manual_seed(K)
    prev = torch.zeros(1, K, H, W, device=device)
    for k in range(K):
        y, x = int(torch.randint(0, H - 12, (1,), generator=g)), int(torch.randint(0, W - 12, (1,), generator=g))
        prev[0, k, y:y + 12, x:x + 12] = 1
    with torch.no_grad():
        ref = (net.reference_per_object(image, prev) if per_object
               else net.reference(image, prev.amax(1, keepdim=True)))
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            net(image, prev, ref, per_object=per_object)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:]))


with Timer() as timer:
    n_objects = [1, 2, 4, 8, 10]
    speed = {mode: {K: time_forward(model, K, mode == "one pass per object") for K in n_objects}
             for mode in ("single shot (AGSS)", "one pass per object")}
timings["speed"] = timer.seconds
plt.figure(figsize=(5, 3))
for mode, row in speed.items():
    plt.plot(n_objects, [row[K] for K in n_objects], "o-", label=mode)
plt.xlabel("objects K"); plt.ylabel("ms / frame (network)"); plt.legend(); plt.title("time vs number of objects")
plt.tight_layout(); plt.show()
for mode, row in speed.items():
    print(f"{mode:<22} " + ", ".join(f"K={K}: {v:.1f} ms" for K, v in row.items()))
''')
md(r'''
## 7. Change one thing, predict, then measure

Each experiment changes the trained model's **inference** only and re-scores the val split.
**Before running**, write in `MY_PREDICTIONS` whether J&F goes "up", "down" or stays the "same"
(within 0.01).

* 7.1: the previous masks are not warped (flow "none") at inference.
* 7.2: the background threshold of the final argmax is 0.3 instead of 0.5.
''')
code(r'''
MY_PREDICTIONS = {"7.1 no warping at inference": None, "7.2 background threshold 0.3": None}
''', tags=["prediction"])
code(r'''
for experiment, guess in MY_PREDICTIONS.items():
    exercises.predict(experiment, guess, choices=("up", "down", "same"))
''')
code(r'''
def eval_with(**options) -> float:
    config = copy.deepcopy(main_cfg)
    config["eval"].update(options)
    return evaluate(model, config)["J&F"]


with Timer() as timer:
    experiments = {"as trained": main_scores["J&F"], "7.1 no warping at inference": eval_with(flow="none"),
                   "7.2 background threshold 0.3": eval_with(bg_threshold=0.3)}
timings["experiments"] = timer.seconds
for name, value in experiments.items():
    print(f"{name:<32} J&F {value:.3f} ({value - experiments['as trained']:+.3f})")
for name in MY_PREDICTIONS:
    change = experiments[name] - experiments["as trained"]
    exercises.reveal(name, change, "up" if change > 0.01 else "down" if change < -0.01 else "same")
''')
md(r'''
## 8. Real video (the `real` preset)

The `real` preset trains AGSS-VOS with a frozen ImageNet MobileNetV2 (the mask joins after it:
`mask_input="features"`, since the frozen, cached prefix cannot read a mask channel) on DAVIS-2016
frames at 240p and scores the held-out sequences. Off by default (`REAL=False`): run
`voslab train agss --preset real` first (cached), then set `REAL=True` (and `DATA_ROOT` if the
frames are elsewhere).
''')
code(r'''
real_scores = {}
if REAL is True:
    from voslab import presets                                                    # noqa: E402 (section 8 only)
    real_cfg = presets.get("agss", "real")
    if PRESET == "smoke":
        real_cfg["train"]["steps"] = 4
    real_model, _ = load_or_train(real_cfg)
    for name, videos in agss.scenario_splits(real_cfg, "val", DATA_ROOT).items():
        res, _ = inference.evaluate_model(real_model, videos, functools.partial(recipe.predict_sequence, cfg=real_cfg),
                                          recipe.protocol(), progress=False)
        real_scores = {r["sequence"]: r["J&F-Mean"] for r in res.rows}
        print(res.to_markdown())
else:
    print("section 8 skipped (REAL=False)")
''')
md(r'''
## Summary (printed from this run's results)

Not reproduced here: the ResNet-50 encoder initialised from RGMP, FlowNet2-C, the random reference
frame of the code's clips, the zoom-crop augmentation and the optimiser step after every frame.
''')
code(r'''
print(f"preset {PRESET}: AGSS-VOS J&F {main_scores['J&F']:.3f} on {len(main_scores['per_video'])} val videos")
print(f"attention on vs off: {effects['attention on vs off'].describe()}")
ratio = {mode: row[n_objects[-1]] / row[1] for mode, row in speed.items()}
print("time at K=%d relative to K=1: " % n_objects[-1] + ", ".join(f"{m} x{r:.1f}" for m, r in ratio.items()))
print(f"timings {({k: round(v, 1) for k, v in timings.items()})}")
''')
code(r'''
notebook.save_results(OUTPUT_DIR, "04_agss", {
    "metrics": {
        "J&F-Mean": main_scores["J&F"],
        "scenario J&F-Mean": {sc: v["mean"] for sc, v in by_scenario.items()},
        "ablation J&F-Mean": {label: r["J&F-Mean"] for label, r in ablation_runs.items()},
        "ms per frame vs objects": {mode: {str(K): v for K, v in row.items()} for mode, row in speed.items()},
        "attention mass": mass,
        "warp soft IoU": warp_iou,
        "experiments J&F-Mean": experiments,
        **({"real": real_scores} if real_scores else {}),
    },
    "effects": {name: effect.as_dict() for name, effect in effects.items()},
    "verdicts": {name: effect.describe() for name, effect in effects.items()},
    "per_video": {label: r["per_video"] for label, r in ablation_runs.items()},
    "timings": timings,
    "train_seconds": {label: r["train_seconds"] for label, r in ablation_runs.items()},
    "checks": checks,
    "schedule": {"steps": ABLATION_STEPS, "ablation_steps": ABLATION_STEPS, "ablation_seeds": ABLATION_SEEDS},
    "config": main_cfg,
})
''')

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                          "name": "python3"}, "language_info": {"name": "python"}})
nbformat.write(nb, Path(__file__).with_name("04_agss.ipynb"))
