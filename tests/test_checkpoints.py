"""Tests for voslab.checkpoints: atomic saves, safe loads, config hashes, the load-or-train cache."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

import voslab
from voslab import checkpoints
from voslab.errors import VOSDataError


class Opaque:
    """Not a plain state: weights_only loading must refuse it."""


def test_save_atomic_writes_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "a.pt"
    checkpoints.save_atomic({"w": torch.arange(3)}, path)
    assert torch.equal(checkpoints.load_state(path)["w"], torch.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "a.pt"
    checkpoints.save_atomic({"step": 1}, path)
    with pytest.raises(Exception):
        checkpoints.save_atomic({"step": 2, "bad": lambda: None}, path)  # lambdas cannot be pickled
    assert checkpoints.load_state(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_load_state_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoints.load_state(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"obj": Opaque()}, foreign)
    with pytest.raises(VOSDataError, match="foreign.pt.*delete it"):
        checkpoints.load_state(foreign)
    truncated = tmp_path / "truncated.pt"
    checkpoints.save_atomic({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:50])
    with pytest.raises(VOSDataError, match="truncated.pt"):
        checkpoints.load_state(truncated)


def test_config_hash_is_canonical():
    a = {"model": {"width": 8, "name": "x"}, "size": (64, 96)}
    b = {"size": [64, 96], "model": {"name": "x", "width": 8}}
    assert checkpoints.config_hash(a) == checkpoints.config_hash(b)
    expected = hashlib.sha1(b'{"model":{"name":"x","width":8},"size":[64,96]}').hexdigest()[:12]
    assert checkpoints.config_hash(a) == expected
    assert checkpoints.config_hash({**a, "size": (64, 97)}) != expected
    with pytest.raises(TypeError, match="not JSON-able"):
        checkpoints.config_hash({"f": Opaque()})


def test_checkpoint_path_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_CACHE", str(tmp_path / "cache"))
    cfg = {"lr": 0.1}
    path = checkpoints.checkpoint_path("net", cfg)
    assert path == tmp_path / "cache" / "checkpoints" / f"net-{checkpoints.config_hash(cfg)}-v{voslab.__version__}.pt"
    assert checkpoints.checkpoint_path("net", cfg, cache=tmp_path / "explicit.pt") == tmp_path / "explicit.pt"
    assert checkpoints.checkpoint_path("net", cfg, cache=tmp_path / "dir").parent == tmp_path / "dir"


def make_net() -> nn.Module:
    return nn.Linear(3, 2)


def test_load_or_train_caches_and_reloads(tmp_path):
    calls = []

    def train_fn():
        calls.append(1)
        torch.manual_seed(len(calls))
        return make_net()

    cfg = {"lr": 0.1, "steps": 5}
    first = checkpoints.load_or_train("net", cfg, train_fn, model_fn=make_net, cache=tmp_path, verbose=False)
    second = checkpoints.load_or_train("net", cfg, train_fn, model_fn=make_net, cache=tmp_path, verbose=False)
    assert len(calls) == 1 and torch.equal(first.weight, second.weight)

    path = checkpoints.checkpoint_path("net", cfg, tmp_path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["config"] == cfg and sidecar["name"] == "net" and sidecar["train_seconds"] >= 0
    state = torch.load(path, weights_only=True)
    assert set(state) == {"model", "config", "meta"} and state["config"] == cfg

    forced = checkpoints.load_or_train("net", cfg, train_fn, model_fn=make_net, cache=tmp_path, force=True,
                                       verbose=False)
    assert len(calls) == 2 and not torch.equal(forced.weight, first.weight)
    checkpoints.load_or_train("net", {**cfg, "lr": 0.2}, train_fn, model_fn=make_net, cache=tmp_path, verbose=False)
    assert len(calls) == 3  # another config, another file


def test_load_or_train_explicit_path(tmp_path):
    path = tmp_path / "mine.pt"
    model = checkpoints.load_or_train("custom", {}, make_net, model_fn=make_net, cache=path, verbose=False)
    assert path.is_file()
    again = checkpoints.load_or_train("custom", {}, make_net, model_fn=make_net, cache=path, verbose=False)
    assert torch.equal(again.weight, model.weight)


def test_load_weights_accepts_bare_state_dict_and_explains_mismatch(tmp_path):
    net = make_net()
    checkpoints.save_atomic(net.state_dict(), tmp_path / "bare.pt")
    other = checkpoints.load_weights(make_net(), tmp_path / "bare.pt")
    assert torch.equal(other.weight, net.weight)
    with pytest.raises(VOSDataError, match="do not fit this model"):
        checkpoints.load_weights(nn.Linear(4, 2), tmp_path / "bare.pt")


def test_cached_weights_keep_their_training_curves(tmp_path):
    from voslab.train_state import History

    history = History(losses=[0.9, 0.5, 0.2], metrics={"iou": [0.1, 0.4, 0.7]}, steps=[1, 2, 3], seconds=1.5)
    checkpoints.load_or_train("net", {"a": 1}, lambda: (make_net(), history), model_fn=make_net, cache=tmp_path,
                              verbose=False)
    meta = checkpoints.load_metadata(checkpoints.checkpoint_path("net", {"a": 1}, tmp_path))
    restored = History.from_state_dict(meta["history"])
    assert restored.as_dict() == history.as_dict() and restored.seconds == 1.5
    with pytest.raises(FileNotFoundError, match="metadata"):
        checkpoints.load_metadata(tmp_path / "nothing.pt")
