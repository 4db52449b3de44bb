"""Builds notebooks/01_lvo.ipynb (run: python notebooks/build_01_lvo.py; then nbstripout)."""
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
# 01 · LVO: learning video object segmentation with visual memory

> Pavel Tokmakov, Karteek Alahari, Cordelia Schmid. **Learning Video Object Segmentation with Visual
> Memory.** ICCV 2017 (extended: "Learning to Segment Moving Objects", IJCV 2019). No official code
> was released: every detail the paper does not state is **reconstructed** here and marked so.

*Unsupervised* video object segmentation: nobody tells the model which object to follow; it must
find "the object that moves independently" in every frame. The paper's argument (Sec. 1, 3): a
motion cue (optical flow) finds objects that appearance alone misses, but **motion disappears
when the object stops**, and appearance alone cannot tell the moving object from a look-alike that
stands still. LVO therefore combines

1. an **appearance stream** (DeepLab features at 1/8, reduced by $1\times1$ convs + tanh),
2. a **motion stream** (MP-Net: an encoder-decoder from optical flow to "independently moving"),
3. a **visual memory**: a convolutional GRU with $7\times7$ kernels over the fused features, run
   **forward and backward** in time, so an object that stops (or starts still) is remembered from
   the frames where it moved,
4. a small classifier, trained with binary cross-entropy back-propagated through time, and a dense
   CRF on the output.

voslab's synthetic set has one scenario per mechanism: `camouflage` (the object has the
background's texture: visible only in motion), `stop_and_go` (objects stop for long stretches next
to static look-alikes: the memory must keep them), `static_start` (the object is still at first:
only the backward pass knows it will move).
''')

code(r'''
from __future__ import annotations

import copy
import functools

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.data import Subset, default_collate

import voslab
from voslab import engine, inference, notebook, postprocess, stats, viz, zoo
from voslab.data import synthetic
from voslab.data.transforms import to_image_tensor
from voslab.exercises import check, todo
from voslab.flow import flow_to_color
from voslab.models import lvo
from voslab.nn.convgru import ConvGRUCell
from voslab.utils import Timer, seed_everything, select_device

voslab.require(">=0.1")
''')

md(r'''
## Parameters

The next cell is tagged `parameters`: literals only, so papermill can override them
(`papermill 01_lvo.ipynb out.ipynb -p PRESET smoke`). `None` and `"auto"` mean "not set here": the
value then comes from the environment variable `VOSLAB_<NAME>`, else from the preset
(`voslab.presets.get("lvo", PRESET)`).
''')

code(r'''
PRESET = "auto"         # smoke | cpu | gpu; auto: $VOSLAB_PRESET, else cpu
SEED = 0                # seed of the main model and of every seeded draw
DEVICE = "auto"         # auto | cpu | cuda
CKPT = "auto"           # auto: reuse the cached weights of an identical run, else train; retrain: always train; or a folder
OUTPUT_DIR = None       # where 01_lvo.json goes; None: $VOSLAB_OUTPUT_DIR, else outputs
INTERACTIVE = None      # None: sliders in a live Jupyter kernel, static figures elsewhere
SOLUTIONS = True        # False: the exercise cells stay stubs for you to fill in (the notebook still runs)
STEPS = None            # training steps of the main model; None: the preset's
ABLATION_STEPS = None   # training steps of each ablation run; None: the preset's ablation_steps
ABLATION_SEEDS = None   # seeds of the mechanism on/off runs; None: the preset's ablation_seeds
REAL = False            # section 8: True trains the real preset on DAVIS frames (up to 30 min on 2 cores, cached)
DATA_ROOT = None        # a DAVIS-2016-layout folder for section 8; None: the shared 240p copy
''', tags=["parameters"])

code(r'''
P = notebook.resolve(globals(), model="lvo")
cfg = P.config                                      # the preset (a copy): "data", "model", "train", "eval"
ABLATION_STEPS = int(ABLATION_STEPS or STEPS)
ABLATION_SEEDS = [int(s) for s in (ABLATION_SEEDS or [SEED])]
device = select_device(DEVICE)
recipe = zoo.get("lvo")                             # build_model, train_dataset, training_step, predict_sequence
timings: dict[str, float] = {}
checks: dict[str, bool] = {}


def variant_config(variant: str, steps: int) -> dict:
    """The preset with one ablation variant and one schedule (with the seed: the weights' cache key)."""
    config = copy.deepcopy(cfg)
    config["model"]["variant"] = variant
    config["train"]["steps"] = int(steps)
    return config


def load_or_train(config: dict, seed: int = SEED, **fit_kwargs):
    """-> (model in eval mode, History): `recipe.train` (what `voslab train lvo` runs) unless cached."""
    cache = None if CKPT in ("auto", "retrain") else CKPT
    net, history = recipe.load_or_train(config, seed=seed, cache=cache, force=CKPT == "retrain",
                                        device=device, **fit_kwargs)
    return net.to(device).eval(), history


main_cfg = variant_config("full", STEPS)            # LVO as the paper describes it
print(f"device {device}; main model {STEPS} steps; ablation {ABLATION_STEPS} steps x seeds {ABLATION_SEEDS}")
print("model:", main_cfg["model"])
print("train scenarios:", cfg["train"]["scenarios"])
''')

md(r'''
## 1. The data: three scenarios, one per mechanism

The preset splits its train and val videos evenly over LVO's three scenarios
(`lvo.scenario_splits`); every video keeps its scenario, so every score breaks down by scenario.
Video keys below are `scenario/name`. A `stopped` flag marks frames where a primary object does not
move by itself (the generator's record).
''')

code(r'''
with Timer() as timer:
    train_sets = lvo.scenario_splits(cfg, "train")
    val_sets = lvo.scenario_splits(cfg, "val")
timings["generate_data"] = timer.seconds
val_videos = {f"{sc}/{s.name}": s for sc, ds in val_sets.items() for s in ds}
scenario_of = {key: key.split("/")[0] for key in val_videos}
val_flags = {key: synthetic.frame_flags(synthetic.read_meta(val_sets[scenario_of[key]].root, s.name))
             for key, s in val_videos.items()}
print(f"train: {sum(len(d) for d in train_sets.values())} videos, val: {len(val_videos)} videos "
      f"({', '.join(f'{sc}: {len(d)}' for sc, d in val_sets.items())}); {timer.seconds:.1f} s")
for sc in val_sets:
    share = np.mean([val_flags[k]["stopped"].mean() for k in val_videos if scenario_of[k] == sc])
    print(f"  {sc:<12} frames with a stopped primary object: {share:.0%}")
''')

md("One val video per scenario, drawn at random with `SEED` (not picked for looking good); the target outlined, stopped frames tagged.")

code(r'''
rng = np.random.default_rng(SEED)
demo = {sc: str(rng.choice(sorted(k for k in val_videos if scenario_of[k] == sc))) for sc in val_sets}
for sc, key in demo.items():
    seq = val_videos[key]
    t_show = np.linspace(0, len(seq) - 1, min(6, len(seq))).round().astype(int)
    titles = [f"t={t}" + (" stopped" if val_flags[key]["stopped"][t] else "") for t in t_show]
    fig = viz.contact_sheet(seq.frames()[t_show], seq.masks()[t_show], ncols=len(t_show), titles=titles)
    fig.suptitle(f"{sc}: {key}")
    display(fig)
    plt.close(fig)
''')

md(r'''
## 2. Building LVO step by step

```
frame t ──backbone (1/8)──1x1 conv, tanh, 1x1 conv, tanh──> A_t (Ca) ─┐
                                                                       ├─ concat ─ 3x3 conv, ReLU ─> x_t ─┐
flow t→t+1 ──MP-Net encoder-decoder──> M_t (1/4, brought to 1/8) ─────┘                                  │
   x_1 … x_T ──ConvGRU 7x7 forward──> h→_t ─┐                                                             │
   x_T … x_1 ──ConvGRU 7x7 backward─> h←_t ─┴─ concat [h→_t, h←_t] ─ 3x3 conv, ReLU ─ 1x1 conv ─> logit_t (upsampled)
```

Reconstructed (not stated in the paper): the channel widths, the MP-Net depth, which motion maps
enter the fusion (the decoder's last features and its logit), the 3x3 fusion conv, the classifier's
width. The model's maps come back with `return_maps=True`.

### 2.1 The two streams on one clip
''')

code(r'''
seed_everything(SEED)
model0 = recipe.build_model(main_cfg).eval()                       # untrained
demo_seq = val_videos[demo["stop_and_go"]]
demo_frames = demo_seq.frames()                                    # uint8 (T, H, W, 3)
demo_flow = lvo.video_flow_for(demo_seq, model0.cfg)               # (T, H, W, 2): estimated (DIS) flow
frames_t = to_image_tensor(demo_frames)[None]                      # (1, T, 3, H, W)
flow_t = torch.from_numpy(demo_flow).permute(0, 3, 1, 2)[None]     # (1, T, 2, H, W)
with torch.no_grad():
    maps0 = model0(frames_t, flow_t, return_maps=True)
    A = torch.tanh(model0.reduce[2](torch.tanh(model0.reduce[0](model0.backbone(frames_t[0])))))  # by hand
    torch.testing.assert_close(A, maps0["appearance"][0])
    logit, feats = model0.motion_net(flow_t[0] / model0.cfg.flow_scale)                          # (T, 1, H/4, W/4)
    M = F.interpolate(torch.cat([feats, logit], 1), size=A.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(M, maps0["motion"][0])
    x = model0.fusion(torch.cat([A, M], 1))                                                      # (T, Cx, h, w)
    torch.testing.assert_close(x, maps0["fused"][0])
checks["streams_match_library"] = True
for name in ("appearance", "motion", "fused"):
    print(f"{name:<10} {tuple(maps0[name].shape)}")
print("motion logits", tuple(maps0["motion_logits"].shape), "(1/4 resolution)")
''')

md(r'''
### 2.2 The visual memory: one ConvGRU step

With $*$ a $7\times7$ convolution and $\odot$ the element-wise product (paper Eq. 1-4):

$$z_t = \sigma(W_{xz} * x_t + W_{hz} * h_{t-1}),\qquad r_t = \sigma(W_{xr} * x_t + W_{hr} * h_{t-1}),$$
$$\tilde h_t = \tanh(W_{xh} * x_t + W_{hh} * (r_t \odot h_{t-1})),\qquad h_t = (1 - z_t)\odot h_{t-1} + z_t \odot \tilde h_t.$$

The update gate $z$ decides how much of the memory is rewritten, the reset gate $r$ how much of the
old state the candidate may read. In the library (`voslab.nn.convgru.ConvGRUCell`) $W_{x\cdot}$ and
$W_{h\cdot}$ are one convolution over $[x, h]$: `gates` (for $z, r$) and `candidate`.

**Exercise 1.** Implement one step from the cell's weights.
''')

code(r'''
def my_convgru_step(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, Cx, h, w), h (B, Ch, h, w) -> (h_new, z, r), each (B, Ch, h, w).

    cell.gates: conv over cat([x, h]) with 2*Ch outputs (first z, then r, before the sigmoid);
    cell.candidate: conv over cat([x, r * h]) with Ch outputs (before the tanh).
    """
    todo("z, r = sigmoid(cell.gates(cat[x, h])).chunk(2, dim=1); candidate = tanh(cell.candidate(cat[x, r*h])); "
         "h_new = (1 - z) * h + z * candidate")
''', tags=["exercise"])

code(r'''
if SOLUTIONS:
    def my_convgru_step(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, Cx, h, w), h (B, Ch, h, w) -> (h_new, z, r)."""
        z, r = torch.sigmoid(cell.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(cell.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * candidate, z, r
''', tags=["solution"])

md("The checker compares your step with the library's on the demo clip, a batch, a non-square grid and a large state.")

code(r'''
cell_fw = model0.memory_gru.cells["fw"]


def library_step(cell, x, h):
    h_new, gates = cell(x, h, return_gates=True)
    return h_new, gates["update"], gates["reset"]


g = torch.Generator().manual_seed(0)
ch = cell_fw.hidden_channels
cx = x.shape[1]
step_cases = [
    (cell_fw, x[:1], torch.zeros(1, ch, *x.shape[-2:])),
    (cell_fw, torch.randn(2, cx, 3, 5, generator=g), torch.randn(2, ch, 3, 5, generator=g)),
    (cell_fw, torch.randn(1, cx, 9, 2, generator=g), 3 * torch.randn(1, ch, 9, 2, generator=g)),
]
with torch.no_grad():
    checks["exercise_convgru_step"] = check("ConvGRU step", my_convgru_step, library_step, step_cases, rtol=1e-5, atol=1e-6)
''')

md(r'''
### 2.3 The bidirectional pass

One ConvGRU reads $x_1 \dots x_T$, another $x_T \dots x_1$; at every $t$ their states are
concatenated, $[\overrightarrow h_t, \overleftarrow h_t]$, so the prediction at $t$ knows the past
and the future. Stepping the two cells by hand must give the library's states.
''')

code(r'''
step = my_convgru_step if checks["exercise_convgru_step"] else library_step   # yours once it passes
with torch.no_grad():
    fused = maps0["fused"]                                                # (1, T, Cx, h, w)
    T = fused.shape[1]
    fw, bw = [None] * T, [None] * T
    h = torch.zeros(1, ch, *fused.shape[-2:])
    for t in range(T):
        h, _, _ = step(model0.memory_gru.cells["fw"], fused[:, t], h)
        fw[t] = h
    h = torch.zeros(1, ch, *fused.shape[-2:])
    for t in reversed(range(T)):
        h, _, _ = step(model0.memory_gru.cells["bw"], fused[:, t], h)
        bw[t] = h
    states_by_hand = torch.stack([torch.cat([fw[t], bw[t]], 1) for t in range(T)], 1)   # (1, T, 2Ch, h, w)
    torch.testing.assert_close(states_by_hand, maps0["states"], rtol=1e-5, atol=1e-6)
    logits_by_hand = model0.classifier(states_by_hand[0])                 # 3x3 conv, ReLU, 1x1 conv: (T, 1, h, w)
    torch.testing.assert_close(logits_by_hand, maps0["coarse_logits"][0], rtol=1e-5, atol=1e-6)
checks["bidirectional_matches_library"] = True
print(f"states {tuple(states_by_hand.shape)} = [forward, backward]; classifier -> {tuple(logits_by_hand.shape)}")
''')

md(r'''
## 3. Training

Everything here is the library's (`voslab.models.lvo`): clips of consecutive frames
(`LVOClips`), the estimated (DIS) flow for the memory's input, the ground-truth flow for the motion
stream's own loss, and the paper's **stop-and-go augmentation**: the last (or first) $k$ frames of a
clip are replaced by copies of one frame with zero flow, so motion vanishes while the object stays.

### 3.1 The sampler and the augmentation
''')

code(r'''
train_clips = recipe.train_dataset(main_cfg)
n_look = min(100, len(train_clips))
stopped_share = float(np.mean([train_clips[i]["stopped"].any().item() for i in range(n_look)]))
item = train_clips[0]
print({k: tuple(v.shape) for k, v in item.items()})
print(f"{stopped_share:.0%} of {n_look} clips carry the stop-and-go augmentation (train.stop_p = {main_cfg['train']['stop_p']})")
aug, stopped = lvo.stop_and_go(item, 2, at_end=True)
assert torch.equal(aug["frames"][-1], item["frames"][-3]) and (aug["flow"][-3:] == 0).all()
checks["stop_and_go"] = True
''')

md(r'''
### 3.2 The loss and one optimisation step

Binary cross-entropy on every pixel of every frame of the clip, back-propagated through time; plus
the motion stream's own BCE against the **independently moving** pixels (the mask where the
ground-truth flow differs from the camera's, `lvo.moving_target`; MP-Net was trained on
FlyingThings3D ground truth). The memory's loss does not reach the motion stream (kept fixed in the
paper). `train.pos_weight` (not in the paper) up-weights the small foreground. One step by hand
must equal one step of `voslab.engine.fit`, bit for bit.
''')

code(r'''
check_batch = default_collate([train_clips[i] for i in range(2)])
pos_weight = main_cfg["train"].get("pos_weight")


def fresh(config):
    seed_everything(SEED)
    net = recipe.build_model(config)
    return net, *recipe.configure_optimizer(net, config)


one_cfg = copy.deepcopy(main_cfg)
one_cfg["train"].update(steps=1, batch_size=2)
net_hand, opt_hand, sched_hand = fresh(one_cfg)
seed_everything(SEED)
net_hand.train()
net_copy = copy.deepcopy(net_hand)                                   # the loss by hand on a copy (batch-norm statistics move)
out = net_copy(check_batch["frames"], check_batch["flow"])
w = None if pos_weight is None else torch.tensor(float(pos_weight))
memory_loss = F.binary_cross_entropy_with_logits(out["logits"], check_batch["masks"], pos_weight=w)
flow_gt = check_batch["flow_gt"].flatten(0, 1)
motion_logit, _ = net_copy.motion(flow_gt)
target = F.adaptive_avg_pool2d(lvo.moving_target(check_batch["masks"].flatten(0, 1), flow_gt), motion_logit.shape[-2:])
loss = memory_loss + main_cfg["train"]["motion_loss_weight"] * F.binary_cross_entropy_with_logits(motion_logit, target, pos_weight=w)
lib = recipe.training_step(net_hand, check_batch, one_cfg)
torch.testing.assert_close(loss, lib["loss"])
opt_hand.zero_grad()
lib["loss"].backward()
opt_hand.step()
sched_hand.step()
net_fit, opt_fit, sched_fit = fresh(one_cfg)
engine.fit(net_fit, functools.partial(recipe.training_step, cfg=one_cfg), Subset(train_clips, range(2)),
           optimizer=opt_fit, scheduler=sched_fit, steps=1, batch_size=2, shuffle=False, seed=SEED,
           device="cpu", progress=False)
for name, tensor in net_hand.state_dict().items():
    torch.testing.assert_close(tensor, net_fit.state_dict()[name], rtol=0, atol=0)
checks["one_step_matches_fit"] = True
print(f"loss {loss.item():.4f} (memory {memory_loss.item():.4f}); one step by hand == engine.fit")
''')

md(r'''
### 3.3 Training with the library loop

`recipe.load_or_train` runs exactly what `voslab train lvo --preset <PRESET>` runs and caches the
weights under a hash of the configuration and the seed (`CKPT = "retrain"` trains again).
''')

code(r'''
with Timer() as timer:
    model, history = load_or_train(main_cfg, validate=recipe.validator(main_cfg, n_samples=16),
                                   validate_every=max(1, STEPS // 5))
timings["train_or_load"] = timer.seconds
train_seconds = history.seconds
print(f"training took {train_seconds:.1f} s ({STEPS} steps)")
if len(history):
    display(viz.plot_curves(history, keys=["loss", "val_loss", "iou", "val_iou"], smoothing=0.6,
                            title="LVO training: loss and IoU (train: EMA; val: every few steps)"))
''')

md(r'''
## 4. Evaluation: DAVIS $\mathcal{J}\&\mathcal{F}$ per scenario

`recipe.predict_sequence` is LVO's protocol: DIS flow estimated from the frames (never the
synthetic ground truth), the whole video through both streams and the memory in both directions,
threshold at 0.5. The CRF is an option (section 5.4).
''')

code(r'''
def score(net, config, eval_overrides: dict | None = None) -> tuple[dict, dict]:
    """-> ({"scenario/name": J&F}, {"scenario/name": masks}) over every val video."""
    config = copy.deepcopy(config)
    config["eval"].update(eval_overrides or {})
    per_video, preds = {}, {}
    for sc, ds in val_sets.items():
        res, pr = inference.evaluate_model(net, ds, functools.partial(recipe.predict_sequence, cfg=config),
                                           recipe.protocol(), progress=False)
        per_video.update({f"{sc}/{r['sequence']}": r["J&F-Mean"] for r in res.rows})
        preds.update({f"{sc}/{n}": m for n, m in pr.items()})
    return per_video, preds


with Timer() as timer:
    main_scores, predictions = score(model, main_cfg)
timings["evaluate"] = timer.seconds
main_jf = float(np.mean(list(main_scores.values())))
by_scenario = {sc: float(np.mean([v for k, v in main_scores.items() if scenario_of[k] == sc])) for sc in val_sets}
print(f"LVO J&F {main_jf:.3f} on {len(main_scores)} val videos; by scenario:",
      ", ".join(f"{sc} {v:.3f}" for sc, v in by_scenario.items()))
for key in sorted(main_scores, key=main_scores.get)[:5]:
    print(f"  {key:<30} {main_scores[key]:.3f}")
''')

md("Two videos: one drawn at random with `SEED`, and the one the model segments worst.")

code(r'''
random_key = str(np.random.default_rng(SEED + 1).choice(sorted(val_videos)))
worst_key = min(main_scores, key=main_scores.get)
for key, why in ((random_key, f"seeded random draw (SEED={SEED})"), (worst_key, "worst J&F")):
    print(f"{key} ({why}): J&F {main_scores[key]:.3f}")
    display(viz.compare(val_videos[key].frames(), predictions[key], val_videos[key].masks(), max_frames=6))
''')

md(r'''
## 5. Look inside

### 5.1 Flow and the motion stream

The estimated flow (colour: direction; saturation: speed) and the motion stream's "independently
moving" probability on the camouflage demo video, with the ground truth outlined. Over the whole
val split: the mean motion probability on the object vs the background, trained vs untrained.
''')

code(r'''
def motion_prob(net, seq) -> np.ndarray:
    """(T, H, W) motion-stream probability at the frames' size (estimated flow)."""
    fl = torch.from_numpy(lvo.video_flow_for(seq, net.cfg)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        logit, _ = net.motion(fl)
    return torch.sigmoid(F.interpolate(logit, size=seq.size, mode="bilinear", align_corners=False))[:, 0].numpy()


cam = val_videos[demo["camouflage"]]
cam_flow = lvo.video_flow_for(cam, model.cfg)
cam_motion = motion_prob(model, cam)
ts = np.linspace(0, len(cam) - 2, 4).round().astype(int)
fig, axes = plt.subplots(3, len(ts), figsize=(3.2 * len(ts), 6.6))
for j, t in enumerate(ts):
    gt = cam.masks()[t]
    axes[0, j].imshow(cam.frames()[t]); axes[0, j].set_title(f"frame {t}")
    axes[1, j].imshow(flow_to_color(cam_flow[t])); axes[1, j].set_title("DIS flow")
    im = axes[2, j].imshow(cam_motion[t], vmin=0, vmax=1, cmap="magma"); axes[2, j].set_title("motion stream")
    for ax in axes[:, j]:
        ax.contour(gt, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.axis("off")
fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, label="P(independently moving)")
plt.show()


def motion_contrast(net) -> dict[str, float]:
    on, off = [], []
    for key, seq in val_videos.items():
        p, gt = motion_prob(net, seq)[:-1], seq.masks()[:-1].astype(bool)
        moving = ~val_flags[key]["stopped"][:-1]
        if moving.any() and gt[moving].any():
            on.append(p[moving][gt[moving]].mean())
            off.append(p[moving][~gt[moving]].mean())
    return {"object": float(np.mean(on)), "background": float(np.mean(off))}


motion_stats = {"trained": motion_contrast(model), "untrained": motion_contrast(model0)}
for k, v in motion_stats.items():
    print(f"{k:>9}: mean motion probability on moving frames: object {v['object']:.2f}, background {v['background']:.2f}")
''')

md(r'''
### 5.2 Gates and hidden state over time

On the stop_and_go demo: the forward cell's update gate $z$ (how much is rewritten) and the norm of
the hidden state, averaged over the object's cells and the background's, frame by frame, with the
frames where the object stops shaded. A memory that keeps a stopped object shows a low update on
the object while it stands still.
''')

code(r'''
sg = val_videos[demo["stop_and_go"]]
sg_flow = lvo.video_flow_for(sg, model.cfg)
with torch.no_grad():
    sg_maps = lvo.predict_logits(model, sg.frames(), sg_flow, model.cfg, return_maps=True)
hc = model.cfg.hidden_dim
grid = sg_maps["states"].shape[-2:]
obj = F.adaptive_avg_pool2d(torch.from_numpy(sg.masks()).float()[:, None], grid)[:, 0] > 0.5   # (T, h, w)
z_fw = sg_maps["update"][:, :hc].mean(1)                          # (T, h, w)
r_fw = sg_maps["reset"][:, :hc].mean(1)
h_norm = sg_maps["states"].norm(dim=1)                            # (T, h, w)


def region_mean(a, m):
    return [float(a[t][m[t]].mean()) if m[t].any() else np.nan for t in range(len(a))]


fig, axes = plt.subplots(1, 3, figsize=(14, 3))
stopped_t = np.flatnonzero(val_flags[demo["stop_and_go"]]["stopped"])
for ax, (name, a) in zip(axes, (("update gate z (forward)", z_fw), ("reset gate r (forward)", r_fw), ("|h_t| (both directions)", h_norm))):
    ax.plot(region_mean(a, obj), "o-", label="object")
    ax.plot(region_mean(a, ~obj), "s-", label="background")
    for t in stopped_t:
        ax.axvspan(t - 0.5, t + 0.5, color="0.85")
    ax.set(title=name, xlabel="frame (grey: object stopped)")
axes[0].legend()
plt.tight_layout()
plt.show()
t_mid = int(stopped_t[len(stopped_t) // 2]) if len(stopped_t) else len(sg) // 2
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, (name, a) in zip(axes, (("update z", z_fw), ("reset r", r_fw))):
    im = ax.imshow(a[t_mid], vmin=0, vmax=1, cmap="viridis")
    ax.contour(obj[t_mid].float(), levels=[0.5], colors="w")
    ax.set_title(f"{name}, frame {t_mid}")
    ax.axis("off")
fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
axes[2].imshow(sg.frames()[t_mid]); axes[2].contour(sg.masks()[t_mid], levels=[0.5], colors="cyan"); axes[2].axis("off")
axes[2].set_title("frame")
plt.show()
''')

md(r'''
## 6. Does it matter? The ablation, with confidence intervals

Every variant trains with the same preset and schedule and is scored on the same val videos:
`full` (LVO), `appearance` (no motion stream, with the memory), `no_memory` (both streams, the
ConvGRU replaced by a $7\times7$ conv of the same width: no time), over every seed of
`ABLATION_SEEDS`; `motion` (motion stream only, with the memory) and `forward` (a forward-only
memory) with one seed. The verdicts are computed from paired per-video differences
(`voslab.stats.paired_effect`, 95% bootstrap interval over videos, seeds averaged), per scenario:
**motion on `camouflage`** (full vs appearance) and **memory on `stop_and_go`** (full vs no_memory).
''')

code(r'''
ablation_runs: dict[str, dict] = {}


def run_variant(variant: str, seed: int) -> None:
    config = variant_config(variant, ABLATION_STEPS)
    net, hist = load_or_train(config, seed=seed)
    per_video, _ = score(net, config)
    ablation_runs[f"{variant} seed {seed}"] = {"variant": variant, "seed": seed, "per_video": per_video,
                                               "J&F-Mean": float(np.mean(list(per_video.values()))),
                                               "train_seconds": hist.seconds}


with Timer() as timer:
    for seed in ABLATION_SEEDS:
        for variant in ("full", "appearance", "no_memory"):
            run_variant(variant, seed)
    for variant in ("motion", "forward"):
        run_variant(variant, ABLATION_SEEDS[0])
timings["ablation"] = timer.seconds
print(f"{'run':<22} | J&F   | " + " | ".join(f"{sc[:11]:<11}" for sc in val_sets) + " | train s")
for label, run in ablation_runs.items():
    per = [np.mean([v for k, v in run["per_video"].items() if scenario_of[k] == sc]) for sc in val_sets]
    print(f"{label:<22} | {run['J&F-Mean']:.3f} | " + " | ".join(f"{p:<11.3f}" for p in per) + f" | {run['train_seconds']:.1f}")
''')

code(r'''
def per_seed(variant: str, scenario: str | None = None) -> list[dict]:
    return [{k: v for k, v in r["per_video"].items() if scenario is None or scenario_of[k] == scenario}
            for r in ablation_runs.values() if r["variant"] == variant]


comparisons = {
    "motion on camouflage (full vs appearance)": (per_seed("full", "camouflage"), per_seed("appearance", "camouflage")),
    "memory on stop_and_go (full vs no_memory)": (per_seed("full", "stop_and_go"), per_seed("no_memory", "stop_and_go")),
    "memory on static_start (full vs no_memory)": (per_seed("full", "static_start"), per_seed("no_memory", "static_start")),
    "full vs appearance (all val)": (per_seed("full"), per_seed("appearance")),
    "full vs no_memory (all val)": (per_seed("full"), per_seed("no_memory")),
    "full vs motion only (all val, 1 seed)": (per_seed("full")[:1], per_seed("motion")),
    "bidirectional vs forward (static_start, 1 seed)": (per_seed("full", "static_start")[:1], per_seed("forward", "static_start")),
}
effects = {name: stats.paired_effect(a, b, seed=SEED) for name, (a, b) in comparisons.items()}
for name, effect in effects.items():
    print(f"{name:<50} {effect.describe()}")

fig, ax = plt.subplots(figsize=(8, 3.4))
for k, name in enumerate(effects):
    e = effects[name]
    ax.errorbar(e.mean, k, xerr=[[e.mean - e.low], [e.high - e.mean]] if np.isfinite(e.low) else None,
                fmt="o", color="C3" if e.significant else "C7", capsize=4)
ax.axvline(0, color="k", lw=0.8)
ax.set_yticks(range(len(effects)), list(effects), fontsize=8)
ax.invert_yaxis()
ax.set(xlabel="paired difference in J&F (95% bootstrap CI)", title=f"Ablation ({ABLATION_STEPS} steps; red: CI excludes 0)")
plt.tight_layout()
plt.show()
''')

md(r'''
### 6.1 Appearance vs motion vs fused on a frame where the object stops

The first-seed models of the ablation on the stop_and_go demo video, at the stopped frame chosen
by a rule (the middle stopped frame): the object probability of each, on one colour scale, the
ground truth outlined.
''')

code(r'''
def prob_video(net, config, seq) -> np.ndarray:
    opts = net.cfg
    fl = lvo.video_flow_for(seq, opts) if net.uses_motion else None
    return torch.sigmoid(lvo.predict_logits(net, seq.frames(), fl, opts)["logits"][:, 0]).numpy()


variant_probs = {}
for variant in ("appearance", "motion", "no_memory", "full"):
    config = variant_config(variant, ABLATION_STEPS)
    net, _ = load_or_train(config, seed=ABLATION_SEEDS[0])
    variant_probs[variant] = prob_video(net, config, sg)
fig, axes = plt.subplots(1, 5, figsize=(17, 3))
axes[0].imshow(sg.frames()[t_mid]); axes[0].set_title(f"frame {t_mid} (object stopped)")
for ax, (variant, p) in zip(axes[1:], variant_probs.items()):
    im = ax.imshow(p[t_mid], vmin=0, vmax=1, cmap="magma")
    ax.set_title(variant)
for ax in axes:
    ax.contour(sg.masks()[t_mid], levels=[0.5], colors="cyan", linewidths=0.8)
    ax.axis("off")
fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.8, label="P(object)")
plt.show()


def stopped_frame_j(variant: str) -> float:
    """Mean J of the first-seed model on the stopped frames of every val video (rule: all of them)."""
    config = variant_config(variant, ABLATION_STEPS)
    net, _ = load_or_train(config, seed=ABLATION_SEEDS[0])
    js = []
    for key, seq in val_videos.items():
        stop = val_flags[key]["stopped"]
        if stop.any():
            pred = (prob_video(net, config, seq) > 0.5)[stop]
            gt = seq.masks()[stop].astype(bool)
            union = (pred | gt).sum((1, 2))
            js += list(np.where(union > 0, (pred & gt).sum((1, 2)) / np.maximum(union, 1), 1.0))
    return float(np.mean(js))


stopped_j = {v: stopped_frame_j(v) for v in ("appearance", "motion", "no_memory", "full")}
print("mean J on frames where an object is stopped:", ", ".join(f"{k} {v:.3f}" for k, v in stopped_j.items()))
''')

md(r'''
### 6.2 Forward-only vs bidirectional on a video whose object starts static

On the static_start demo (seeded draw): per-frame $\mathcal{J}$ of the forward-only memory and the
bidirectional one. Before the object first moves, only the backward pass has seen its motion.
''')

code(r'''
ss = val_videos[demo["static_start"]]
frame_js = {}
for variant in ("forward", "full"):
    config = variant_config(variant, ABLATION_STEPS)
    net, _ = load_or_train(config, seed=ABLATION_SEEDS[0])
    pred = prob_video(net, config, ss) > 0.5
    gt = ss.masks().astype(bool)
    union = (pred | gt).sum((1, 2))
    frame_js[variant] = np.where(union > 0, (pred & gt).sum((1, 2)) / np.maximum(union, 1), 1.0)
fig, ax = plt.subplots(figsize=(7, 2.8))
for v, js in frame_js.items():
    ax.plot(js, "o-", label="bidirectional" if v == "full" else "forward only")
for t in np.flatnonzero(val_flags[demo["static_start"]]["stopped"]):
    ax.axvspan(t - 0.5, t + 0.5, color="0.88")
ax.set(xlabel="frame (grey: object still)", ylabel="J", ylim=(0, 1), title=demo["static_start"])
ax.legend()
plt.show()
''')

md(r'''
### 6.3 Dense CRF before / after

The paper refines the output with a fully-connected CRF (`voslab.postprocess.dense_crf`, optional
package `pydensecrf2`). Before/after on the worst video, and $\mathcal{J}\&\mathcal{F}$ with the CRF
over the val split.
''')

code(r'''
crf_scores = None
if postprocess.crf_available():
    with Timer() as timer:
        crf_per_video, crf_preds = score(model, main_cfg, {"crf": True})
    timings["crf"] = timer.seconds
    crf_scores = {"without": main_jf, "with": float(np.mean(list(crf_per_video.values())))}
    effects["dense CRF (with vs without)"] = stats.paired_effect(crf_per_video, main_scores, seed=SEED)
    print(f"J&F without CRF {crf_scores['without']:.3f}, with CRF {crf_scores['with']:.3f}:",
          effects["dense CRF (with vs without)"].describe())
    t = len(val_videos[worst_key]) // 2
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, (name, m) in zip(axes, (("before CRF", predictions[worst_key][t]), ("after CRF", crf_preds[worst_key][t]))):
        ax.imshow(viz.overlay(val_videos[worst_key].frames()[t], m))
        ax.contour(val_videos[worst_key].masks()[t], levels=[0.5], colors="cyan")
        ax.set_title(f"{name}, {worst_key} t={t}")
        ax.axis("off")
    plt.show()
else:
    print("dense CRF skipped: pydensecrf is not installed (`pip install pydensecrf2`)")
''')

md(r'''
## 7. Change one thing, predict, then measure

**Before running a cell, write down what you expect** (J&F up, down, the same; on which scenario).

**7.1 Oracle flow.** Give the trained model the synthetic ground-truth flow instead of DIS
(labelled *oracle*: a real video has no such flow). Where should it help most?

**7.2 Blind the motion stream.** Feed zero flow at inference (the motion stream then sees a static
world). Which scenario should lose most?
''')

code(r'''
experiments = {}
with Timer() as timer:
    oracle_scores, _ = score(model, main_cfg, {"flow": "oracle"})


    class ZeroFlow(torch.nn.Module):
        """The trained model with the flow replaced by zeros."""
        def __init__(self, net):
            super().__init__()
            self.net, self.cfg, self.uses_motion = net, net.cfg, net.uses_motion
        def forward(self, frames, flow=None, **kw):
            return self.net(frames, torch.zeros_like(flow), **kw)

    blind_scores, _ = score(ZeroFlow(model), main_cfg)
timings["experiments"] = timer.seconds
for name, sc_scores in (("oracle flow (ORACLE)", oracle_scores), ("zero flow", blind_scores)):
    experiments[name] = {sc: float(np.mean([v for k, v in sc_scores.items() if scenario_of[k] == sc])) for sc in val_sets}
    print(f"{name:<22}", ", ".join(f"{sc} {v:.3f}" for sc, v in experiments[name].items()))
print(f"{'DIS flow (main)':<22}", ", ".join(f"{sc} {v:.3f}" for sc, v in by_scenario.items()))
''')

md(r'''
## 8. Real video: DAVIS-2016 with ImageNet features

`REAL = True` trains the `real` preset (voslab's ImageNet MobileNetV2 at 1/8, frozen and cached;
DIS flow; 25 DAVIS-2016 train sequences, 5 held out, `voslab.models._common.REAL_VAL`), the same
weights as `voslab train lvo --preset real`, and scores the held-out sequences. Needs the frames
(`DATA_ROOT` or the shared 240p copy) and `python data_scripts/fetch_weights.py`.
''')

code(r'''
real_scores: dict[str, float] = {}
if REAL:
    from voslab import presets                                         # noqa: E402  (section 8 only)
    real_cfg = presets.get("lvo", "real")
    with Timer() as timer:
        real_model, real_hist = recipe.load_or_train(real_cfg, DATA_ROOT, device=device)
        real_val = recipe.dataset(real_cfg, "val", DATA_ROOT)
        real_res, real_preds = inference.evaluate_model(real_model.eval(), real_val,
                                                        functools.partial(recipe.predict_sequence, cfg=real_cfg),
                                                        recipe.protocol("davis2016"), progress=False)
    timings["real"] = timer.seconds
    real_scores = {r["sequence"]: r["J&F-Mean"] for r in real_res.rows}
    real_scores["J&F-Mean"] = real_res.summary["J&F-Mean"]
    print(real_res)
    name = min(real_res.rows, key=lambda r: r["J&F-Mean"])["sequence"]
    display(viz.compare(real_val[name].frames(), real_preds[name], real_val[name].masks(), max_frames=6))
else:
    print("real-video section skipped (REAL=False): set REAL=True to train the real preset (<= 30 min, cached)")
''')

md(r'''
## Summary

The numbers below are read from this run's results.
''')

code(r'''
print(f"preset {PRESET}: LVO J&F {main_jf:.3f} on {len(main_scores)} val videos (" +
      ", ".join(f"{sc} {v:.3f}" for sc, v in by_scenario.items()) + ")")
print(f"motion stream on moving frames: object {motion_stats['trained']['object']:.2f} vs background "
      f"{motion_stats['trained']['background']:.2f} (untrained {motion_stats['untrained']['object']:.2f} / "
      f"{motion_stats['untrained']['background']:.2f})")
for name in ("motion on camouflage (full vs appearance)", "memory on stop_and_go (full vs no_memory)"):
    print(f"{name}: {effects[name].describe()}")
''')

code(r'''
notebook.save_results(OUTPUT_DIR, "01_lvo", {
    "metrics": {
        "J&F-Mean": main_jf,
        "scenario J&F-Mean": by_scenario,
        "ablation J&F-Mean": {label: run["J&F-Mean"] for label, run in ablation_runs.items()},
        "stopped-frame J": stopped_j,
        "experiments J&F-Mean": experiments,
        **({"crf": crf_scores} if crf_scores else {}),
        **({"real": real_scores} if real_scores else {}),
    },
    "effects": {name: effect.as_dict() for name, effect in effects.items()},
    "verdicts": {name: effect.describe() for name, effect in effects.items()},
    "per_video": {"main": main_scores, **{label: run["per_video"] for label, run in ablation_runs.items()}},
    "analysis": {"motion_probability": motion_stats},
    "timings": timings,
    "train_seconds": {"main": train_seconds, **{label: run["train_seconds"] for label, run in ablation_runs.items()}},
    "checks": checks,
    "schedule": {"steps": STEPS, "ablation_steps": ABLATION_STEPS, "ablation_seeds": ABLATION_SEEDS},
    "config": main_cfg,
})
''')

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                          "name": "python3"}, "language_info": {"name": "python"}})
nbformat.write(nb, Path(__file__).with_name("01_lvo.ipynb"))
