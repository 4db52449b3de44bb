"""The model zoo: a name -> :class:`Recipe` registry (how the CLI and the notebooks find a paper).

A recipe is read from the paper's module (``voslab.models.<paper>``), which defines
``build_model(cfg)``, ``train_dataset(cfg, root)``, ``training_step(model, batch, cfg)``,
``predict_sequence(model, seq, cfg) -> uint8 (T, H, W)``, ``TASK`` and ``PRESETS``, and may define
``configure_optimizer(model, cfg) -> (optimizer, scheduler)`` (default: ``voslab.optim.build_optimizer``
on the preset's ``train`` section) and ``predict_stream(model, seq, cfg) -> Iterator[(t, uint8 (H, W))]``
(the same protocol with memory bounded in the video's length). Here ``cfg`` is a preset dict with the sections ``data``,
``model``, ``train`` and ``eval``.

    >>> recipe = zoo.get("adnet")
    >>> model = recipe.build_model(presets.get("adnet", "cpu"))
"""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import torch

from voslab import checkpoints, engine
from voslab.models._common import canonical_root, evaluation_split
from voslab.optim import build_optimizer
from voslab.train_state import History
from voslab.utils import seed_everything

__all__ = ["Recipe", "UnknownModelError", "get", "register", "available", "REGISTRY"]

#: name -> module path (or a module object, for recipes registered at run time).
REGISTRY: dict[str, str | ModuleType] = {
    "lvo": "voslab.models.lvo",
    "agnn": "voslab.models.agnn",
    "adnet": "voslab.models.adnet",
    "agss": "voslab.models.agss",
    "feelvos": "voslab.models.feelvos",
}
_REQUIRED = ("build_model", "train_dataset", "training_step", "predict_sequence", "TASK", "PRESETS")
TASKS = ("unsupervised", "semi")


class UnknownModelError(KeyError):
    """No model of that name in the zoo."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build, train and run one paper's model."""

    name: str
    task: str  # "unsupervised" | "semi"
    build_model: Callable[[Any], Any]
    train_dataset: Callable[..., Any]
    training_step: Callable[..., dict]
    configure_optimizer: Callable[..., tuple]
    predict_sequence: Callable[..., Any]
    presets: dict[str, dict]
    module: ModuleType
    #: optional ``predict_stream(model, seq, cfg) -> Iterator[(t, uint8 (H, W))]``: the same protocol,
    #: frame by frame with bounded memory (``voslab predict`` uses it on long videos); None if absent.
    predict_stream: Callable[..., Any] | None = None

    def protocol(self, dataset: str = "synthetic") -> str:
        """The ``voslab.metrics.evaluate`` protocol for this task on ``dataset``
        ("synthetic" and "davis2016" score one foreground per video when the task is unsupervised)."""
        if self.task == "semi":
            return "davis2017-semi"
        return "davis2017-unsup" if dataset == "davis2017" else "davis2016"

    def dataset(self, cfg: dict, split: str, root: Any = None, year: int | None = None):
        """The sequences of ``split`` to evaluate on: the preset's synthetic split (``root`` None; every
        scenario of a preset that trains on several, see ``_common.evaluation_split``) or a
        DAVIS-layout folder; ``year=2017`` reads instance ids even for an unsupervised model."""
        task = "semi" if year == 2017 else self.task
        return evaluation_split(cfg, split, root, task)

    def train(self, cfg: dict, root: Any = None, *, seed: int = 0, init: Any = None, **fit_kwargs: Any):
        """Train from scratch (or from ``init``'s weights) with the paper's regime -> (model, History).

        The one wiring of recipe and engine, used by ``voslab train`` and the notebooks: seed, the
        recipe's dataset (``root``: a DAVIS-layout folder; None = the preset's synthetic split),
        model, optimiser and training step, run by :func:`voslab.engine.fit` for
        ``cfg["train"]["steps"]`` steps. ``fit_kwargs`` go to ``fit`` (device, ckpt_dir, progress, ...).
        """
        train_cfg = cfg.get("train", {})
        seed_everything(seed)
        dataset = self.train_dataset(cfg, root)
        model = self.build_model(cfg)
        if init is not None:
            model.load_state_dict(init.state_dict())
        optimizer, scheduler = self.configure_optimizer(model, cfg)
        fit_kwargs.setdefault("grad_clip", train_cfg.get("grad_clip"))
        fit_kwargs.setdefault("batch_size", int(train_cfg.get("batch_size", 8)))
        fit_kwargs.setdefault("num_workers", int(train_cfg.get("num_workers", 0)))
        history = engine.fit(model, functools.partial(self.training_step, cfg=cfg), dataset, optimizer=optimizer,
                             scheduler=scheduler, steps=int(train_cfg.get("steps", 1000)), seed=seed, **fit_kwargs)
        return model, history

    def validator(self, cfg: dict, root: Any = None, n_samples: int = 64, batch_size: int = 16):
        """``model -> {"loss", ...}``: the training step's scalars averaged over a fixed set of
        ``n_samples`` items of the validation split (no augmentation), for ``fit(validate=...)``."""
        val_cfg = copy.deepcopy(cfg)
        val_cfg.setdefault("train", {}).update(split=cfg.get("eval", {}).get("split", "val"), augment=False,
                                               steps=n_samples, batch_size=1)
        data = self.train_dataset(val_cfg, root)
        batches = [engine.move_to_device(b, torch.device("cpu")) for b in
                   torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)]

        def validate(model: Any) -> dict[str, float]:
            device = next(model.parameters()).device
            totals: dict[str, float] = {}
            for batch in batches:
                out = self.training_step(model, engine.move_to_device(batch, device), cfg)
                for key, value in out.items():
                    if torch.is_tensor(value) and value.ndim == 0 or isinstance(value, float):
                        totals[key] = totals.get(key, 0.0) + float(value) * len(batch[next(iter(batch))])
            return {k: v / len(data) for k, v in totals.items()}

        return validate

    def load_or_train(self, cfg: dict, root: Any = None, *, seed: int = 0, init: Any = None,
                      cache: str | os.PathLike | None = None, force: bool = False, **fit_kwargs: Any):
        """Cached :meth:`train` -> (model, History): the weights trained with exactly this preset,
        data root, seed and initial weights are loaded when present, trained and saved otherwise.
        The History (training curves) is stored with the weights, so a cached model still shows how
        it trained. ``cache``: a folder or an explicit ``.pt`` path; ``force`` retrains.

        ``root`` names the data as ``voslab train --data-root`` does: a real preset's own DAVIS copy
        (None, or its path written any way) shares the weights ``voslab train MODEL --preset real``
        cached. Before training it prints what it trains and where the weights go; the engine shows a
        progress bar and prints an estimate of the time left after the first seconds."""
        key = self.cache_key(cfg, root, seed=seed, init=init)
        path = checkpoints.checkpoint_path(self.name, key, cache)
        if force or not path.is_file():
            steps = int(cfg.get("train", {}).get("steps", 1000))
            print(f"training {self.name} for {steps} steps (no cached weights at {path}; they are saved there "
                  "for the next run)", flush=True)
        model = checkpoints.load_or_train(self.name, key, lambda: self.train(cfg, root, seed=seed, init=init,
                                                                             **fit_kwargs),
                                          model_fn=lambda: self.build_model(cfg), cache=path, force=force)
        meta = checkpoints.load_metadata(path)
        history = History.from_state_dict(meta["history"]) if "history" in meta else History()
        history.seconds = float(meta.get("train_seconds", history.seconds))
        return model, history

    def cached_weights(self, cfg: dict, root: Any = None, *, seed: int = 0, init: Any = None,
                       cache: str | os.PathLike | None = None):
        """The path of the weights :meth:`load_or_train` would load for these arguments, or None when
        they have not been trained yet (a notebook's ``REAL="auto"`` runs a section only then)."""
        path = checkpoints.checkpoint_path(self.name, self.cache_key(cfg, root, seed=seed, init=init), cache)
        return path if path.is_file() else None

    @staticmethod
    def cache_key(cfg: dict, root: Any = None, *, seed: int = 0, init: Any = None) -> dict:
        """What identifies trained weights: the preset's :func:`training_config` alone for a default
        run (so ``voslab train`` and the notebooks share a cache), plus the data root (absolute; None
        for a real preset's own DAVIS copy, see ``models._common.canonical_root``), seed and initial
        weights otherwise."""
        cfg = training_config(cfg)
        root = canonical_root(cfg, root)
        if root is None and seed == 0 and init is None:
            return cfg
        return {"preset": cfg, "root": None if root is None else os.fspath(root), "seed": seed,
                "init": None if init is None else checkpoints.state_fingerprint(init)}


def training_config(cfg: dict) -> dict:
    """The part of a preset that shapes the trained weights: all of it but the inference options
    (``eval``) and the notebooks' ablation schedule (``train.ablation_*``). So ``--set eval.K=V``
    or a new ablation schedule reuses the weights already trained."""
    kept = {name: part for name, part in cfg.items() if name != "eval"}
    if isinstance(kept.get("train"), dict):
        kept["train"] = {k: v for k, v in kept["train"].items() if not k.startswith("ablation_")}
    return kept


def _default_optimizer(model: Any, cfg: dict) -> tuple:
    """SGD or Adam with the poly schedule, from the preset's ``train`` section."""
    return build_optimizer(model.parameters(), cfg.get("train", {}))


def register(name: str, module: str | ModuleType) -> None:
    """Add (or replace) a zoo entry: ``module`` is a module or its dotted import path."""
    REGISTRY[name] = module


def available() -> list[str]:
    """Registered names whose module exists (papers not written yet are left out)."""
    return [name for name, mod in REGISTRY.items() if isinstance(mod, ModuleType) or _module_exists(mod)]


def _module_exists(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def get(name: str) -> Recipe:
    """The :class:`Recipe` of model ``name`` (e.g. ``"adnet"``)."""
    if name not in REGISTRY or name not in available():
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available()) or 'none'}")
    module = REGISTRY[name]
    if isinstance(module, str):
        module = importlib.import_module(module)
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise AttributeError(f"{module.__name__} is not a zoo recipe: it lacks {missing} (see voslab.zoo)")
    if module.TASK not in TASKS:
        raise ValueError(f"{module.__name__}.TASK = {module.TASK!r}; use one of {TASKS}")
    return Recipe(name=name, task=module.TASK, build_model=module.build_model, train_dataset=module.train_dataset,
                  training_step=module.training_step,
                  configure_optimizer=getattr(module, "configure_optimizer", _default_optimizer),
                  predict_sequence=module.predict_sequence, presets=module.PRESETS, module=module,
                  predict_stream=getattr(module, "predict_stream", None))
