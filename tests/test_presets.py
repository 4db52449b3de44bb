"""voslab.presets and voslab.notebook (parameter resolution, results)."""
from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from voslab import exercises, jupyter, notebook, presets


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Each test starts without VOSLAB_* parameter variables and without a resolved session."""
    for key in list(notebook.DEFAULTS) + ["STEPS", "LR", "WIDTH"]:
        monkeypatch.delenv(f"VOSLAB_{key}", raising=False)
    monkeypatch.setattr(notebook, "_session", {})
    monkeypatch.setitem(jupyter._state, "INTERACTIVE", None)


FAKE_PRESETS = {
    "smoke": {"data": {"n_videos": 2}, "model": {"width": 8}, "train": {"steps": 3, "lr": 0.1}, "eval": {}},
    "cpu": {"data": {"n_videos": 6}, "model": {"width": 16}, "train": {"steps": 200, "lr": 0.01}, "eval": {}},
}


@pytest.fixture
def fake_zoo(monkeypatch):
    """A stand-in ``voslab.zoo`` whose ``get("toy")`` recipe carries FAKE_PRESETS."""
    module = types.ModuleType("voslab.zoo")
    module.get = lambda name: types.SimpleNamespace(name=name, presets=FAKE_PRESETS) if name == "toy" else (_ for _ in ()).throw(KeyError(name))
    monkeypatch.setitem(sys.modules, "voslab.zoo", module)
    import voslab

    monkeypatch.setattr(voslab, "zoo", module, raising=False)
    return module


# --------------------------------------------------------------------------- parse_value
@pytest.mark.parametrize("text, value", [
    ("True", True), ("False", False), ("None", None), ("3", 3), ("-2", -2), ("0.5", 0.5),
    ("1e-3", 1e-3), ("smoke", "smoke"), ("", ""), ("true", "true"),
])
def test_parse_value_like_papermill(text, value):
    got = notebook.parse_value(text)
    assert got == value and type(got) is type(value)


def test_parse_value_matches_papermill_cli():
    from papermill import cli

    for text in ["True", "None", "12", "1.5", "abc", "-0", "nan"]:
        mine, theirs = notebook.parse_value(text), cli._resolve_type(text)
        assert (mine == theirs) or (isinstance(mine, float) and math.isnan(mine) and math.isnan(theirs))


# --------------------------------------------------------------------------- resolve
def test_resolve_priority_papermill_over_notebook_over_env_over_default(monkeypatch):
    ns = {
        "PRESET": "auto", "SEED": None, "DEVICE": "cuda", "OUTPUT_DIR": None, "DATA_ROOT": None,
        "INTERACTIVE": None,
        # papermill's injected cell, as the kernel's input history records it
        "_ih": ["", 'PRESET = "auto"\nSEED = None\nDEVICE = "cuda"\nOUTPUT_DIR = None\nDATA_ROOT = None\nINTERACTIVE = None',
                '# Parameters\nSEED = 7\nDATA_ROOT = "/data"\n', "P = notebook.resolve(globals())"],
    }
    ns.update(SEED=7, DATA_ROOT="/data")  # the injected cell ran
    monkeypatch.setenv("VOSLAB_PRESET", "smoke")
    monkeypatch.setenv("VOSLAB_SEED", "99")       # loses to papermill
    monkeypatch.setenv("VOSLAB_DEVICE", "cpu")    # loses to the explicit notebook value
    p = notebook.resolve(ns, verbose=False)
    assert p.values["PRESET"] == "smoke" and p.sources["PRESET"] == "$VOSLAB_PRESET"
    assert p.SEED == 7 and p.sources["SEED"] == "papermill"
    assert p.DATA_ROOT == "/data" and p.sources["DATA_ROOT"] == "papermill"
    assert p.DEVICE == "cuda" and p.sources["DEVICE"] == "notebook"
    assert p.OUTPUT_DIR == "outputs" and p.sources["OUTPUT_DIR"] == "default"
    assert p.injected == {"SEED", "DATA_ROOT"}
    assert ns["PRESET"] == "smoke"  # namespace updated


def test_resolve_injected_sentinel_beats_env(monkeypatch):
    """`-p DEVICE auto` is an explicit choice even though "auto" is a sentinel."""
    monkeypatch.setenv("VOSLAB_DEVICE", "cpu")
    ns = {"DEVICE": "auto", "In": ['# Parameters\nDEVICE = "auto"\n']}
    assert notebook.resolve(ns, verbose=False).DEVICE == "auto"


def test_resolve_env_values_are_parsed(monkeypatch):
    monkeypatch.setenv("VOSLAB_SEED", "5")
    monkeypatch.setenv("VOSLAB_INTERACTIVE", "False")
    p = notebook.resolve({"SEED": None, "INTERACTIVE": None}, verbose=False)
    assert p.SEED == 5 and p.INTERACTIVE is False


def test_resolve_notebook_defaults_override_builtin():
    p = notebook.resolve({"PRESET": "auto"}, defaults={"PRESET": "smoke"}, verbose=False)
    assert p.PRESET == "smoke" and p.sources["PRESET"] == "default"


def test_resolve_without_anything_gives_builtin_defaults():
    p = notebook.resolve({}, verbose=False)
    assert p.PRESET == "cpu" and p.SEED == 0 and p.OUTPUT_DIR == "outputs" and p.INTERACTIVE is False


def test_resolve_fills_and_overrides_preset(fake_zoo, monkeypatch):
    monkeypatch.setenv("VOSLAB_LR", "0.5")
    ns = {"PRESET": "smoke", "STEPS": None, "LR": None, "WIDTH": 32}
    p = notebook.resolve(ns, model="toy", verbose=False)
    assert p.STEPS == 3 and p.sources["STEPS"] == "preset['train']"          # unset -> preset
    assert p.LR == 0.5 and p.config["train"]["lr"] == 0.5                   # env -> written back
    assert p.WIDTH == 32 and p.config["model"]["width"] == 32               # notebook -> written back
    assert FAKE_PRESETS["smoke"]["model"]["width"] == 8                     # the registry is untouched


def test_resolve_unknown_preset_names_the_choices(fake_zoo):
    with pytest.raises(KeyError, match="smoke"):
        notebook.resolve({"PRESET": "huge"}, model="toy", verbose=False)


def test_params_unknown_attribute_is_explained():
    p = notebook.resolve({}, verbose=False)
    with pytest.raises(AttributeError, match="known"):
        p.NOPE


# --------------------------------------------------------------------------- interactivity
def test_is_interactive_outside_a_kernel_is_false():
    assert notebook.is_interactive() is False


def test_is_interactive_explicit_and_env(monkeypatch):
    assert notebook.is_interactive(True) is True
    monkeypatch.setenv("VOSLAB_INTERACTIVE", "1")
    assert notebook.is_interactive() is True
    assert notebook.is_interactive(False) is False
    monkeypatch.setenv("VOSLAB_INTERACTIVE", "maybe")
    with pytest.raises(ValueError, match="INTERACTIVE"):
        notebook.is_interactive()


def test_is_interactive_follows_resolve(monkeypatch):
    notebook.resolve({"INTERACTIVE": True}, verbose=False)
    assert notebook.is_interactive() is True


def test_is_interactive_in_kernel_unless_papermill(monkeypatch):
    class ZMQInteractiveShell:  # the class name is what is checked
        user_ns: dict = {"_ih": ["", "x = 1"]}

    shell = ZMQInteractiveShell()
    monkeypatch.setattr(jupyter, "_ipython_shell", lambda: shell)
    assert notebook.is_interactive() is True
    shell.user_ns = {"_ih": ["", '# Parameters\nPRESET = "smoke"\n']}
    assert notebook.is_interactive() is False


# --------------------------------------------------------------------------- results
def test_save_results_round_trip(tmp_path):
    notebook.resolve({"PRESET": "smoke", "SEED": 3}, verbose=False)
    path = notebook.save_results(tmp_path / "out", "demo", {
        "metrics": {"J&F-Mean": np.float32(0.5), "per_frame": np.array([1.0, np.nan])},
        "timings": {"train": 1.25}, "where": tmp_path,
    })
    assert path == tmp_path / "out" / "demo.json"
    data = json.loads(path.read_text())  # strict JSON: NaN became null
    assert data["preset"] == "smoke" and data["seed"] == 3 and data["notebook"] == "demo"
    assert data["metrics"] == {"J&F-Mean": 0.5, "per_frame": [1.0, None]}
    assert data["timings"] == {"train": 1.25}
    assert data["voslab_version"] and data["environment"]["torch"] == torch.__version__
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_save_results_rejects_paths_as_names(tmp_path):
    with pytest.raises(ValueError, match="stem"):
        notebook.save_results(tmp_path, "a/b.json", {})


# --------------------------------------------------------------------------- presets
def test_synthetic_presets_grow_and_are_copies():
    smoke, cpu = presets.synthetic("smoke"), presets.synthetic("cpu")
    assert smoke["n_videos"] * smoke["n_frames"] < cpu["n_videos"] * cpu["n_frames"]
    smoke["n_videos"] = 1000
    assert presets.synthetic("smoke")["n_videos"] != 1000
    assert presets.synthetic("cpu", seed=4)["seed"] == 4
    with pytest.raises(KeyError, match="unknown config"):
        presets.synthetic("cpu", colour=1)
    with pytest.raises(KeyError, match="VOSLAB_PRESET"):
        presets.synthetic("laptop")


def test_get_returns_deep_copy(fake_zoo):
    cfg = presets.get("toy", "cpu")
    cfg["train"]["steps"] = 1
    assert presets.get("toy", "cpu")["train"]["steps"] == 200


def test_real_models_have_all_presets():
    """Every model in the zoo registry has smoke/cpu/gpu presets with the four sections."""
    from voslab import zoo

    names = zoo.available()
    assert "adnet" in names
    for name in names:
        for preset in presets.PRESET_NAMES:
            cfg = presets.get(name, preset)
            assert {"data", "model", "train", "eval"} <= set(cfg), f"{name}/{preset}: sections {sorted(cfg)}"


def test_parameter_names_come_from_the_parameters_cell_in_the_history():
    ns = {"PRESET": "smoke", "T": 5, "H": 64, "_ih": ["", 'PRESET = "auto"\nSEED = 0', "P = resolve(globals())"]}
    assert notebook.parameter_names(ns) == ["PRESET", "SEED"]
    ns["_ih"] = ["", 'PRESET = "auto"\nSEED = 0', '# Parameters\nLR = 0.1\n', "P = resolve(globals())"]
    assert notebook.parameter_names(ns) == ["PRESET", "SEED", "LR"]
    ns["_ih"] = ["", "x = f(1)", "P = resolve(globals())"]  # out of order: fall back to upper-case literals
    assert notebook.parameter_names(ns) == ["PRESET", "T", "H"]
