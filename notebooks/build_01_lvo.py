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

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.data import Subset, default_collate

import voslab
from voslab import engine, exercises, inference, notebook, postprocess, stats, viz, zoo
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
ABLATION_EXTRAS = None  # one-seed extra rows, from "motion", "forward", "kernel3"; None: the preset's ablation_extras
REAL = "auto"           # section 8, real DAVIS video: auto (when the frames and weights are found), True or False
DATA_ROOT = None        # a DAVIS-2016-layout folder for section 8; None: $VOSLAB_DATA_ROOT, else the shared 240p copy
REAL_SEQUENCES = None   # held-out real sequences to show; None: the real preset's validation sequences
''', tags=["parameters"])

code(r'''
P = notebook.resolve(globals(), model="lvo")
cfg = P.config                                      # the preset (a copy): "data", "model", "train", "eval"
ABLATION_STEPS = int(ABLATION_STEPS or STEPS)
ABLATION_SEEDS = [int(s) for s in (ABLATION_SEEDS or [SEED])]
ABLATION_EXTRAS = list(cfg["train"].get("ablation_extras", []) if ABLATION_EXTRAS is None else ABLATION_EXTRAS)
device = select_device(DEVICE)
recipe = zoo.get("lvo")                             # build_model, train_dataset, training_step, predict_sequence
timings: dict[str, float] = {}
checks: dict[str, bool] = {}


def variant_config(variant: str, steps: int, kernel_size: int | None = None) -> dict:
    """The preset with one ablation variant, one schedule and (optionally) another ConvGRU kernel size
    (with the seed: the weights' cache key)."""
    config = copy.deepcopy(cfg)
    config["model"]["variant"] = variant
    config["train"]["steps"] = int(steps)
    if kernel_size is not None:
        config["model"]["kernel_size"] = int(kernel_size)
    return config


def load_or_train(config: dict, seed: int = SEED, **fit_kwargs):
    """-> (model in eval mode, History): `recipe.train` (what `voslab train lvo` runs) unless cached."""
    cache = None if CKPT in ("auto", "retrain") else CKPT
    net, history = recipe.load_or_train(config, seed=seed, cache=cache, force=CKPT == "retrain",
                                        device=device, **fit_kwargs)
    return net.to(device).eval(), history


main_cfg = variant_config("full", STEPS)            # LVO as the paper describes it
print(f"device {device}; main model {STEPS} steps; ablation {ABLATION_STEPS} steps x seeds {ABLATION_SEEDS}, "
      f"one-seed extra rows {ABLATION_EXTRAS}")
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
### 1.1 What a model without motion gets wrong

Before building LVO, the baseline its argument is about: a network that sees the **frames only**.
Here that is LVO's `appearance` variant (the appearance stream and the visual memory, no flow: one
of the runs of the ablation in section 6, trained now with the same preset, schedule and first
seed, and cached for section 6). On `camouflage` the object has the background's texture, so
nothing in a frame shows where it is; on `stop_and_go` static look-alikes stand next to the target.
Scored with the DAVIS-2016 protocol on every val video (`score`, used throughout the notebook).
''')

code(r'''
def score(net, config, eval_overrides: dict | None = None, predict_fn=None) -> tuple[dict, dict]:
    """-> ({"scenario/name": J&F}, {"scenario/name": masks}) over every val video; ``predict_fn(net, seq,
    config)`` replaces LVO's protocol (section 7)."""
    config = copy.deepcopy(config)
    config["eval"].update(eval_overrides or {})
    fn = functools.partial(predict_fn or recipe.predict_sequence, **({"config": config} if predict_fn else {"cfg": config}))
    per_video, preds = {}, {}
    for sc, ds in val_sets.items():
        res, pr = inference.evaluate_model(net, ds, fn, recipe.protocol(), progress=False)
        per_video.update({f"{sc}/{r['sequence']}": r["J&F-Mean"] for r in res.rows})
        preds.update({f"{sc}/{n}": m for n, m in pr.items()})
    return per_video, preds


def by_scenario_of(per_video: dict) -> dict[str, float]:
    return {sc: float(np.mean([v for k, v in per_video.items() if scenario_of[k] == sc])) for sc in val_sets}


with Timer() as timer:
    frames_only, frames_only_hist = load_or_train(variant_config("appearance", ABLATION_STEPS), seed=ABLATION_SEEDS[0])
    frames_only_scores, frames_only_preds = score(frames_only, variant_config("appearance", ABLATION_STEPS))
timings["frames_only_baseline"] = timer.seconds
frames_only_area = {sc: (float(np.mean([frames_only_preds[k].mean() for k in val_videos if scenario_of[k] == sc])),
                         float(np.mean([val_videos[k].masks().astype(bool).mean() for k in val_videos if scenario_of[k] == sc])))
                    for sc in val_sets}
for sc, value in by_scenario_of(frames_only_scores).items():
    print(f"frames only, {sc:<12} J&F {value:.3f}   foreground predicted {frames_only_area[sc][0]:.1%} / true {frames_only_area[sc][1]:.1%}")
cam_demo_key = demo["camouflage"]
print(f"{cam_demo_key} (the camouflage demo): J&F {frames_only_scores[cam_demo_key]:.3f}")
display(viz.compare(val_videos[cam_demo_key].frames(), frames_only_preds[cam_demo_key], val_videos[cam_demo_key].masks(), max_frames=6))
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

md("The checker compares your step with the library's on the demo clip, a batch, a non-square grid and a large state; when your output reproduces a usual mistake it names it. A wrong answer never stops the notebook: it goes on with the library's step.")

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
def _step_variant(swap_gates=False, keep_candidate=False, reset_after=False):
    """A deliberately wrong ConvGRU step (a usual mistake), for the checker to name."""
    def step(cell, x, h):
        z, r = torch.sigmoid(cell.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        if swap_gates:
            z, r = r, z
        if reset_after:                                              # r applied to the candidate, not to h
            candidate = torch.tanh(r * cell.candidate(torch.cat([x, h], dim=1)))
        else:
            candidate = torch.tanh(cell.candidate(torch.cat([x, r * h], dim=1)))
        h_new = z * h + (1 - z) * candidate if keep_candidate else (1 - z) * h + z * candidate
        return h_new, z, r
    return step


step_mistakes = {
    "the update gate keeps the old state where it should write the candidate (z and 1 - z swapped)":
        _step_variant(keep_candidate=True),
    "z and r come out of the gates conv in the other order (the first half is z, the second r)":
        _step_variant(swap_gates=True),
    "the reset gate multiplies the candidate's output instead of the old state inside the conv":
        _step_variant(reset_after=True),
}
with torch.no_grad():
    checks["exercise_convgru_step"] = check("ConvGRU step", my_convgru_step, library_step, step_cases,
                                            mistakes=step_mistakes, rtol=1e-5, atol=1e-6)
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
### 3.2 What the motion stream learns: independently moving pixels

MP-Net does not learn "everything that moves": when the camera pans, the whole flow field moves.
Its target is the object pixels whose flow differs from the **camera's**. On synthetic data the
flow is known exactly, so the label is read from it (reconstructed; MP-Net's FlyingThings3D labels
mark independently moving objects):

$$\text{camera}_n = \operatorname{median}_{p \in \text{background}_n} \text{flow}_n(p), \qquad
\text{target}_n(p) = \text{mask}_n(p)\cdot\big[\,\lVert \text{flow}_n(p) - \text{camera}_n \rVert_2 > \tau\,\big],$$

the median taken per frame and per flow component (torch's `median`, the lower middle value), the
camera's flow zero in a frame without background, $\tau$ = `min_motion` pixels.

#### Exercise 2: implement the motion target
''')

code(r'''
def my_moving_target(mask: torch.Tensor, flow_gt: torch.Tensor, min_motion: float = 0.5) -> torch.Tensor:
    """mask (N, 1, H, W) float {0, 1}, flow_gt (N, 2, H, W) in pixels -> (N, 1, H, W) float {0, 1}."""
    todo("per frame n: the camera's flow is the median of the background pixels' flow, for x and y "
         "separately (zeros when there is no background); then keep the mask's pixels whose flow is "
         "farther than min_motion from it")
''', tags=["exercise"])

code(r'''
if SOLUTIONS:
    def my_moving_target(mask: torch.Tensor, flow_gt: torch.Tensor, min_motion: float = 0.5) -> torch.Tensor:
        """mask (N, 1, H, W) float {0, 1}, flow_gt (N, 2, H, W) in pixels -> (N, 1, H, W) float {0, 1}."""
        out = torch.zeros_like(mask)
        for n in range(mask.shape[0]):
            background = mask[n, 0] < 0.5                                            # (H, W)
            camera = (flow_gt[n][:, background].median(dim=1).values if background.any()
                      else flow_gt.new_zeros(2))                                     # (2,)
            relative = (flow_gt[n] - camera[:, None, None]).norm(dim=0)              # (H, W)
            out[n, 0] = mask[n, 0] * (relative > min_motion).float()
        return out
''', tags=["solution"])

md(r'''
The checker compares your target with `lvo.moving_target` on two training clips, a panning camera
with one object that moves with it and one that moves by itself, an object exactly `min_motion`
away from the camera, a background with a few fast pixels, a frame without background, and random
flows; it names the usual mistakes (no camera subtraction, the mean instead of the median, the
median over every pixel, `>=` for `>`).
''')

code(r'''
def _target_variant(camera="median", pixels="background", compare="gt"):
    """A deliberately wrong motion target (a usual mistake), for the checker to name."""
    def target(mask, flow_gt, min_motion=0.5):
        out = torch.zeros_like(mask)
        for n in range(mask.shape[0]):
            sel = (mask[n, 0] < 0.5) if pixels == "background" else torch.ones_like(mask[n, 0], dtype=torch.bool)
            if camera == "none" or not sel.any():
                cam = flow_gt.new_zeros(2)
            elif camera == "mean":
                cam = flow_gt[n][:, sel].mean(dim=1)
            else:
                cam = flow_gt[n][:, sel].median(dim=1).values
            rel = (flow_gt[n] - cam[:, None, None]).norm(dim=0)
            out[n, 0] = mask[n, 0] * ((rel >= min_motion) if compare == "ge" else (rel > min_motion)).float()
        return out
    return target


target_mistakes = {
    "the camera's flow is not subtracted (a panning camera makes every object pixel 'moving')": _target_variant(camera="none"),
    "the camera's flow is the mean of the background, not its median": _target_variant(camera="mean"),
    "the median is taken over every pixel, object included, not over the background": _target_variant(pixels="all"),
    "'>=' where the rule says '>' (a pixel exactly min_motion away is not moving)": _target_variant(compare="ge"),
}
check_batch = default_collate([train_clips[i] for i in range(2)])   # two training clips (also used in 3.3)
pan = torch.zeros(1, 2, 8, 10)
pan[:, 0] = 2.0                                                      # the camera pans 2 px to the right
pan_mask = torch.zeros(1, 1, 8, 10)
pan_mask[..., 1:3, 1:3] = 1                                          # object 1 moves with the camera (still)
pan_mask[..., 5:7, 5:9] = 1
pan[:, 0, 5:7, 5:9] = 4.0                                            # object 2 moves by itself
pan_exact = pan.clone()
pan_exact[:, :, 5:7, 5:9] = torch.tensor([2.5, 0.0])[:, None, None]  # object 2 exactly min_motion = 0.5 from the camera
skew = torch.randn(1, 2, 8, 10, generator=torch.Generator().manual_seed(1))
skew[:, :, :, :2] += 9.0                                             # a few fast background pixels: mean != median
target_cases = [
    (check_batch["masks"].flatten(0, 1), check_batch["flow_gt"].flatten(0, 1)),
    (pan_mask, pan), (pan_mask, pan_exact), (pan_mask, skew),
    (torch.ones(1, 1, 6, 6), torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(2))),  # no background
]


def random_target_case(rng):
    mask = torch.from_numpy(rng.random((2, 1, 7, 9)) < 0.3).float()
    flow = torch.from_numpy(rng.normal(size=(2, 2, 7, 9)) * 2).float()
    return mask, flow


checks["exercise_moving_target"] = check("motion target", my_moving_target, lvo.moving_target, target_cases,
                                         mistakes=target_mistakes, random_cases=random_target_case)
''')

md(r'''
### 3.3 The loss and one optimisation step

Binary cross-entropy on every pixel of every frame of the clip, back-propagated through time; plus
the motion stream's own BCE against the **independently moving** pixels (the mask where the
ground-truth flow differs from the camera's, `lvo.moving_target`; MP-Net was trained on
FlyingThings3D ground truth). The memory's loss does not reach the motion stream (kept fixed in the
paper). `train.pos_weight` (not in the paper) up-weights the small foreground. One step by hand
must equal one step of `voslab.engine.fit`, bit for bit.
''')

code(r'''
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
### 3.4 Training with the library loop

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

Every variant trains with the same preset and schedule (`ABLATION_STEPS`) and is scored on the same
val videos: `full` (LVO), `appearance` (no motion stream, with the memory), `no_memory` (both
streams, the ConvGRU replaced by a $7\times7$ conv of the same width: no time), over every seed of
`ABLATION_SEEDS`. The paper's other rows run with one seed when `ABLATION_EXTRAS` lists them:
`motion` (motion stream only, with the memory), `forward` (a forward-only memory) and `kernel3`
(the full model with a $3\times3$ ConvGRU instead of $7\times7$, the paper's kernel-size comparison).
The verdicts are computed from paired per-video differences (`voslab.stats.paired_effect`, 95%
bootstrap interval over videos, seeds averaged), per scenario: **motion on `camouflage`** (full vs
appearance) and **memory on `stop_and_go`** (full vs no_memory).
''')

code(r'''
ablation_runs: dict[str, dict] = {}
EXTRA_ROWS = {"motion": ("motion", None), "forward": ("forward", None), "kernel3": ("full", 3)}   # label: (variant, kernel)
unknown = set(ABLATION_EXTRAS) - set(EXTRA_ROWS)
assert not unknown, f"ABLATION_EXTRAS: unknown rows {sorted(unknown)}; choose from {sorted(EXTRA_ROWS)}"


def run_variant(label: str, variant: str, seed: int, kernel_size: int | None = None) -> None:
    config = variant_config(variant, ABLATION_STEPS, kernel_size)
    net, hist = load_or_train(config, seed=seed)
    per_video, preds = score(net, config)
    ablation_runs[f"{label} seed {seed}"] = {
        "variant": label, "seed": seed, "per_video": per_video, "J&F-Mean": float(np.mean(list(per_video.values()))),
        "foreground": float(np.mean([m.mean() for m in preds.values()])), "train_seconds": hist.seconds}


with Timer() as timer:
    for seed in ABLATION_SEEDS:
        for variant in ("full", "appearance", "no_memory"):
            run_variant(variant, variant, seed)
    for label in ABLATION_EXTRAS:
        run_variant(label, *EXTRA_ROWS[label][:1], ABLATION_SEEDS[0], EXTRA_ROWS[label][1])
timings["ablation"] = timer.seconds
true_area = float(np.mean([s.masks().astype(bool).mean() for s in val_videos.values()]))
print(f"{'run':<20} | J&F   | " + " | ".join(f"{sc[:11]:<11}" for sc in val_sets) + f" | fg pred (true {true_area:.1%}) | train s")
for label, run in ablation_runs.items():
    per = by_scenario_of(run["per_video"])
    print(f"{label:<20} | {run['J&F-Mean']:.3f} | " + " | ".join(f"{per[sc]:<11.3f}" for sc in val_sets)
          + f" | {run['foreground']:>22.1%} | {run['train_seconds']:.1f}")
collapsed = [label for label, run in ablation_runs.items() if run["foreground"] < 0.1 * true_area]
if collapsed:
    print(f"collapsed to background (foreground < 10% of the truth): {collapsed}: their verdicts say nothing about the mechanism")
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
}
if "motion" in ABLATION_EXTRAS:
    comparisons["full vs motion only (all val, 1 seed)"] = (per_seed("full")[:1], per_seed("motion"))
if "forward" in ABLATION_EXTRAS:
    comparisons["bidirectional vs forward (static_start, 1 seed)"] = (per_seed("full", "static_start")[:1],
                                                                      per_seed("forward", "static_start"))
if "kernel3" in ABLATION_EXTRAS:
    comparisons["7x7 vs 3x3 ConvGRU (all val, 1 seed)"] = (per_seed("full")[:1], per_seed("kernel3"))
effects = {name: stats.paired_effect(a, b, seed=SEED) for name, (a, b) in comparisons.items()}
for name, effect in effects.items():
    print(f"{name:<50} {effect.describe()}")

fig, ax = plt.subplots(figsize=(8, 0.45 * len(effects) + 1.2))
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
**Reading the verdict.** The lines above are computed from the intervals; what they mean:

* *motion on camouflage* is the paper's argument for the motion stream: on a video where the object
  has the background's texture, only motion shows it. The paper's ablation (DAVIS) finds the
  two-stream model well above either stream alone.
* *memory on stop_and_go / static_start* is the argument for the visual memory: without it the
  prediction at a frame where the object stands still has only that frame's (absent) motion. The
  paper finds the ConvGRU memory, its bidirectional pass and its $7\times7$ kernels each better than
  the simpler choice.
* Check the `fg pred` column first: a run whose predicted foreground is near zero has stayed at the
  constant "background everywhere" predictor (its loss never left the constant's), so a comparison
  with it says that one model learned within the schedule and the other did not, not how much the
  mechanism adds (the run table above names such runs; section 1.1 shows whether the frames-only
  `appearance` variant is one). A longer schedule (`ABLATION_STEPS`) is the honest fix, not another seed.
* One seed for the extra rows: a rough indication, not a verdict.
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


shown_variants = [v for v in ("appearance", "motion", "no_memory", "full") if v != "motion" or "motion" in ABLATION_EXTRAS]
variant_probs = {}
for variant in shown_variants:
    config = variant_config(variant, ABLATION_STEPS)
    net, _ = load_or_train(config, seed=ABLATION_SEEDS[0])
    variant_probs[variant] = prob_video(net, config, sg)
fig, axes = plt.subplots(1, 1 + len(shown_variants), figsize=(3.4 * (1 + len(shown_variants)), 3))
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


stopped_j = {v: stopped_frame_j(v) for v in shown_variants}
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
for variant in (("forward", "full") if "forward" in ABLATION_EXTRAS else ()):
    config = variant_config(variant, ABLATION_STEPS)
    net, _ = load_or_train(config, seed=ABLATION_SEEDS[0])
    pred = prob_video(net, config, ss) > 0.5
    gt = ss.masks().astype(bool)
    union = (pred | gt).sum((1, 2))
    frame_js[variant] = np.where(union > 0, (pred & gt).sum((1, 2)) / np.maximum(union, 1), 1.0)
if frame_js:
    fig, ax = plt.subplots(figsize=(7, 2.8))
    for v, js in frame_js.items():
        ax.plot(js, "o-", label="bidirectional" if v == "full" else "forward only")
    for t in np.flatnonzero(val_flags[demo["static_start"]]["stopped"]):
        ax.axvspan(t - 0.5, t + 0.5, color="0.88")
    ax.set(xlabel="frame (grey: object still)", ylabel="J", ylim=(0, 1), title=demo["static_start"])
    ax.legend()
    plt.show()
else:
    print("skipped: the forward-only run is not in ABLATION_EXTRAS (add 'forward' to train it, one seed)")
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

Each experiment changes one input of the trained model at inference and re-scores the val split
(no retraining: these probe what the trained weights rely on). **Before running the cells, write
down what you expect** (J&F up, down or the same, and on which scenario, and why); then compare.

**7.1 Oracle flow.** Give the trained model the synthetic ground-truth flow instead of DIS
(labelled *oracle*: a real video has no such flow). The motion stream was taught on ground-truth
flow; the memory read DIS flow during training.

**7.2 Blind the motion stream.** Feed zero flow at inference: the motion stream sees a static
world, as on the frames where an object stops. Which scenario should lose most?

**7.3 Play the video backwards.** Reverse the frames (and estimate the flow on the reversed
video), predict, and reverse the masks back. The memory runs in both directions, but its two
cells have different weights and were trained on videos played forwards.

Write your predictions in the next cell (tagged `prediction`: `"up"`, `"down"` or `"same"`, where
"same" means within 0.01 J&F over the val split); they are recorded before the experiment runs.
''')

code(r'''
MY_PREDICTIONS = {"7.1 oracle flow": None, "7.2 zero flow": None, "7.3 video played backwards": None}
''', tags=["prediction"])

code(r'''
for experiment, guess in MY_PREDICTIONS.items():
    exercises.predict(experiment, guess, choices=("up", "down", "same"))
''')

code(r'''
class ZeroFlow(torch.nn.Module):
    """The trained model with the flow replaced by zeros."""
    def __init__(self, net):
        super().__init__()
        self.net, self.cfg, self.uses_motion = net, net.cfg, net.uses_motion

    def forward(self, frames, flow=None, **kw):
        return self.net(frames, torch.zeros_like(flow), **kw)


class Reversed:
    """A val video played backwards (frames and masks; flow is estimated on the reversed frames)."""
    def __init__(self, seq):
        self.seq, self.name = seq, seq.name

    def __len__(self):
        return len(self.seq)

    def frames(self):
        return self.seq.frames()[::-1].copy()


def predict_backwards(net, seq, config):
    """Predict on the reversed video, then put the masks back in the original order."""
    return recipe.predict_sequence(net, Reversed(seq), config)[::-1].copy()


with Timer() as timer:
    oracle_scores, _ = score(model, main_cfg, {"flow": "oracle"})
    blind_scores, _ = score(ZeroFlow(model), main_cfg)
    backwards_scores, _ = score(model, main_cfg, predict_fn=predict_backwards)
timings["experiments"] = timer.seconds
experiments = {"as trained (DIS flow)": {"all": main_jf, **by_scenario}}
for name, sc_scores in (("7.1 oracle flow", oracle_scores), ("7.2 zero flow", blind_scores),
                        ("7.3 video played backwards", backwards_scores)):
    experiments[name] = {"all": float(np.mean(list(sc_scores.values()))),
                         **{sc: float(np.mean([v for k, v in sc_scores.items() if scenario_of[k] == sc])) for sc in val_sets}}
for name, values in experiments.items():
    print(f"{name:<28} J&F {values['all']:.3f} |", ", ".join(f"{sc} {values[sc]:.3f}" for sc in val_sets))
print("(7.1 reads the synthetic ground-truth flow: an ORACLE row)")
for name in MY_PREDICTIONS:
    change = experiments[name]["all"] - main_jf
    exercises.reveal(name, change, "up" if change > 0.01 else "down" if change < -0.01 else "same")
''')

md(r'''
## 8. Real video: DAVIS-2016 with ImageNet features

Synthetic shapes isolate the mechanisms; real footage is the test. The `real` preset trains LVO on
DAVIS-2016 frames at 240p with voslab's **ImageNet MobileNetV2** at 1/8 as the appearance stream,
frozen (its features computed once per frame and cached, `voslab.models._real`), DIS flow for the
memory and the motion stream (DAVIS has no ground-truth flow, so the motion stream learns from the
annotated mask), in at most 30 minutes on 2 CPU cores: 25 of the 30 DAVIS-2016 train sequences
train, 5 fixed ones are held out (`voslab.models._common.REAL_VAL`, chosen by a rule before any
score was seen). The weights are cached: `voslab train lvo --preset real` and this section share them.

Needs the DAVIS frames (`DATA_ROOT`, or the shared 240p copy that `voslab.utils.shared_data_dir()`
finds; get DAVIS with `python data_scripts/download_davis.py --year 2016 --root DIR`) and the
ImageNet weights (`python data_scripts/fetch_weights.py`). Without them the section says so and is
skipped. In the `smoke` preset it trains a few steps only (a check that it runs, not a result).
''')

code(r'''
import os                                                                      # noqa: E402  (section 8 only)

from voslab import presets, pretrained
from voslab.models._common import REAL_VAL, real_data_name
from voslab.utils import shared_data_dir

real_scores: dict[str, float] = {}
real_cfg = presets.get("lvo", "real")
real_root = DATA_ROOT if DATA_ROOT is not None else shared_data_dir() / real_data_name(real_cfg)
real_missing = [why for ok, why in (
    (pretrained.is_available("mobilenet_v2"), "the ImageNet weights (run `python data_scripts/fetch_weights.py`)"),
    (real_root is not None and os.path.isdir(real_root), f"DAVIS-2016 frames (set DATA_ROOT; looked for {real_data_name(real_cfg)}/ "
                                                         "under the shared data folder)"),
) if not ok]
run_real = REAL is True or (REAL == "auto" and not real_missing)
if REAL is True and real_missing:
    raise FileNotFoundError("REAL=True but missing: " + "; ".join(real_missing))
if not run_real:
    print("real-video section skipped:", "; ".join(real_missing) if real_missing else "REAL=False")
''')

code(r'''
if run_real:
    real_cfg["model"]["variant"] = "full"
    if PRESET == "smoke":                                                      # a check that it runs, not a result
        real_cfg["train"].update(steps=3, batch_size=1, clip_len=2)
        real_cfg["data"]["val"]["sequences"] = list(REAL_VAL[:1])
        real_cfg["eval"].update(flow_preset="ultrafast", inference_size=(120, 214))
    if REAL_SEQUENCES is not None:
        real_cfg["data"]["val"]["sequences"] = list(REAL_SEQUENCES)
    with Timer() as timer:
        real_model, real_history = recipe.load_or_train(real_cfg, DATA_ROOT, seed=SEED, device=device,
                                                        cache=None if CKPT in ("auto", "retrain") else CKPT,
                                                        force=CKPT == "retrain")
        real_model = real_model.to(device).eval()
        real_val = recipe.dataset(real_cfg, "val", DATA_ROOT)                  # held-out sequences, annotations' size
        real_results, real_predictions = inference.evaluate_model(
            real_model, real_val, functools.partial(recipe.predict_sequence, cfg=real_cfg), recipe.protocol("davis2016"),
            progress=False)
    timings["real_video"] = timer.seconds
    real_scores = {"J&F-Mean": real_results.summary["J&F-Mean"], "J-Mean": real_results.summary["J-Mean"],
                   "F-Mean": real_results.summary["F-Mean"], "train_seconds": real_history.seconds,
                   **{f"J&F {r['sequence']}": r["J&F-Mean"] for r in real_results.rows}}
    print(f"real preset: trained {real_cfg['train']['steps']} steps ({real_history.seconds:.0f} s, cached for re-runs); "
          f"held out {real_val.names}: J&F {real_scores['J&F-Mean']:.3f} (J {real_scores['J-Mean']:.3f})")
    display(real_results)
    real_worst = real_val[min(real_results.rows, key=lambda r: r["J&F-Mean"])["sequence"]]
    print(f"worst held-out sequence: {real_worst.name}")
    display(viz.compare(real_worst.frames(), real_predictions[real_worst.name], real_worst.masks(), max_frames=5))
''')

md(r'''
## Summary

The numbers below are read from this run's results.
''')

code(r'''
print(f"preset {PRESET}: LVO J&F {main_jf:.3f} on {len(main_scores)} val videos (" +
      ", ".join(f"{sc} {v:.3f}" for sc, v in by_scenario.items()) + ")")
print("frames only (appearance variant, section 1.1): " +
      ", ".join(f"{sc} {v:.3f}" for sc, v in by_scenario_of(frames_only_scores).items()))
print(f"motion stream on moving frames: object {motion_stats['trained']['object']:.2f} vs background "
      f"{motion_stats['trained']['background']:.2f} (untrained {motion_stats['untrained']['object']:.2f} / "
      f"{motion_stats['untrained']['background']:.2f})")
for name, effect in effects.items():
    print(f"{name}: {effect.describe()}")
if real_scores:
    print("real video:", {k: round(v, 3) for k, v in real_scores.items()})
''')

code(r'''
notebook.save_results(OUTPUT_DIR, "01_lvo", {
    "metrics": {
        "J&F-Mean": main_jf,
        "scenario J&F-Mean": by_scenario,
        "frames-only scenario J&F-Mean": by_scenario_of(frames_only_scores),
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
    "schedule": {"steps": STEPS, "ablation_steps": ABLATION_STEPS, "ablation_seeds": ABLATION_SEEDS,
                 "ablation_extras": ABLATION_EXTRAS},
    "config": main_cfg,
})
''')

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                          "name": "python3"}, "language_info": {"name": "python"}})
nbformat.write(nb, Path(__file__).with_name("01_lvo.ipynb"))
