"""A test helper shared by the per-paper test files: a model through voslab's own checkpoint format."""
from __future__ import annotations

import dataclasses

from voslab import checkpoints


def checkpoint_round_trip(model, build_model, folder):
    """Save ``model`` with ``checkpoints.save_model`` (its config dataclass as the preset's "model"
    section), rebuild it with ``build_model`` from the stored config and ``checkpoints.load_weights``.
    -> the rebuilt model, in eval mode."""
    path = checkpoints.save_model(folder / "model.pt", model, {"model": dataclasses.asdict(model.cfg)})
    clone = build_model(checkpoints.load_state(path)["config"])
    return checkpoints.load_weights(clone, path).eval()
