"""voslab.stats: paired per-video differences, bootstrap intervals, verdicts, per-scenario breakdowns."""
from __future__ import annotations

import json

import numpy as np
import pytest

from voslab import stats


def scores(n_videos=48, n_seeds=3, effect=0.0, seed=0, video_sd=0.15, seed_sd=0.03):
    """Two result sets on the same videos: hard and easy videos (shared), seed noise, a known effect."""
    rng = np.random.default_rng(seed)
    difficulty = 0.55 + video_sd * rng.standard_normal(n_videos)  # shared by both sides: pairing removes it
    without = difficulty + seed_sd * rng.standard_normal((n_seeds, n_videos))
    with_ = difficulty + effect + seed_sd * rng.standard_normal((n_seeds, n_videos))
    names = [f"synth-val-{i:04d}" for i in range(n_videos)]
    as_seed_dicts = lambda a: [dict(zip(names, row)) for row in a]  # noqa: E731
    return as_seed_dicts(with_), as_seed_dicts(without)


def test_known_effect_matters_with_an_interval_around_it():
    with_, without = scores(effect=0.12)
    effect = stats.paired_effect(with_, without)
    assert effect.verdict.startswith("matters: +0.12 [")
    assert 0.08 < effect.low < 0.12 < effect.high < 0.16
    assert effect.n_videos == 48 and effect.n_seeds == (3, 3) and effect.significant
    assert str(effect) == effect.verdict and "48 videos, 3 seeds" in effect.describe()
    assert len(effect.per_video) == 48 and abs(np.mean(list(effect.per_video.values())) - effect.mean) < 1e-12


def test_harmful_mechanism_hurts_and_lower_is_better_flips():
    with_, without = scores(effect=-0.05)
    assert stats.paired_effect(with_, without).verdict.startswith("hurts: -0.05 [")
    # an error rate that drops by 0.05: the mechanism matters when lower is better
    assert stats.paired_effect(with_, without, higher_is_better=False).verdict.startswith("matters: -0.05")


def test_zero_effect_is_no_measurable_effect():
    with_, without = scores(effect=0.0, seed=3)
    effect = stats.paired_effect(with_, without)
    assert effect.low < 0 < effect.high and not effect.significant
    assert effect.verdict.startswith("no measurable effect: ")
    same = stats.paired_effect({"a": 0.5, "b": 0.7}, {"a": 0.5, "b": 0.7})
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    assert same.verdict == "no measurable effect: +0.00 [+0.00, +0.00]"


def test_pairing_removes_video_difficulty():
    """Video-to-video spread (0.15) dwarfs the effect (0.03); the paired interval still finds it."""
    with_, without = scores(effect=0.03, video_sd=0.15, seed_sd=0.01, seed=1)
    assert stats.paired_effect(with_, without).verdict.startswith("matters")
    a = np.mean([list(r.values()) for r in with_], 0)
    b = np.mean([list(r.values()) for r in without], 0)
    lo, hi = stats.bootstrap_ci(a, seed=0)
    lo_b, hi_b = stats.bootstrap_ci(b, seed=0)
    assert lo < hi_b and lo_b < hi, "unpaired intervals overlap: comparing means alone would miss it"


def test_seeds_are_averaged_per_video_first():
    effect = stats.paired_effect({"a": [0.6, 0.8], "b": [0.5, 0.5]}, {"a": [0.6], "b": [0.4]})
    assert effect.per_video == pytest.approx({"a": 0.1, "b": 0.1}) and effect.n_seeds == (2, 1)
    means, n = stats.video_means([{"a": 0.2, "b": 0.4}, {"a": 0.4, "b": 0.6}])
    assert means == pytest.approx({"a": 0.3, "b": 0.5}) and n == 2
    means, n = stats.video_means(np.array([[0.2, 0.4], [0.4, 0.6], [0.3, 0.5]]))
    assert means == pytest.approx({0: 0.3, 1: 0.5}) and n == 3
    array_effect = stats.paired_effect(np.array([[0.7, 0.8, 0.9]]), np.array([0.5, 0.6, 0.7]))
    assert array_effect.mean == pytest.approx(0.2) and array_effect.n_videos == 3


def test_bootstrap_is_seeded_and_the_interval_covers_about_95_percent():
    values = np.random.default_rng(0).normal(size=30)
    assert stats.bootstrap_ci(values, seed=4) == stats.bootstrap_ci(values, seed=4)
    assert stats.bootstrap_ci(values, seed=4) != stats.bootstrap_ci(values, seed=5)
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(300):
        sample = 0.1 + 0.2 * rng.standard_normal(40)
        low, high = stats.bootstrap_ci(sample, n_resamples=2000, seed=int(rng.integers(1 << 30)))
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / 300 <= 0.99, covered / 300
    low50, high50 = stats.bootstrap_ci(values, confidence=0.5)
    low95, high95 = stats.bootstrap_ci(values, confidence=0.95)
    assert low95 < low50 < high50 < high95


def test_bootstrap_chunks_large_inputs_like_small_ones(monkeypatch):
    values = np.random.default_rng(2).normal(size=500)
    whole = stats.bootstrap_ci(values, n_resamples=1000, seed=3)
    monkeypatch.setattr(stats, "_CHUNK", 1200)  # two rows at a time
    assert stats.bootstrap_ci(values, n_resamples=1000, seed=3) == whole


def test_mismatched_or_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"different videos.*only in with_: 'c'.*only in without: 'd'"):
        stats.paired_effect({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "d": 1})
    with pytest.raises(ValueError, match="seed 1 scores other videos.*only in seed 0: 'b'"):
        stats.video_means([{"a": 1.0, "b": 2.0}, {"a": 1.0}])
    with pytest.raises(ValueError, match="non-finite"):
        stats.paired_effect({"a": float("nan"), "b": 1.0}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="different videos"):
        stats.paired_effect(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no videos"):
        stats.paired_effect({}, {})
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci([1.0, 2.0], confidence=95)


def test_one_video_gives_no_interval_and_no_claim():
    effect = stats.paired_effect({"a": 0.9}, {"a": 0.1})
    assert effect.verdict == "no measurable effect: +0.80 [one video: no interval]"
    assert effect.as_dict()["low"] is None


def test_as_dict_is_json_ready_and_keeps_per_video_differences():
    with_, without = scores(n_videos=6, effect=0.1)
    record = json.loads(json.dumps(stats.paired_effect(with_, without).as_dict()))
    assert set(record) >= {"mean", "low", "high", "n_videos", "n_seeds", "verdict", "per_video", "confidence"}
    assert len(record["per_video"]) == 6 and record["n_seeds"] == [3, 3]
    record = json.loads(json.dumps(stats.paired_effect(np.ones(3), np.zeros(3)).as_dict()))
    assert record["per_video"] == {"0": 1.0, "1": 1.0, "2": 1.0}


def test_per_scenario_breakdown():
    scenario_of = {"v0": "camouflage", "v1": "camouflage", "v2": "stop_and_go", "v3": "mixed"}
    table = stats.per_scenario([{"v0": 0.2, "v1": 0.4, "v2": 0.9, "v3": 0.5},
                                {"v0": 0.4, "v1": 0.6, "v2": 0.7, "v3": 0.5}], scenario_of)
    assert list(table) == ["camouflage", "mixed", "stop_and_go"]
    assert table["camouflage"] == {"mean": pytest.approx(0.4), "n_videos": 2}
    assert table["stop_and_go"]["mean"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no scenario for videos \\['v3'\\]"):
        stats.per_scenario({"v3": 0.5}, {"v0": "camouflage"})


def test_per_scenario_effects_find_where_the_mechanism_matters():
    rng = np.random.default_rng(5)
    names = [f"v{i}" for i in range(40)]
    scenario_of = {v: ("transient_lookalikes" if i % 2 else "camouflage") for i, v in enumerate(names)}
    base = rng.uniform(0.3, 0.7, (3, 40))
    gain = np.where(np.arange(40) % 2 == 1, 0.15, 0.0)
    with_ = [dict(zip(names, row + gain + 0.01 * rng.standard_normal(40))) for row in base]
    without = [dict(zip(names, row + 0.01 * rng.standard_normal(40))) for row in base]
    effects = stats.per_scenario_effects(with_, without, scenario_of, n_resamples=2000)
    assert effects["transient_lookalikes"].verdict.startswith("matters: +0.15")
    assert effects["camouflage"].verdict.startswith("no measurable effect")
    assert effects["camouflage"].n_videos == 20 and effects["camouflage"].n_seeds == (3, 3)


# ------------------------------------------------------------------------------------- per frame
def frame_record(j, **flags):
    """One video's per-frame record: J per frame and boolean flags (missing flags all False)."""
    n = len(j)
    return {"J": list(j), **{f: list(flags.get(f, [False] * n)) for f in ("lookalikes", "hidden")}}


FLAGS = ("lookalikes", "hidden")


def test_mean_ci_is_the_mean_and_its_bootstrap_interval():
    values = np.linspace(0.2, 0.8, 30)
    mean, low, high = stats.mean_ci(values, seed=3)
    assert mean == pytest.approx(0.5)
    assert (low, high) == stats.bootstrap_ci(values, seed=3)
    assert low < mean < high


def test_pooled_by_flag_pools_frames_and_counts_them():
    per_frame = {"a": frame_record([1.0, 0.0, 0.5], lookalikes=[False, True, False]),
                 "b": frame_record([0.2, 0.4], hidden=[False, True])}
    pooled = stats.pooled_by_flag(per_frame, FLAGS)
    assert list(pooled) == ["clean", "lookalikes", "hidden"]
    assert pooled["clean"] == (pytest.approx((1.0 + 0.5 + 0.2) / 3), 3)
    assert pooled["lookalikes"] == (0.0, 1) and pooled["hidden"] == (0.4, 1)
    none = stats.pooled_by_flag({"a": frame_record([0.3])}, FLAGS)["hidden"]
    assert np.isnan(none[0]) and none[1] == 0
    with pytest.raises(ValueError, match="no videos"):
        stats.pooled_by_flag({}, FLAGS)


def test_flag_effect_compares_flagged_and_clean_frames_within_each_video():
    rng = np.random.default_rng(0)
    per_frame = {}
    for i in range(20):  # videos of different difficulty, flagged frames 0.3 worse than their clean ones
        base = rng.uniform(0.3, 0.9)
        flagged = np.arange(8) % 3 == 0
        per_frame[f"v{i}"] = frame_record(np.where(flagged, base - 0.3, base), lookalikes=flagged)
    mean, low, high, n = stats.flag_effect(per_frame, "lookalikes", FLAGS)
    assert n == 20 and mean == pytest.approx(-0.3) and low == pytest.approx(-0.3) and high == pytest.approx(-0.3)
    assert stats.flag_effect(per_frame, "hidden", FLAGS) is None  # no video has a hidden frame
    one = {"v0": per_frame["v0"]}
    assert stats.flag_effect(one, "lookalikes", FLAGS) is None    # one video: nothing to say
