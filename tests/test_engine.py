"""Tests for voslab.engine: the loop, schedules, exact resume, divergence, DDP on 2 CPU processes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import namedtuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from voslab import engine, train_state
from voslab.errors import TrainingDivergedError


class NoisyRegression(Dataset):
    """y = x @ w_true + noise; the noise and an input flip use the *global* torch RNG (like
    augmentation does), so exact resume also needs the RNG states restored."""

    def __init__(self, n: int = 13, dim: int = 6):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, dim, generator=g)
        self.w = torch.randn(dim, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] * (1 if torch.rand(()) < 0.5 else -1)
        return {"x": x, "y": x @ self.w + 0.01 * torch.randn(1)}


class Deterministic(NoisyRegression):
    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.x[i] @ self.w}


def make_model(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def mse_step(model: nn.Module, batch: dict) -> dict:
    pred = model(batch["x"])
    loss = nn.functional.mse_loss(pred, batch["y"])
    return {"loss": loss, "abs_err": (pred - batch["y"]).abs().mean(), "map": pred.detach()}


def train(steps: int, ckpt_dir=None, on_step=None, lr: float = 0.05, data=None, **kw):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = engine.poly_schedule(opt, total_steps=20)
    hist = engine.fit(model, mse_step, data if data is not None else NoisyRegression(), optimizer=opt,
                      scheduler=sched, steps=steps, device="cpu", batch_size=4, ckpt_dir=ckpt_dir,
                      ckpt_every=5, progress=False, seed=7, on_step=on_step, **kw)
    return model, hist


def test_poly_schedule_matches_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = engine.poly_schedule(opt, total_steps=10, power=0.9)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * (1 - min(s, 10) / 10) ** 0.9 for s in range(12)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        engine.poly_schedule(opt, total_steps=0)


def test_fit_learns_and_records_history():
    model, hist = train(steps=20, lr=0.05, data=Deterministic())
    assert len(hist) == 20 and hist.steps == list(range(1, 21))
    assert sum(hist.losses[-3:]) < 0.5 * sum(hist.losses[:3])
    assert set(hist.metrics) == {"abs_err", "lr"}  # non-scalar "map" is not logged
    assert hist.metrics["lr"] == pytest.approx([0.05 * (1 - s / 20) ** 0.9 for s in range(20)])
    d = hist.as_dict()
    assert d["loss"] == hist.losses and d["lr"] == hist.metrics["lr"]
    assert hist.seconds > 0


def test_resume_after_crash_is_bit_identical(tmp_path):
    ref_model, ref_hist = train(steps=20)

    def crash(step, logs):
        if step == 12:
            raise KeyboardInterrupt  # a crash two steps after the step-10 checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(steps=20, ckpt_dir=tmp_path, on_step=crash)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 10
    model, hist = train(steps=20, ckpt_dir=tmp_path)  # brand-new model/optimizer/scheduler objects

    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert hist.losses == ref_hist.losses and hist.steps == list(range(1, 21))
    # a finished run resumes to "nothing left to do"
    again, hist2 = train(steps=20, ckpt_dir=tmp_path)
    assert torch.equal(again[0].weight, model[0].weight) and len(hist2) == 20


def test_resume_without_rng_restore_would_differ(tmp_path, monkeypatch):
    """Guard that the resume test can fail: skipping the RNG restore changes the result."""
    ref_model, _ = train(steps=20)
    train(steps=10, ckpt_dir=tmp_path)
    monkeypatch.setattr(train_state, "set_rng_state", lambda state: None)
    model, _ = train(steps=20, ckpt_dir=tmp_path)
    assert not torch.equal(ref_model[0].weight, model[0].weight)


def test_dataloader_input_is_equivalent_to_dataset():
    data = Deterministic()
    a, ha = train(steps=8, data=data)
    b, hb = train(steps=8, data=DataLoader(data, batch_size=4, shuffle=True))
    assert ha.losses == hb.losses and torch.equal(a[0].weight, b[0].weight)


def test_divergence_names_the_step():
    def step_fn(model, batch):
        loss = model(batch["x"]).pow(2).mean()
        return {"loss": loss * (float("nan") if state["n"] == 3 else 1.0)}

    state = {"n": 0}

    def count(step, logs):
        state["n"] = step

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(TrainingDivergedError, match=r"step 4.*learning rate.*grad_clip"):
        engine.fit(model, step_fn, Deterministic(), optimizer=opt, steps=10, device="cpu", progress=False,
                   on_step=count)


def test_grad_clip_bounds_the_update():
    model = make_model(dropout=0.0)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    big = lambda m, b: {"loss": 1e3 * m(b["x"]).pow(2).mean()}  # noqa: E731
    hist = engine.fit(model, big, Deterministic(), optimizer=opt, steps=1, device="cpu", progress=False,
                      grad_clip=0.1)
    change = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before
    assert hist.metrics["grad_norm"][0] > 0.1  # the raw norm was larger ...
    assert change.norm().item() == pytest.approx(0.1, rel=1e-4)  # ... and the step was clipped to 0.1


def test_bad_training_step_output_is_explained():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="scalar tensor 'loss'"):
        engine.fit(model, lambda m, b: m(b["x"]), Deterministic(), optimizer=opt, steps=1, device="cpu",
                   progress=False)


def test_log_progress_lines_are_short(capsys):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    engine.fit(model, mse_step, Deterministic(), optimizer=opt, steps=10, device="cpu", progress="log",
               log_every=5)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step 5/10") and lines[1].startswith("step 10/10")
    assert lines[0].endswith(" left") and not lines[1].endswith(" left")


@pytest.mark.parametrize("progress", ["log", "bar"])
def test_long_runs_print_a_time_estimate_once(capsys, monkeypatch, progress):
    monkeypatch.setattr(engine._Progress, "ESTIMATE_AFTER", 0.0)  # as if each step took long
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    engine.fit(model, mse_step, Deterministic(), optimizer=opt, steps=10, device="cpu", progress=progress,
               log_every=5)
    estimates = [line for line in capsys.readouterr().out.splitlines() if line.startswith("estimate:")]
    assert len(estimates) == 1 and "remaining 9 of 10 steps" in estimates[0]
    engine.fit(model, mse_step, Deterministic(), optimizer=opt, steps=10, device="cpu", progress=False)
    assert "estimate" not in capsys.readouterr().out


def test_move_to_device_nested():
    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.zeros(2), "list": [torch.ones(1), "name"], "pair": Pair(torch.ones(1), 3)}
    moved = engine.move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["pair"], Pair) and moved["list"][1] == "name" and moved["pair"].b == 3
    img = engine.move_to_device(torch.zeros(1, 3, 4, 5), torch.device("cpu"), channels_last=True)
    assert img.is_contiguous(memory_format=torch.channels_last)


def test_history_pads_late_metrics_and_plots():
    import matplotlib

    matplotlib.use("Agg")
    from voslab.viz import plot_curves

    hist = engine.History()
    for s in range(1, 4):
        hist.record(s, {"loss": 1.0 / s, "lr": 0.1})
    hist.record(4, {"loss": 0.2, "lr": 0.1, "late": 1.0})
    assert hist.metrics["late"][:3] == pytest.approx([float("nan")] * 3, nan_ok=True)
    fig = plot_curves(hist)
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["late", "loss", "lr"]
    assert list(lines["loss"]) == pytest.approx([1.0, 0.5, 1 / 3, 0.2])


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {test_dir!r})
    from test_engine import Deterministic, make_model, mse_step
    from voslab import engine
    model = make_model(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = engine.fit(model, mse_step, Deterministic(n=16), optimizer=opt, steps=6, device="cpu",
                      batch_size=2, progress=False, ckpt_dir=sys.argv[1] + "/ckpt", ckpt_every=3)
    torch.save({{"w": model.state_dict(), "losses": hist.losses}},
               os.path.join(sys.argv[1], "rank%s.pt" % os.environ["RANK"]))
""")


def test_ddp_two_cpu_processes_match_single_process_large_batch(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(test_dir=os.path.dirname(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["w"]:
        assert torch.equal(r0["w"][k], r1["w"][k]), k
    assert r0["losses"] == r1["losses"]  # logged losses are averaged over ranks
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    # 2 ranks x batch 2 with DistributedSampler == 1 process x batch 4 (same samples, mean loss)
    model = make_model(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = engine.fit(model, mse_step, Deterministic(n=16), optimizer=opt, steps=6, device="cpu", batch_size=4,
                      progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(r0["w"][k], v, rtol=1e-5, atol=1e-6)
    assert r0["losses"] == pytest.approx(hist.losses, rel=1e-5)


def test_amp_choices():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert engine.amp_dtype("auto", cuda) == torch.float16 and engine.amp_dtype("auto", cpu) is None
    assert engine.amp_dtype(True, cpu) == torch.bfloat16 and engine.amp_dtype(False, cuda) is None
    with pytest.raises(ValueError, match="amp"):
        engine.amp_dtype("yes", cpu)


def test_bf16_autocast_and_progress_bar_on_cpu(capsys):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    hist = engine.fit(model, mse_step, Deterministic(), optimizer=opt, steps=12, device="cpu", amp="bf16",
                      progress="bar", log_every=4)
    assert all(torch.isfinite(torch.tensor(hist.losses))) and hist.losses[-1] < hist.losses[0]
    assert "12/12" in capsys.readouterr().err  # tqdm writes to stderr


def test_validation_is_recorded_and_leaves_training_unchanged():
    data = NoisyRegression()
    held_out = Deterministic(n=8)[0]
    calls = []

    def validate(model):
        calls.append(model.training)
        pred = model(held_out["x"][None])
        torch.rand(3)  # consuming randomness here must not change training
        return {"mse": nn.functional.mse_loss(pred, held_out["y"][None])}

    plain, _ = train(steps=10, data=data)
    model, hist = train(steps=10, data=data, validate=validate, validate_every=4)
    assert calls == [False, False, False]  # steps 4, 8 and the last one, in eval mode
    val = hist.metrics["val_mse"]
    assert [i + 1 for i, v in enumerate(val) if v == v] == [4, 8, 10]
    for a, b in zip(plain.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
