"""Errors a learner can act on: each names the file (or argument) and the fix."""
from __future__ import annotations


class VOSDataError(ValueError):
    """Bad or inconsistent input data (corrupt frame, size mismatch, unknown object id, ...)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""
