"""Exercises: stubs, checkers that teach without revealing, and the record a grader reads.

The assignment format (``voslab.assign`` makes student copies and grades them)::

    # cell tagged "exercise": the stub a student fills in
    def my_decay(values):
        todo("split the frames into 4 bins; compare the first bin with the last")

    # cell tagged "solution": removed from student copies
    if SOLUTIONS:
        def my_decay(values):
            ...

    # checker cell
    check("decay", my_decay, reference_decay, cases, mistakes={"...": wrong_variant})

:func:`check` never stops the notebook: a stub that is not written yet prints "not done", a wrong
answer prints what is wrong in plain words (the output's type or shape, or the name of a known
mistake whose output it reproduces: ``mistakes`` maps a message to a deliberately wrong variant of
the reference) and returns False. The notebook then goes on with the library's reference.

"Predict, then measure" experiments: :func:`predict` records the learner's guess before the
experiment runs, :func:`reveal` the measured outcome. Every check and prediction goes to
:data:`RECORD`, which ``voslab.notebook.save_results`` stores under ``"exercises"``.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Iterable, Mapping

import numpy as np

__all__ = ["todo", "check", "predict", "reveal", "record", "RECORD", "ExerciseFailed", "diffusion_mistakes",
           "check_diffusion"]

#: name -> {"kind": "check" | "prediction", "status": "ok" | "wrong" | "not done" | "error", "message": str, ...}
RECORD: dict[str, dict[str, Any]] = {}


class ExerciseFailed(AssertionError):
    """The learner's output disagrees with the library's reference (raised inside :func:`check` only)."""


def todo(hint: str = "replace this call with your code") -> None:
    """Mark an unfinished exercise: raises ``NotImplementedError`` carrying ``hint``."""
    raise NotImplementedError(f"exercise not done yet: {hint}")


def record() -> dict[str, dict[str, Any]]:
    """A copy of what the exercises of this session recorded (for results files and graders)."""
    return {name: dict(entry) for name, entry in RECORD.items()}


# ------------------------------------------------------------------------------------ comparing
def _compare(got: Any, want: Any, rtol: float, atol: float, where: str = "the output") -> None:
    """Raise :class:`ExerciseFailed` with a plain-words reason when ``got`` is not close to ``want``."""
    import torch

    if got is None and want is not None:
        raise ExerciseFailed(f"{where} is None: the function must `return` its result")
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise ExerciseFailed(f"{where} should be a torch.Tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        got, want = got.detach().cpu().numpy(), want.detach().cpu().numpy()
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(want):
            found = sorted(got) if isinstance(got, Mapping) else type(got).__name__
            raise ExerciseFailed(f"{where} should be a dict with keys {sorted(want)}, got {found}")
        for key in want:
            _compare(got[key], want[key], rtol, atol, f"{where}[{key!r}]")
        return
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            found = f"{len(got)} items" if isinstance(got, (tuple, list)) else type(got).__name__
            raise ExerciseFailed(f"{where} should be a sequence of {len(want)} items, got {found}")
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, rtol, atol, f"{where}[{i}]")
        return
    got_a, want_a = np.asarray(got), np.asarray(want)
    if got_a.shape != want_a.shape:
        raise ExerciseFailed(f"{where} has shape {got_a.shape}, expected {want_a.shape}")
    if want_a.dtype == bool or got_a.dtype == bool:
        bad = got_a.astype(bool) != want_a.astype(bool)
        if bad.any():
            raise ExerciseFailed(f"{where}: {int(bad.sum())} of {bad.size} values differ")
        return
    if not np.issubdtype(got_a.dtype, np.number):
        raise ExerciseFailed(f"{where} should hold numbers, got {got_a.dtype}")
    got_f, want_f = got_a.astype(np.float64), want_a.astype(np.float64)
    close = np.isclose(got_f, want_f, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        diff = np.nanmax(np.abs(got_f - want_f)) if got_f.size else 0.0
        raise ExerciseFailed(f"{where}: {int((~close).sum())} of {close.size} values differ (largest difference {diff:.3g})")


def _call(fn: Callable, case: Any) -> Any:
    if isinstance(case, Mapping):
        return fn(**case)
    if isinstance(case, tuple):
        return fn(*case)
    return fn(case)


def _matches(got: Any, want: Any, rtol: float, atol: float) -> bool:
    try:
        _compare(got, want, rtol, atol)
    except Exception:  # noqa: BLE001 - any failure means "not this mistake"
        return False
    return True


def _diagnose(got: Any, case: Any, mistakes: Mapping[str, Callable], rtol: float, atol: float) -> str | None:
    """The message of the first known mistake whose output ``got`` reproduces on ``case``."""
    for message, wrong in mistakes.items():
        try:
            if _matches(got, _call(wrong, case), rtol, atol):
                return message
        except Exception:  # noqa: BLE001 - a mistake variant that does not apply to this case
            continue
    return None


def check(name: str, fn: Callable, reference_fn: Callable, inputs: Iterable[Any], *,
          mistakes: Mapping[str, Callable] | None = None, random_cases: Callable[[np.random.Generator], Any] | None = None,
          n_random: int = 3, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """Compare ``fn`` with ``reference_fn`` on every case and print the verdict; never raises.

    ``inputs``: fixed cases (a tuple of positional arguments, a dict of keyword arguments, or one
    argument). ``random_cases(rng)`` draws ``n_random`` more from a generator seeded by ``name``
    (the same cases on every run). ``mistakes``: ``{message: wrong_fn}``; when the learner's output
    equals ``wrong_fn``'s, the message names the mistake. Returns True when every case matches;
    False while ``fn`` calls :func:`todo`, or when it is wrong or raises (the reason is printed and
    recorded in :data:`RECORD`).
    """
    cases = list(inputs)
    if random_cases is not None:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        cases += [random_cases(rng) for _ in range(n_random)]
    if not cases:
        raise ValueError(f"check({name!r}): give at least one input case")
    for i, case in enumerate(cases, start=1):
        try:
            got = _call(fn, case)
        except NotImplementedError as err:
            return _verdict(name, "not done", f"not implemented yet. {err}", len(cases))
        except Exception as err:  # noqa: BLE001 - a learner's bug must not stop the notebook
            return _verdict(name, "error", f"case {i} of {len(cases)} raised {type(err).__name__}: {err}", len(cases))
        want = _call(reference_fn, case)
        try:
            _compare(got, want, rtol, atol)
        except ExerciseFailed as err:
            mistake = _diagnose(got, case, mistakes or {}, rtol, atol)
            reason = f"looks like {mistake}" if mistake else str(err)
            return _verdict(name, "wrong", f"case {i} of {len(cases)}: {reason}", len(cases), mistake=mistake)
    return _verdict(name, "ok", f"all {len(cases)} cases match the library", len(cases))


def _verdict(name: str, status: str, message: str, n_cases: int, mistake: str | None = None) -> bool:
    mark = {"ok": "[ok]", "not done": "[ ]"}.get(status, "[x]")
    tail = "" if status == "ok" else " The notebook goes on with the library's version."
    print(f"{mark} {name}: {message}.{tail}")
    RECORD[name] = {"kind": "check", "status": status, "message": message, "cases": n_cases, "mistake": mistake}
    return status == "ok"


# ------------------------------------------------------------------------------------ predictions
def predict(name: str, guess: Any, choices: Iterable[Any] | None = None) -> bool:
    """Record the learner's prediction for experiment ``name`` before it runs. ``guess`` None =
    not made yet (recorded as "not done"); with ``choices`` it must be one of them. Returns whether a
    valid prediction was recorded."""
    options = None if choices is None else list(choices)
    if guess is None:
        status, message = "not done", "no prediction written yet"
    elif options is not None and guess not in options:
        status, message = "wrong", f"the prediction {guess!r} is not one of {options}"
    else:
        status, message = "ok", f"prediction {guess!r} recorded"
    RECORD[name] = {"kind": "prediction", "status": status, "message": message, "prediction": guess,
                    "choices": options, "outcome": None, "measured": None}
    print(f"{'[ok]' if status == 'ok' else '[ ]'} {name}: {message}")
    return status == "ok"


def reveal(name: str, measured: float, outcome: Any) -> None:
    """Record what the experiment measured (``measured``, and ``outcome`` in the prediction's terms)
    and print it next to the prediction."""
    entry = RECORD.setdefault(name, {"kind": "prediction", "status": "not done", "message": "no prediction",
                                     "prediction": None, "choices": None})
    entry.update(measured=float(measured), outcome=outcome,
                 correct=None if entry.get("prediction") is None else entry["prediction"] == outcome)
    said = "no prediction" if entry.get("prediction") is None else f"you predicted {entry['prediction']!r}"
    print(f"{name}: measured {measured:+.3f} -> {outcome!r} ({said})")


# ------------------------------------------------------------------------------------ diffusion
def _flat(x):
    return x.flatten(2)  # (B, C, h, w) -> (B, C, N)


def _reference_diffusion(query, memory):
    from voslab.nn.attention import diffusion

    out, P = diffusion(_flat(query), _flat(memory), _flat(memory), return_attention=True)
    return out.reshape(query.shape), P


def diffusion_mistakes() -> dict[str, Callable]:
    """Known wrong variants of ``diffusion(query, memory) -> (out on the query's grid, P)``, each
    named by what the learner got wrong (for :func:`check`'s ``mistakes``)."""
    import torch

    def logits(q, m, scale=True):
        return _flat(q).transpose(1, 2) @ _flat(m) / (q.shape[1] ** 0.5 if scale else 1.0)  # (B, Nq, Nm)

    def wrong_axis(q, m):
        P = torch.softmax(logits(q, m), dim=1)
        return (_flat(m) @ P.transpose(1, 2)).reshape(q.shape), P

    def no_sqrt(q, m):
        P = torch.softmax(logits(q, m, scale=False), dim=-1)
        return (_flat(m) @ P.transpose(1, 2)).reshape(q.shape), P

    def mixes_query(q, m):  # applies when both grids have as many positions
        P = torch.softmax(logits(q, m), dim=-1)
        return (_flat(q) @ P.transpose(1, 2)).reshape(q.shape), P

    def no_softmax(q, m):
        P = logits(q, m)
        return (_flat(m) @ P.transpose(1, 2)).reshape(q.shape), P

    return {"the softmax normalises over the query positions instead of the memory positions": wrong_axis,
            "the logits are not divided by sqrt(C)": no_sqrt,
            "the query's own embeddings are mixed instead of the memory's": mixes_query,
            "P has no softmax (raw dot products)": no_softmax}


def check_diffusion(name: str, fn: Callable, cases: Iterable[Any] = (), n_random: int = 3) -> bool:
    """:func:`check` for ``fn(query (B, C, hq, wq), memory (B, C, hm, wm)) -> (out (B, C, hq, wq),
    P (B, Nq, Nm))``, on ``cases`` plus random maps of different grid sizes, naming the usual mistakes."""
    import torch

    def random_pair(rng: np.random.Generator):
        b, c = int(rng.integers(1, 3)), int(rng.integers(2, 9))
        hq, wq, hm, wm = (int(v) for v in rng.integers(1, 6, size=4))
        if hq * wq == hm * wm:
            hm += 1  # different numbers of positions: a transposed P or the wrong grid shows
        q = torch.from_numpy(rng.standard_normal((b, c, hq, wq)))
        return q, torch.from_numpy(rng.standard_normal((b, c, hm, wm)))

    return check(name, fn, _reference_diffusion, cases, mistakes=diffusion_mistakes(), random_cases=random_pair,
                 n_random=n_random, rtol=1e-5, atol=1e-6)
