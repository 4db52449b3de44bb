"""Ablations a learner can trust: paired per-video differences, a bootstrap interval, a verdict.

An ablation compares two result sets on the same videos: the model *with* a mechanism and the model
*without* it. Each result set gives one score per video (J&F, IoU, ...), possibly for several
training seeds. The recipe:

1. average each video's score over the seeds of each side (seeds are a nuisance, videos the sample);
2. take the per-video paired difference ``with - without`` (pairing removes how hard a video is);
3. resample the videos with replacement (bootstrap, seeded, vectorised) and read the 95% interval
   of the mean difference;
4. say what it means: ``"matters: +0.12 [+0.08, +0.16]"`` when the interval excludes 0 in the
   mechanism's favour, ``"hurts: -0.05 [-0.09, -0.01]"`` when it excludes 0 the other way,
   ``"no measurable effect: +0.01 [-0.02, +0.04]"`` otherwise.

A result set may be a ``{video: score}`` dict, a ``{video: [score per seed]}`` dict, a list over
seeds of ``{video: score}`` dicts, or an array ``(n_videos,)`` / ``(n_seeds, n_videos)`` (videos
matched by position). Keep the per-video scores in your results JSON (:meth:`Effect.as_dict` keeps
the differences) so that a sweep can be re-analysed without re-running it.

Only NumPy is needed here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

__all__ = ["Effect", "paired_effect", "bootstrap_ci", "mean_ci", "video_means", "per_scenario", "per_scenario_effects",
           "verdict", "pooled_by_flag", "flag_effect"]

Results = Any  # Mapping[video, float | Sequence[float]] | Sequence[Mapping[video, float]] | array-like

_CHUNK = 1 << 21  # resampled values held at once by the bootstrap (16 MB of float64)


@dataclass(frozen=True)
class Effect:
    """A paired comparison of two result sets over videos (``with - without``, averaged over seeds).

    ``mean``: the mean per-video difference; ``low``/``high``: its bootstrap interval at
    ``confidence`` (infinite when there is a single video); ``n_videos``; ``n_seeds``: seeds averaged
    per video on each side (``(with, without)``); ``verdict``: the one-line reading;
    ``per_video``: ``{video: difference}``.
    """

    mean: float
    low: float
    high: float
    n_videos: int
    n_seeds: tuple[int, int]
    verdict: str
    per_video: dict = field(repr=False)
    confidence: float = 0.95
    n_resamples: int = 10000
    higher_is_better: bool = True

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0 (either way)."""
        return self.low > 0 or self.high < 0

    def describe(self) -> str:
        """The verdict with what it rests on, e.g. ``matters: +0.12 [+0.08, +0.16] (95% CI, 48 videos, 3+3 seeds)``."""
        a, b = self.n_seeds
        seeds = f"{a} seed{'s' * (a != 1)}" if a == b else f"{a}+{b} seeds"
        return (f"{self.verdict} ({self.confidence:.0%} CI over {self.n_videos} video{'s' * (self.n_videos != 1)}, "
                f"{seeds})")

    def as_dict(self) -> dict:
        """A JSON-ready dict (string video keys; an infinite bound becomes ``None``)."""
        def num(x: float):
            return float(x) if math.isfinite(x) else None
        return {"mean": num(self.mean), "low": num(self.low), "high": num(self.high),
                "confidence": self.confidence, "n_videos": self.n_videos, "n_seeds": list(self.n_seeds),
                "n_resamples": self.n_resamples, "higher_is_better": self.higher_is_better,
                "verdict": self.verdict, "per_video": {str(k): float(v) for k, v in self.per_video.items()}}

    def __str__(self) -> str:
        return self.verdict


# ------------------------------------------------------------------------------------- inputs
def video_means(results: Results, name: str = "results") -> tuple[dict, int]:
    """Average each video's score over seeds. -> (``{video: mean score}``, number of seeds).

    Accepts ``{video: score}``, ``{video: [score per seed]}``, a list over seeds of ``{video: score}``
    (every seed must score the same videos), or an array ``(n_videos,)`` / ``(n_seeds, n_videos)``
    whose videos are keyed by position ``0 .. n_videos-1``. Non-finite scores raise.
    """
    if isinstance(results, Mapping):
        if not results:
            raise ValueError(f"{name}: no videos (an empty dict of scores)")
        means, counts = {}, set()
        for video, value in results.items():
            scores = np.asarray(value, dtype=np.float64).ravel()
            if scores.size == 0:
                raise ValueError(f"{name}: video {video!r} has no score")
            _check_finite(scores, name, video)
            means[video], counts = float(scores.mean()), counts | {scores.size}
        return means, min(counts)
    if isinstance(results, Sequence) and not isinstance(results, (str, bytes)) and results \
            and all(isinstance(r, Mapping) for r in results):
        videos = list(results[0])
        for index, seed_scores in enumerate(results[1:], start=1):
            if set(seed_scores) != set(videos):
                raise ValueError(f"{name}: seed {index} scores other videos than seed 0 "
                                 f"({_difference_message(set(videos), set(seed_scores), 'seed 0', f'seed {index}')}); "
                                 "every seed must be evaluated on the same videos")
        stacked = np.array([[float(r[v]) for v in videos] for r in results])  # (n_seeds, n_videos)
        for j, video in enumerate(videos):
            _check_finite(stacked[:, j], name, video)
        return {v: float(m) for v, m in zip(videos, stacked.mean(0))}, len(results)
    try:
        scores = np.asarray(results, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected {{video: score}}, {{video: [scores]}}, a list of per-seed dicts or an "
                         f"array (n_videos,) / (n_seeds, n_videos); got {type(results).__name__}") from err
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"{name}: an array of scores must be (n_videos,) or (n_seeds, n_videos), "
                         f"got shape {np.shape(results)}")
    for j in range(scores.shape[1]):
        _check_finite(scores[:, j], name, j)
    return {j: float(m) for j, m in enumerate(scores.mean(0))}, scores.shape[0]


def _check_finite(scores: np.ndarray, name: str, video: Hashable) -> None:
    if not np.isfinite(scores).all():
        raise ValueError(f"{name}: video {video!r} has a non-finite score {scores.tolist()}; fix the evaluation "
                         "(or leave the video out of both result sets)")


def _difference_message(a: set, b: set, name_a: str, name_b: str) -> str:
    def show(items):
        items = sorted(items, key=str)
        return ", ".join(map(repr, items[:5])) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
    parts = []
    if a - b:
        parts.append(f"only in {name_a}: {show(a - b)}")
    if b - a:
        parts.append(f"only in {name_b}: {show(b - a)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- bootstrap
def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D). Seeded and vectorised.

    One value gives ``(-inf, inf)``: nothing can be said about its spread.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) < 100:
        raise ValueError(f"bootstrap_ci: use at least 100 resamples (10000 is the default), got {n_resamples}")
    n = values.size
    if n == 1:
        return -math.inf, math.inf
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_resamples))
    rows = max(1, _CHUNK // n)
    for start in range(0, len(means), rows):
        stop = min(start + rows, len(means))
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` with its :func:`bootstrap_ci`."""
    low, high = bootstrap_ci(values, confidence, seed=seed)
    return float(np.mean(np.asarray(values, dtype=np.float64))), low, high


def verdict(mean: float, low: float, high: float, higher_is_better: bool = True, digits: int = 2) -> str:
    """``"matters: +0.12 [+0.08, +0.16]"``, ``"hurts: ..."`` or ``"no measurable effect: ..."``."""
    good, bad = (low > 0, high < 0) if higher_is_better else (high < 0, low > 0)
    word = "matters" if good else "hurts" if bad else "no measurable effect"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{word}: {mean:+.{digits}f} [one video: no interval]"
    return f"{word}: {mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def paired_effect(with_: Results, without: Results, *, confidence: float = 0.95, n_resamples: int = 10000,
                  seed: int = 0, higher_is_better: bool = True, digits: int = 2) -> Effect:
    """Does the mechanism matter? Per-video ``with_ - without`` (each averaged over its seeds), a
    bootstrap interval over videos and a verdict (see the module docstring).

    ``with_`` / ``without``: result sets in any form :func:`video_means` accepts, on the same videos
    (a mismatch raises, naming the videos). ``higher_is_better=False`` for errors and times (a
    negative difference then "matters"). ``seed`` seeds the resampling.
    """
    a, seeds_a = video_means(with_, "with_")
    b, seeds_b = video_means(without, "without")
    if set(a) != set(b):
        raise ValueError("paired_effect: the two result sets score different videos "
                         f"({_difference_message(set(a), set(b), 'with_', 'without')}); compare the same videos "
                         "(same split, same config) or drop the extra ones from both")
    videos = sorted(a, key=str)
    diffs = np.array([a[v] - b[v] for v in videos])
    mean = float(diffs.mean())
    low, high = bootstrap_ci(diffs, confidence, n_resamples, seed)
    return Effect(mean=mean, low=low, high=high, n_videos=len(videos), n_seeds=(seeds_a, seeds_b),
                  verdict=verdict(mean, low, high, higher_is_better, digits),
                  per_video={v: float(d) for v, d in zip(videos, diffs)}, confidence=confidence,
                  n_resamples=int(n_resamples), higher_is_better=higher_is_better)


# ------------------------------------------------------------------------------------- breakdowns
def _groups(videos, scenario_of: Mapping) -> dict[str, list]:
    missing = [v for v in videos if v not in scenario_of]
    if missing:
        raise ValueError(f"no scenario for videos {sorted(missing, key=str)[:5]}{' ...' if len(missing) > 5 else ''}; "
                         "scenario_of must map every scored video (e.g. voslab.data.synthetic.scenario_of)")
    groups: dict[str, list] = {}
    for v in sorted(videos, key=str):
        groups.setdefault(str(scenario_of[v]), []).append(v)
    return dict(sorted(groups.items()))


def per_scenario(results: Results, scenario_of: Mapping) -> dict[str, dict]:
    """Mean score per scenario: ``{scenario: {"mean": float, "n_videos": int}}`` (sorted by name),
    scores averaged over seeds first; ``scenario_of`` maps each video to its scenario."""
    means, _ = video_means(results)
    return {name: {"mean": float(np.mean([means[v] for v in videos])), "n_videos": len(videos)}
            for name, videos in _groups(means, scenario_of).items()}


def per_scenario_effects(with_: Results, without: Results, scenario_of: Mapping, **options) -> dict[str, Effect]:
    """:func:`paired_effect` within each scenario (``options`` as for it): ``{scenario: Effect}``."""
    a, _ = video_means(with_, "with_")
    b, _ = video_means(without, "without")
    if set(a) != set(b):
        raise ValueError("per_scenario_effects: the two result sets score different videos "
                         f"({_difference_message(set(a), set(b), 'with_', 'without')})")
    return {name: paired_effect(_subset(with_, a, videos), _subset(without, b, videos), **options)
            for name, videos in _groups(a, scenario_of).items()}


def _subset(results: Results, means: dict, videos: list) -> dict:
    """The per-seed scores of ``videos`` as ``{video: [scores]}`` (keeps the seed count)."""
    if isinstance(results, Mapping):
        return {v: results[v] for v in videos}
    if isinstance(results, Sequence) and results and all(isinstance(r, Mapping) for r in results):
        return {v: [r[v] for r in results] for v in videos}
    scores = np.asarray(results, dtype=np.float64)
    scores = scores[None] if scores.ndim == 1 else scores
    return {v: scores[:, v].tolist() for v in videos}


# ------------------------------------------------------------------------------------- per frame
def _clean(record: Mapping, flags: Sequence[str]) -> np.ndarray:
    """Frames of one video with none of ``flags``."""
    return ~np.any([np.asarray(record[f], bool) for f in flags], axis=0)


def pooled_by_flag(per_frame: Mapping, flags: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Mean per-frame score over the frames with each flag, and over the *clean* frames (no flag),
    pooled over videos -> ``{group: (mean or nan, n frames)}`` with ``"clean"`` first.

    ``per_frame``: ``{video: {"J": [score per frame], <flag>: [bool per frame], ...}}`` (e.g. from
    ``voslab.inference.frame_records``); ``flags``: the flag names (``voslab.data.synthetic.FRAME_FLAGS``).
    """
    if not per_frame:
        raise ValueError("pooled_by_flag: no videos")
    j = np.concatenate([np.asarray(v["J"], dtype=np.float64) for v in per_frame.values()])
    groups = {"clean": np.concatenate([_clean(v, flags) for v in per_frame.values()])}
    groups |= {f: np.concatenate([np.asarray(v[f], bool) for v in per_frame.values()]) for f in flags}
    return {g: (float(j[m].mean()) if m.any() else float("nan"), int(m.sum())) for g, m in groups.items()}


def flag_effect(per_frame: Mapping, flag: str, flags: Sequence[str], confidence: float = 0.95,
                seed: int = 0) -> tuple[float, float, float, int] | None:
    """What frames with ``flag`` cost, within videos: per video, mean J on its flagged frames minus
    mean J on its clean frames; -> ``(mean, low, high, n videos)`` with a bootstrap interval over the
    videos that have both kinds of frame, or None when fewer than two videos do."""
    diffs = []
    for record in per_frame.values():
        j = np.asarray(record["J"], dtype=np.float64)
        flagged, clean = np.asarray(record[flag], bool), _clean(record, flags)
        if flagged.any() and clean.any():
            diffs.append(j[flagged].mean() - j[clean].mean())
    if len(diffs) < 2:
        return None
    mean, low, high = mean_ci(diffs, confidence, seed)
    return mean, low, high, len(diffs)
