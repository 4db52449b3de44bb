"""The notebook harness: parameter resolution, results files, interactivity.

Every voslab notebook has a cell tagged ``parameters`` that holds literals only::

    PRESET = "auto"       # smoke | cpu | gpu; "auto" = $VOSLAB_PRESET, else "cpu"
    SEED = None           # None = $VOSLAB_SEED, else 0
    DATA_ROOT = None      # a DAVIS-layout folder; None = $VOSLAB_DATA_ROOT, else synthetic data
    OUTPUT_DIR = None     # None = $VOSLAB_OUTPUT_DIR, else "outputs"
    INTERACTIVE = None    # None = $VOSLAB_INTERACTIVE, else widgets in a live Jupyter kernel

and the next cell calls ``P = voslab.notebook.resolve(globals(), model="adnet")``.

**The rule.** For each upper-case name of the parameters cell, ``resolve`` takes the first of

1. a value papermill injected (``papermill ... -p PRESET smoke``; found in the kernel's input
   history: papermill runs a cell tagged ``injected-parameters`` that starts with ``# Parameters``),
2. a value the cell itself sets to something other than a *sentinel* (``None`` or ``"auto"``):
   a learner who edits ``PRESET = "gpu"`` gets ``"gpu"``,
3. the environment variable ``VOSLAB_<NAME>``, parsed like papermill parses ``-p`` values
   (``True``/``False``/``None``, then int, then float, else the string),
4. the notebook's ``defaults`` (argument of ``resolve``), then :data:`DEFAULTS`,
5. the model preset: a name such as ``STEPS`` or ``LR`` left unset takes ``preset["train"]["steps"]``
   (first match in the ``train``, ``model``, ``data``, ``eval`` sections).

Explicit values of names that exist in the preset are written back into the preset copy, so
``-p STEPS 5`` also changes ``P.config["train"]["steps"]``. ``resolve`` updates the namespace
(``PRESET`` now holds ``"smoke"``, not ``"auto"``) and prints where each value came from.

nbval cannot inject parameters, so CI steers it with environment variables
(``VOSLAB_PRESET=smoke``, set in ``conftest.py``).
"""
from __future__ import annotations

import ast
import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from voslab import exercises
from voslab.jupyter import injected_parameters, is_interactive, literal_assignments, parse_bool, set_interactive
from voslab.utils import environment_info, write_json

SENTINELS = (None, "auto")
ENV_PREFIX = "VOSLAB_"

#: Values used when neither papermill, the cell, nor the environment set a parameter.
DEFAULTS: dict[str, Any] = {
    "PRESET": "cpu",
    "SEED": 0,
    "DATA_ROOT": None,
    "DATASET": "synthetic",
    "DEVICE": "auto",
    "CKPT": "auto",
    "OUTPUT_DIR": "outputs",
    "INTERACTIVE": None,
    "SOLUTIONS": True,
}

#: Names every notebook gets from :func:`resolve`, even when its parameters cell omits them.
CORE = ("PRESET", "SEED", "OUTPUT_DIR", "INTERACTIVE")

PRESET_SECTIONS = ("train", "model", "data", "eval")

# The PRESET and SEED resolve() settled on (save_results records them); INTERACTIVE lives in voslab.jupyter.
_session: dict[str, Any] = {}


# --------------------------------------------------------------------------- parsing
def parse_value(text: str) -> Any:
    """Parse a string the way ``papermill -p`` does: True/False/None, int, float, else str."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# --------------------------------------------------------------------------- resolve
@dataclass
class Params:
    """What :func:`resolve` decided: ``values`` (name -> value), ``sources`` (name -> where from),
    ``config`` (the model preset, a deep copy, or ``{}``), ``injected`` (names papermill set)."""

    values: dict[str, Any]
    sources: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    injected: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no notebook parameter {name!r}; known: {sorted(values)}")

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def table(self) -> str:
        width = max((len(k) for k in self.values), default=0)
        return "\n".join(f"{k:<{width}} = {v!r:<24} ({self.sources[k]})" for k, v in self.values.items())

    def __repr__(self) -> str:
        return f"Params(\n{self.table()}\n)"


def _literal_cell_names(source: str) -> list[str] | None:
    """Names assigned by a cell made only of ``NAME = literal`` lines (a parameters cell), else None."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    names = list(literal_assignments(source))
    return names if body and len(names) == len(body) else None


def parameter_names(namespace: Mapping[str, Any]) -> list[str]:
    """The notebook's parameters: the names of the parameters cell, read from the input history
    (the cell run just before ``resolve``, or before papermill's injected cell); outside IPython,
    or when cells ran out of order, the upper-case names of the namespace bound to literals."""
    history = [h for h in (namespace.get("_ih") or namespace.get("In") or []) if isinstance(h, str)]
    previous = history[-3:-1] if len(history) >= 3 else history[-2:-1]
    if previous and previous[-1].lstrip().startswith("# Parameters"):
        cells = previous  # the parameters cell, then papermill's injected cell
    else:
        cells = previous[-1:]
    names: list[str] = []
    for source in cells:
        found = _literal_cell_names(source)
        if found is None:
            names = []
            break
        names += [n for n in found if n not in names]
    if names:
        return names
    literal = (type(None), bool, int, float, str, list, tuple, dict)
    return [k for k, v in namespace.items() if k.isupper() and not k.startswith("_") and isinstance(v, literal)]


def resolve(
    namespace: dict[str, Any],
    defaults: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    names: Iterable[str] | None = None,
    update: bool = True,
    verbose: bool = True,
) -> Params:
    """Resolve the notebook parameters in ``namespace`` (pass ``globals()``); see the module doc.

    ``defaults`` overrides :data:`DEFAULTS` for this notebook; ``model`` (e.g. ``"adnet"``) loads
    ``voslab.presets.get(model, PRESET)`` into ``Params.config``. ``names`` limits the parameters
    (default: every upper-case literal in the namespace). With ``update`` the namespace gets the
    resolved values.
    """
    base = {**DEFAULTS, **(defaults or {})}
    injected = injected_parameters(namespace)
    keys = list(names) if names is not None else parameter_names(namespace)
    for key in [*CORE, *(defaults or {})]:  # these resolve even when the cell forgot them
        if key not in keys:
            keys.append(key)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    unset: list[str] = []
    for key in keys:
        value, source = _resolve_one(key, namespace, injected, base)
        if source == "unset":
            unset.append(key)
        values[key], sources[key] = value, source

    config: dict[str, Any] = {}
    if model is not None:
        from voslab import presets

        config = presets.get(model, values["PRESET"])
        _merge_with_preset(values, sources, config, unset)

    if values.get("SEED") is None:
        values["SEED"] = 0
    set_interactive(values.get("INTERACTIVE"))
    if "INTERACTIVE" in values:
        values["INTERACTIVE"] = is_interactive()
        if sources["INTERACTIVE"] == "unset":
            sources["INTERACTIVE"] = "detected"
    sources.update({k: "default" for k, s in sources.items() if s == "unset"})
    _session["PRESET"], _session["SEED"] = values.get("PRESET"), values.get("SEED")
    params = Params(values, sources, config, set(injected))
    if update:
        namespace.update(values)
    if verbose:
        print(params.table())
    return params


def _resolve_one(key: str, namespace: Mapping[str, Any], injected: Mapping[str, Any],
                 base: Mapping[str, Any]) -> tuple[Any, str]:
    if key in injected:
        return injected[key], "papermill"
    if key in namespace and namespace[key] not in SENTINELS:
        return namespace[key], "notebook"
    env = os.environ.get(ENV_PREFIX + key)
    if env is not None and env != "":
        return parse_value(env), f"${ENV_PREFIX}{key}"
    if key in base and base[key] not in SENTINELS:
        return base[key], "default"
    return namespace.get(key, base.get(key)), "unset"


def _merge_with_preset(values: dict[str, Any], sources: dict[str, str],
                       config: dict[str, Any], unset: list[str]) -> None:
    """Fill unset names from the preset; write explicit ones back into the preset copy."""
    for key in list(values):
        for section in PRESET_SECTIONS:
            part = config.get(section)
            if isinstance(part, dict) and key.lower() in part:
                if key in unset:
                    values[key], sources[key] = copy.deepcopy(part[key.lower()]), f"preset[{section!r}]"
                else:
                    part[key.lower()] = values[key]
                break


# --------------------------------------------------------------------------- results
def save_results(output_dir: str | os.PathLike | None, name: str, results: Mapping[str, Any]) -> Path:
    """Write ``output_dir/<name>.json`` with ``results`` plus preset, seed, versions and a timestamp.

    Conventional keys: ``metrics`` (e.g. ``{"J&F-Mean": 0.71}``), ``timings`` (seconds per phase),
    ``checks`` (name -> bool). ``preset`` and ``seed`` default to what :func:`resolve` settled on;
    ``exercises`` holds what :mod:`voslab.exercises` recorded (checks and predictions) for graders.
    The file is written atomically; the path is returned.
    """
    if not name or "/" in name or name.endswith(".json"):
        raise ValueError(f"save_results: name must be a bare file stem like '00_data_and_metrics', got {name!r}")
    out = Path(output_dir if output_dir is not None else DEFAULTS["OUTPUT_DIR"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    import voslab

    record: dict[str, Any] = {
        "notebook": name,
        "preset": _session.get("PRESET"),
        "seed": _session.get("SEED"),
        "voslab_version": voslab.__version__,
        "environment": environment_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record.update(results)
    if exercises.RECORD and "exercises" not in record:  # what the exercise checks and predictions recorded
        record["exercises"] = exercises.record()
    path = write_json(out / f"{name}.json", record)
    print(f"results written to {path}")
    return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file written by :func:`save_results`."""
    return json.loads(Path(path).read_text())


def section(title: str) -> None:
    """Print a visible section header in the text output (useful in papermill logs)."""
    line = "=" * max(len(title), 8)
    print(f"\n{line}\n{title}\n{line}")


# --------------------------------------------------------------------------- real video
@dataclass
class RealRun:
    """What :func:`real_video` trained or loaded and scored: the ``real`` preset (``config``), the
    model (eval mode), its training ``history``, the held-out ``videos``, their ``results``
    (``voslab.metrics.Results``) and ``predictions`` ({sequence: uint8 (T, H, W)})."""

    config: dict
    model: Any
    history: Any
    videos: Any
    results: Any
    predictions: dict


def real_config(name: str, preset: str = "cpu") -> dict:
    """Model ``name``'s ``real`` preset as :func:`real_video` trains it: as is, or 4 steps of batch 2
    when the notebook runs the ``smoke`` preset."""
    from voslab import presets

    config = presets.get(name, "real")
    if preset == "smoke":
        config["train"].update(steps=4, batch_size=2)
    return config


def real_video(name: str, mode: Any = "auto", *, preset: str = "cpu", seed: int = 0, data_root: Any = None,
               ckpt: str = "auto", device: Any = "cpu", sequences: Iterable[str] | None = None) -> RealRun | None:
    """A paper notebook's real-video section: model ``name``'s ``real`` preset (ImageNet MobileNetV2,
    trained on DAVIS-2016 train frames) scored on its held-out sequences (or ``sequences``).

    ``mode`` is the notebook's ``REAL`` parameter: ``True`` loads the cached weights or trains them
    (5-40 minutes on 2 cores; a progress bar and a time estimate); ``"auto"`` runs only when those
    weights are already cached (``voslab train <name> --preset real`` caches them), so a notebook
    stays within its budget; ``False`` skips. In the ``smoke`` preset the training is 4 steps (a check
    that the section runs). Without the frames or the ImageNet weights it prints what is missing and
    how to get it (``True`` raises instead). -> :class:`RealRun`, or None when skipped.
    """
    import copy
    import functools

    from voslab import inference, pretrained, zoo
    from voslab.models._common import real_data_name
    from voslab.utils import shared_data_dir

    if mode is False:
        print("real-video section skipped (REAL=False)")
        return None
    recipe = zoo.get(name)
    config = real_config(name, preset)
    root = Path(data_root) if data_root is not None else shared_data_dir() / real_data_name(config)
    missing = [why for ok, why in (
        (pretrained.is_available("mobilenet_v2"), "the ImageNet weights (run `python data_scripts/fetch_weights.py`)"),
        (root.is_dir(), f"DAVIS-2016 frames at {root.name}/ (set DATA_ROOT; get DAVIS with "
                        "`python data_scripts/download_davis.py --year 2016 --root DIR`)"),
    ) if not ok]
    if missing:
        if mode is True:
            raise FileNotFoundError("REAL=True but missing: " + "; ".join(missing))
        print("real-video section skipped, missing: " + "; ".join(missing))
        return None
    cache = None if ckpt in ("auto", "retrain") else ckpt
    if mode == "auto" and recipe.cached_weights(config, data_root, seed=seed, cache=cache) is None:
        print(f"real-video section skipped: no trained `real` weights of {name} yet. Train them with "
              f"`voslab train {name} --preset real` (5-40 min on 2 cores; --data-root DIR for your DAVIS copy), "
              "or set REAL=True to train them here")
        return None
    model, history = recipe.load_or_train(config, data_root, seed=seed, cache=cache, force=ckpt == "retrain",
                                          device=device)
    model = model.to(device).eval()
    eval_config = copy.deepcopy(config)
    if sequences is not None:
        eval_config["data"]["val"]["sequences"] = [str(s) for s in sequences]
    videos = recipe.dataset(eval_config, "val", data_root)
    results, predictions = inference.evaluate_model(model, videos, functools.partial(recipe.predict_sequence, cfg=config),
                                                    recipe.protocol("davis2016"), progress=False)
    return RealRun(config, model, history, videos, results, predictions)
