"""`voslab predict` on a video: AD-Net's streamed protocol (bounded memory), its equality with the
whole-video protocol, clear errors for bad inputs, and no half-written outputs (issue 16, part 3)."""
from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from torch import nn

from voslab import cli, presets, zoo
from voslab.data.io import read_mask, write_mask
from voslab.inference import iter_predictions, predict
from voslab.models import adnet
from voslab.postprocess import gate_by_previous_mask

pytest.importorskip("decord")
imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")

H, W, T = 64, 112, 40


def _frames(n: int = T) -> np.ndarray:
    """A bright square moving over a textured background: uint8 (n, H, W, 3)."""
    rng = np.random.default_rng(0)
    bg = (rng.random((H // 8, W // 8, 3)) * 120).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.repeat(bg[None], n, axis=0)
    for t in range(n):
        x = 8 + (t * 2) % (W - 40)
        frames[t, 20:44, x:x + 24] = (230, 60, 40)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with imageio.get_writer(path, fps=10, codec="libx264", macro_block_size=1, format="FFMPEG",
                            ffmpeg_log_level="error") as writer:
        for frame in _frames():
            writer.append_data(frame)
    return path


@pytest.fixture(scope="module")
def seq(video, tmp_path_factory):
    from voslab.data.video import video_to_sequence

    return video_to_sequence(video, tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def smoke(seq):
    """The smoke AD-Net (untrained) and its preset, thresholded at the median logit of the test video so
    that the masks are neither empty nor full (the comparisons below are then not trivial)."""
    cfg = presets.get("adnet", "smoke")
    torch.manual_seed(0)
    model = adnet.build_model(cfg).eval()
    with torch.inference_mode():
        logits = adnet.predict_logits(model, seq.frames(), adnet.inference_config(model.cfg, cfg))
    return model, _cfg(cfg, threshold_on="logit", threshold=float(logits.median()))


@pytest.fixture(scope="module")
def weights(smoke, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "adnet.pt"
    torch.save(smoke[0].state_dict(), path)
    return path


def _old_predict_sequence(model, seq, cfg):
    """The whole-video protocol as it was before streaming (the reference)."""
    opts = adnet.inference_config(model.cfg, cfg)
    video = adnet.to_image_tensor(seq.frames(), "cpu")  # (T, 3, H, W)
    size = tuple(video.shape[-2:])
    base = opts.inference_size or size
    passes = [(s, f) for s in opts.scales for f in ((False, True) if opts.mirror else (False,))]
    total = torch.zeros(len(video), 1, *size)
    for scale, flip in passes:
        scaled = (max(8, round(base[0] * scale)), max(8, round(base[1] * scale)))
        anchor_emb = model.embed(adnet.hflip_if(adnet.resize(video[:1], scaled), flip))
        for start in range(0, len(video), opts.batch_frames):
            chunk = adnet.hflip_if(adnet.resize(video[start:start + opts.batch_frames], scaled), flip)
            frame_emb = model.embed(chunk)
            logits = model.head(anchor_emb.expand_as(frame_emb), frame_emb, scaled)["logits"]
            total[start:start + len(chunk)] += adnet.resize(adnet.hflip_if(logits, flip), size)
    logits = total / len(passes)
    masks = adnet.binarize(logits[:, 0], opts.threshold_on, opts.threshold).numpy().astype(np.uint8)
    if opts.prev_mask_dilation:
        for t in range(1, len(masks)):
            masks[t] = gate_by_previous_mask(masks[t], masks[t - 1])
    return logits, masks


def _cfg(cfg, **eval_overrides):
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    cfg["eval"] = {**cfg.get("eval", {}), **eval_overrides}
    return cfg


# ----------------------------------------------------------------------------- chunking
def test_chunk_frames_follows_the_matrix_budget(smoke):
    model, cfg = smoke
    opts = adnet.inference_config(model.cfg, cfg)
    assert adnet.chunk_frames(opts, (H, W)) == opts.batch_frames  # tiny grid: the preset's batch
    assert adnet.chunk_frames(opts, (480, 854)) == 1  # N = 60 x 107: one 165 MB matrix per frame already
    n = 60 * 107
    assert adnet.chunk_frames(opts, (480, 854), budget=3 * 4 * n * n * 5) == min(5, opts.batch_frames)


@pytest.mark.parametrize("budget", [None, 1])  # None: the default (whole batches); 1: one frame per chunk
def test_chunked_predict_sequence_equals_whole_video(smoke, seq, monkeypatch, budget):
    model, cfg = smoke
    cfg = _cfg(cfg, prev_mask_dilation=True, instance_pruning=False, batch_frames=3)
    if budget is not None:
        monkeypatch.setattr(adnet, "MATRIX_BUDGET_BYTES", budget)
    with torch.inference_mode():
        old_logits, old_masks = _old_predict_sequence(model, seq, cfg)
        logits = adnet.predict_logits(model, seq.frames(), adnet.inference_config(model.cfg, cfg))
    torch.testing.assert_close(logits, old_logits, rtol=1e-5, atol=1e-5)
    masks = predict(model, seq, lambda m, s: adnet.predict_sequence(m, s, cfg))
    np.testing.assert_array_equal(masks, old_masks)
    assert 0 < masks.mean() < 1  # a non-trivial comparison


def test_predict_stream_equals_predict_sequence(smoke, seq, monkeypatch):
    model, cfg = smoke
    cfg = _cfg(cfg, prev_mask_dilation=True, instance_pruning=False)
    monkeypatch.setattr(adnet, "MATRIX_BUDGET_BYTES", 1)  # one frame per chunk: the gate crosses chunks
    whole = predict(model, seq, lambda m, s: adnet.predict_sequence(m, s, cfg))
    streamed = list(iter_predictions(model, seq, lambda m, s: adnet.predict_stream(m, s, cfg)))
    assert [t for t, _ in streamed] == list(range(len(seq)))
    np.testing.assert_array_equal(np.stack([m for _, m in streamed]), whole)


def test_predict_stream_with_instance_pruning_falls_back_to_the_whole_video(smoke, seq):
    model, cfg = smoke
    cfg = _cfg(cfg, instance_pruning=True)
    whole = predict(model, seq, lambda m, s: adnet.predict_sequence(m, s, cfg))
    with pytest.warns(UserWarning, match="instance_pruning needs the whole video"):
        streamed = [m for _, m in iter_predictions(model, seq, lambda m, s: adnet.predict_stream(m, s, cfg))]
    np.testing.assert_array_equal(np.stack(streamed), whole)


def count_frame_reads(seq, monkeypatch) -> list[int]:
    """A list that receives the number of frames of each ``seq.frames(...)`` call from now on."""
    read: list[int] = []
    original = type(seq).frames

    def spy(self, indices=None):
        read.append(len(self) if indices is None else len(indices))
        return original(self, indices)

    monkeypatch.setattr(type(seq), "frames", spy)
    return read


def test_predict_stream_reads_frames_chunk_by_chunk(smoke, seq, monkeypatch):
    model, cfg = smoke
    read = count_frame_reads(seq, monkeypatch)
    cfg = _cfg(cfg, instance_pruning=False, batch_frames=4)
    for _ in iter_predictions(model, seq, lambda m, s: adnet.predict_stream(m, s, cfg)):
        pass
    assert max(read) == 4 and sum(read) == len(seq)


def test_zoo_exposes_predict_stream_when_defined():
    assert zoo.get("adnet").predict_stream is adnet.predict_stream


# ----------------------------------------------------------------------------- the command line
def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_cli_predict_video_streams_the_same_masks(capsys, smoke, seq, video, weights, tmp_path):
    model, cfg = smoke
    out = tmp_path / "pred"
    code, _, err = run(capsys, "predict", video, "--model", "adnet", "--preset", "smoke", "--ckpt", weights,
                       "--device", "cpu", "--out", out, "--set", "eval.threshold_on=logit",
                       "--set", f"eval.threshold={cfg['eval']['threshold']!r}")
    assert code == 0, err
    pngs = sorted((out / "clip").glob("*.png"))
    assert len(pngs) == T
    expected = predict(model, seq, lambda m, s: adnet.predict_sequence(m, s, cfg))
    np.testing.assert_array_equal(np.stack([read_mask(p) for p in pngs]), expected)
    assert 0 < expected.mean() < 1
    reader = imageio.get_reader(out / "overlay.mp4")
    assert reader.count_frames() == T
    reader.close()
    assert _leftovers(tmp_path) == []


def test_corrupt_video_is_a_clear_error_and_writes_nothing(capsys, weights, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    code, _, err = run(capsys, "predict", bad, "--model", "adnet", "--preset", "smoke", "--ckpt", weights,
                       "--device", "cpu", "--out", tmp_path / "pred")
    assert code == 2
    assert str(bad) in err and "ffmpeg" in err and "Traceback" not in err
    assert not (tmp_path / "pred").exists() and _leftovers(tmp_path) == []


def test_error_mid_video_leaves_no_half_written_output(video, weights, tmp_path, monkeypatch):
    class Boom(RuntimeError):
        pass

    def failing_stream(model, seq, cfg):
        for t, mask in adnet.predict_stream(model, seq, cfg):
            if t == 5:
                raise Boom("frame 5")
            yield t, mask

    recipe = dataclasses.replace(zoo.get("adnet"), predict_stream=failing_stream)
    monkeypatch.setattr(cli, "_recipe", lambda name: recipe)
    out = tmp_path / "pred"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    with pytest.raises(Boom):
        cli.main(["predict", str(video), "--model", "adnet", "--preset", "smoke", "--ckpt", str(weights),
                  "--device", "cpu", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # earlier results untouched, nothing new
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- semi-supervised first masks
@pytest.fixture()
def semi_zoo(tmp_path):
    """A fake semi-supervised recipe (propagates the first mask) and its weights."""
    mod = types.ModuleType("fake_semi")
    mod.TASK = "semi"
    mod.PRESETS = {"smoke": {"data": {}, "model": {}, "train": {}, "eval": {}}}
    mod.build_model = lambda cfg: nn.Conv2d(3, 1, 1)
    mod.train_dataset = lambda cfg, root=None: []
    mod.training_step = lambda model, batch, cfg: {}
    mod.predict_sequence = lambda model, seq, cfg: np.repeat(seq.mask(0)[None], len(seq), axis=0)
    zoo.register("fakesemi", mod)
    weights = tmp_path / "semi.pt"
    torch.save(nn.Conv2d(3, 1, 1).state_dict(), weights)
    yield weights
    zoo.REGISTRY.pop("fakesemi", None)


def test_semi_model_with_a_good_first_mask_writes_masks(capsys, semi_zoo, video, tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[20:44, 8:32] = 1
    write_mask(tmp_path / "first.png", mask)
    out = tmp_path / "pred"
    code, _, err = run(capsys, "predict", video, "--model", "fakesemi", "--preset", "smoke", "--ckpt", semi_zoo,
                       "--device", "cpu", "--out", out, "--first-mask", tmp_path / "first.png")
    assert code == 0, err
    assert len(list((out / "clip").glob("*.png"))) == T


@pytest.mark.parametrize("shape,fill,message", [
    ((32, 56), 1, "is 56x32 but the frames"),
    ((H, W), 0, "marks no object"),
])
def test_bad_first_mask_is_a_clear_error(capsys, semi_zoo, video, tmp_path, shape, fill, message):
    mask = np.full(shape, fill, np.uint8)
    write_mask(tmp_path / "first.png", mask)
    code, _, err = run(capsys, "predict", video, "--model", "fakesemi", "--preset", "smoke", "--ckpt", semi_zoo,
                       "--device", "cpu", "--out", tmp_path / "pred", "--first-mask", tmp_path / "first.png")
    assert code == 2
    assert message in err and str(tmp_path / "first.png") in err and "Traceback" not in err
    assert not (tmp_path / "pred").exists() and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- semi-supervised streams
@pytest.fixture(scope="module")
def seq_with_first_mask(video, tmp_path_factory):
    """The test video as a sequence whose frame 0 carries a mask: the square (1) and a patch of background (2)."""
    from voslab.data.davis import write_sequence

    mask = np.zeros((H, W), np.uint8)
    mask[20:44, 8:32] = 1
    mask[48:60, 80:100] = 2
    from voslab.data.video import VideoReader

    frames = [f for block in VideoReader(video).iter_chunks(16) for f in block]
    return write_sequence(tmp_path_factory.mktemp("semi"), "clip", frames, masks={0: mask})


@pytest.mark.parametrize("name", ["agss", "feelvos"])
def test_semi_predict_stream_equals_predict_sequence_reading_one_frame_at_a_time(name, seq_with_first_mask,
                                                                                 monkeypatch):
    recipe = zoo.get(name)
    assert recipe.predict_stream is not None, f"{name} has no predict_stream: voslab predict would hold the whole video"
    cfg = presets.get(name, "smoke")
    torch.manual_seed(0)
    model = recipe.build_model(cfg).eval()
    seq = seq_with_first_mask
    whole = predict(model, seq, lambda m, s: recipe.predict_sequence(m, s, cfg))
    assert set(np.unique(whole)) - {0, 1, 2} == set() and len(np.unique(whole)) > 1

    read = count_frame_reads(seq, monkeypatch)
    streamed = [(t, m) for t, m in iter_predictions(model, seq, lambda m, s: recipe.predict_stream(m, s, cfg))]
    assert [t for t, _ in streamed] == list(range(len(seq)))
    np.testing.assert_array_equal(np.stack([m for _, m in streamed]), whole)
    assert max(read) == 1 and sum(read) == len(seq)


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(capsys, video, weights, tmp_path):
    """SIGKILL (or the out-of-memory killer) leaves the hidden staging folder behind; the next run into
    the same output removes the ones whose process is gone, and keeps a live run's."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out = tmp_path / "pred"
    dead, alive = tmp_path / ".pred.partial-dead", tmp_path / ".pred.partial-alive"
    stray_overlay = tmp_path / ".overlay.partial.mp4"
    for stage, pid, overlay in ((dead, victim.pid, stray_overlay), (alive, os.getpid(), None)):
        (stage / "clip").mkdir(parents=True)
        (stage / "clip" / "00000.png").write_bytes(b"half-written")
        (stage / ".owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                       "overlay": overlay and str(overlay)}))
    stray_overlay.write_bytes(b"half-written")
    code, _, err = run(capsys, "predict", video, "--model", "adnet", "--preset", "smoke", "--ckpt", weights,
                       "--device", "cpu", "--out", out)
    assert code == 0, err
    assert f"removed {dead}" in err and "interrupted run" in err
    assert not dead.exists() and not stray_overlay.exists()
    assert alive.is_dir()                      # a run still going is left alone
    assert len(list((out / "clip").glob("*.png"))) == T
    assert not (out / ".owner.json").exists() and _leftovers(tmp_path) == [alive.name]
