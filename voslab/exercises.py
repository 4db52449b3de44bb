"""Exercise helpers: stubs for learners and a checker that compares with the library.

An exercise cell in a notebook looks like::

    def my_decay(values):
        if not SOLUTIONS:
            todo("split the frames into 4 bins and return mean(first bin) - mean(last bin)")
        ...  # the solution, which CI runs (SOLUTIONS = True)

    check("decay", my_decay, lambda v: metrics.statistics(v)[2], [(np.linspace(1, 0, 20),)])

A stub that is not written yet makes :func:`check` print a hint and return False (the notebook goes
on with the library's version); a wrong answer raises :class:`ExerciseFailed` with the first
difference.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np


class ExerciseFailed(AssertionError):
    """The learner's function disagrees with the library's reference."""


def todo(hint: str = "replace this call with your code") -> None:
    """Mark an unfinished exercise: raises ``NotImplementedError`` carrying ``hint``."""
    raise NotImplementedError(f"exercise not done yet: {hint}")


def _compare(got: Any, want: Any, rtol: float, atol: float, where: str = "output") -> None:
    """Recursive closeness check for tensors, arrays, scalars, sequences and mappings."""
    import torch

    if isinstance(got, torch.Tensor) or isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"{where}: expected a torch.Tensor, got {type(got).__name__}")
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, check_dtype=False, msg=lambda m: f"{where}: {m}")
        return
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(want):
            raise ExerciseFailed(f"{where}: expected keys {sorted(want)}, got {sorted(got) if isinstance(got, Mapping) else type(got).__name__}")
        for key in want:
            _compare(got[key], want[key], rtol, atol, f"{where}[{key!r}]")
        return
    if isinstance(want, (tuple, list)) and not isinstance(got, np.ndarray):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            raise ExerciseFailed(f"{where}: expected a sequence of {len(want)} items, got {got!r:.80}")
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, rtol, atol, f"{where}[{i}]")
        return
    got_a, want_a = np.asarray(got), np.asarray(want)
    if got_a.shape != want_a.shape:
        raise ExerciseFailed(f"{where}: shape {got_a.shape} but the library gives {want_a.shape}")
    if want_a.dtype == bool or got_a.dtype == bool:
        bad = got_a.astype(bool) != want_a.astype(bool)
        if bad.any():
            raise ExerciseFailed(f"{where}: {int(bad.sum())} of {bad.size} values differ (first at index {tuple(np.argwhere(bad)[0])})")
        return
    np.testing.assert_allclose(got_a.astype(np.float64), want_a.astype(np.float64), rtol=rtol, atol=atol,
                               equal_nan=True, err_msg=where)


def _call(fn: Callable, case: Any) -> Any:
    if isinstance(case, Mapping):
        return fn(**case)
    if isinstance(case, tuple):
        return fn(*case)
    return fn(case)


def check(name: str, fn: Callable, reference_fn: Callable, inputs: Iterable[Any], *,
          rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """Compare ``fn`` with ``reference_fn`` on every case of ``inputs`` and print the verdict.

    Each case is a tuple of positional arguments, a dict of keyword arguments, or a single
    argument. Returns True when all cases match; returns False (after printing the hint) while
    ``fn`` still calls :func:`todo`; raises :class:`ExerciseFailed` on the first mismatch.
    """
    cases = list(inputs)
    if not cases:
        raise ValueError(f"check({name!r}): give at least one input case")
    for i, case in enumerate(cases, start=1):
        try:
            got = _call(fn, case)
        except NotImplementedError as err:
            print(f"[ ] {name}: not implemented yet. {err}")
            return False
        want = _call(reference_fn, case)
        try:
            _compare(got, want, rtol, atol)
        except AssertionError as err:
            print(f"[x] {name}: case {i} of {len(cases)} differs from the library.")
            raise ExerciseFailed(f"{name}, case {i}: {err}") from None
    print(f"[ok] {name}: all {len(cases)} cases match the library.")
    return True
