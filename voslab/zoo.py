"""The model zoo: a name -> :class:`Recipe` registry (how the CLI and the notebooks find a paper).

A recipe is read from the paper's module (``voslab.models.<paper>``), which defines
``build_model(cfg)``, ``train_dataset(cfg, root)``, ``training_step(model, batch, cfg)``,
``configure_optimizer(model, cfg) -> (optimizer, scheduler)``,
``predict_sequence(model, seq, cfg) -> uint8 (T, H, W)``, ``TASK`` and ``PRESETS``. Here ``cfg``
is a preset dict with the sections ``data``, ``model``, ``train`` and ``eval``.

    >>> recipe = zoo.get("adnet")
    >>> model = recipe.build_model(presets.get("adnet", "cpu"))
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["Recipe", "UnknownModelError", "get", "register", "available", "REGISTRY"]

#: name -> module path (or a module object, for recipes registered at run time).
REGISTRY: dict[str, str | ModuleType] = {
    "lvo": "voslab.models.lvo",
    "agnn": "voslab.models.agnn",
    "adnet": "voslab.models.adnet",
    "agss": "voslab.models.agss",
    "feelvos": "voslab.models.feelvos",
}
_REQUIRED = ("build_model", "train_dataset", "training_step", "configure_optimizer", "predict_sequence",
             "TASK", "PRESETS")
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

    @property
    def protocol(self) -> str:
        """The evaluation protocol of ``voslab.metrics.evaluate`` for this task on DAVIS-layout data."""
        return "davis2016" if self.task == "unsupervised" else "davis2017-semi"

    def train(self, cfg: dict, root: Any = None, *, seed: int = 0, init: Any = None, **fit_kwargs: Any):
        """Train from scratch (or from ``init``'s weights) with the paper's regime -> (model, History).

        The one wiring of recipe and engine, used by ``voslab train`` and the notebooks: seed, the
        recipe's dataset (``root``: a DAVIS-layout folder; None = the preset's synthetic split),
        model, optimiser and training step, run by :func:`voslab.engine.fit` for
        ``cfg["train"]["steps"]`` steps. ``fit_kwargs`` go to ``fit`` (device, ckpt_dir, progress, ...).
        """
        import functools

        from voslab import engine
        from voslab.utils import seed_everything

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
                  training_step=module.training_step, configure_optimizer=module.configure_optimizer,
                  predict_sequence=module.predict_sequence, presets=module.PRESETS, module=module)
