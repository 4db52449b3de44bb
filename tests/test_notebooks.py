"""Every notebook: follows the parameters convention, and runs in the smoke preset with papermill.

papermill exercises what nbval cannot: injected parameters (``-p PRESET smoke -p OUTPUT_DIR ...``).
Each run must finish within ``VOSLAB_NOTEBOOK_TIMEOUT`` seconds (default 300) and write
``OUTPUT_DIR/<notebook>.json``, whose contents are checked here.
"""
from __future__ import annotations

import ast
import json
import math
import os
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_S = float(os.environ.get("VOSLAB_NOTEBOOK_TIMEOUT", "300"))
REQUIRED_PARAMETERS = {"PRESET", "OUTPUT_DIR", "INTERACTIVE", "SEED"}


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters_cell_index(cells: list) -> int:
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one code cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_convention(path: Path):
    """A ``parameters`` cell of literal assignments, then a cell calling ``resolve(globals()...)``,
    and a final ``save_results(OUTPUT_DIR, "<stem>", ...)``."""
    cells = _code_cells(nbformat.read(path, as_version=4))
    index = _parameters_cell_index(cells)
    tree = ast.parse(cells[index].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), (
            f"{path.name}: the parameters cell may only hold `NAME = literal` lines, found: {ast.unparse(node)}"
        )
        ast.literal_eval(node.value)  # raises ValueError for non-literals
        names.add(node.targets[0].id)
    assert REQUIRED_PARAMETERS <= names, f"{path.name}: parameters cell lacks {sorted(REQUIRED_PARAMETERS - names)}"
    assert "resolve(globals()" in cells[index + 1].source, f"{path.name}: the cell after the parameters cell must call resolve(globals(), ...)"
    assert any(f'save_results(OUTPUT_DIR, "{path.stem}"' in c.source for c in cells[-3:]), (
        f'{path.name}: one of the last cells must call save_results(OUTPUT_DIR, "{path.stem}", ...)'
    )


def _assert_finite_numbers(tree, where: str) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _assert_finite_numbers(value, f"{where}[{key!r}]")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            _assert_finite_numbers(value, f"{where}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        assert math.isfinite(tree), f"{where} is not finite: {tree}"
    else:
        assert tree is not None, f"{where} is None (NaN or inf were recorded)"


def check_results(results: dict, stem: str) -> None:
    """What every notebook's results file must say after a smoke run."""
    assert results["notebook"] == stem
    assert results["preset"] == "smoke", "the smoke preset must come through from papermill"
    assert isinstance(results.get("seed"), int)
    timings = results.get("timings")
    assert isinstance(timings, dict) and timings, "record timings (seconds per phase) in results['timings']"
    for phase, seconds in timings.items():
        assert isinstance(seconds, (int, float)) and 0 <= seconds < TIMEOUT_S, f"timing {phase!r} = {seconds}"
    metrics = results.get("metrics", {})
    _assert_finite_numbers(metrics, "metrics")
    for name, value in results.get("checks", {}).items():
        assert value is True, f"notebook check {name!r} failed: {value}"
    if not stem.startswith("00_"):
        jf = metrics.get("J&F-Mean")
        assert isinstance(jf, (int, float)) and 0.0 <= jf <= 1.0, f"J&F-Mean must be in [0, 1], got {jf!r}"
        check_effects(results)  # paper notebooks: the ablation's statistics
        if stem.startswith("06_"):
            check_comparison(results)
    else:
        check_scenario_baselines(results)


def check_effects(results: dict) -> None:
    """A paper notebook's ablation verdicts come from paired per-video statistics it recorded."""
    effects, verdicts = results.get("effects"), results.get("verdicts")
    assert isinstance(effects, dict) and effects, "record the ablation's stats.paired_effect(...).as_dict() in 'effects'"
    assert set(verdicts) == set(effects), "one printed verdict per recorded effect"
    for name, effect in effects.items():
        per_video = effect["per_video"]
        assert per_video and effect["n_videos"] == len(per_video), name
        assert abs(effect["mean"] - sum(per_video.values()) / len(per_video)) < 1e-9, f"{name}: mean of the per-video differences"
        if effect["low"] is not None:
            assert effect["low"] <= effect["mean"] <= effect["high"], name
        assert verdicts[name].startswith(effect["verdict"]), name
    assert results.get("per_video"), "keep the per-video scores so a sweep can be re-analysed"


def check_comparison(results: dict) -> None:
    """Notebook 06: every method scored on the same videos, the semi-supervised ones also per object,
    per-scenario scores that are the means of the kept per-video scores, costs per method."""
    from voslab import zoo

    methods = results["configs"].keys()
    assert set(methods) == set(zoo.available()), f"compare every model, got {sorted(methods)}"
    binary, per_video = results["metrics"]["binary"], results["per_video"]
    assert set(binary) == set(per_video) == set(methods)
    videos = set(results["scenario_of"])
    for name in methods:
        assert set(per_video[name]) == videos, f"{name} scored other videos than the others"
        mean = sum(per_video[name].values()) / len(videos)
        assert math.isclose(mean, binary[name]["J&F-Mean"], abs_tol=1e-9), name
        for scenario, score in results["metrics"]["scenario J&F-Mean"][name].items():
            mine = [per_video[name][v] for v, s in results["scenario_of"].items() if s == scenario]
            assert math.isclose(score, sum(mine) / len(mine), abs_tol=1e-9), (name, scenario)
        assert results["metrics"]["ms per frame"][name] > 0
    semi = {n for n in methods if zoo.get(n).task == "semi"}
    assert set(results["metrics"]["multi-object"]) == semi
    assert results["metrics"]["J&F-Mean"] == max(b["J&F-Mean"] for b in binary.values())


def check_scenario_baselines(results: dict) -> None:
    """Notebook 00's section 5: a per-frame baseline's J&F per scenario (``mixed`` and at least one
    other), per-frame J broken down by flag, and the per-video scores kept for re-analysis."""
    from voslab.data.synthetic import FRAME_FLAGS, SCENARIOS

    scores = results["metrics"].get("scenario J&F-Mean")
    assert isinstance(scores, dict) and "mixed" in scores and len(scores) >= 2, (
        f"metrics['scenario J&F-Mean'] must hold 'mixed' and another scenario, got {scores!r}")
    assert set(scores) <= set(SCENARIOS), f"unknown scenarios {sorted(set(scores) - set(SCENARIOS))}"
    for scenario, jf in scores.items():
        assert isinstance(jf, (int, float)) and 0.0 <= jf <= 1.0, f"J&F of {scenario} must be in [0, 1], got {jf!r}"
    by_flag = results["metrics"].get("scenario J by frame flag", {})
    assert set(by_flag) == set(scores), "metrics['scenario J by frame flag'] must break down every scenario"
    for scenario, groups in by_flag.items():
        assert groups and set(groups) <= {"clean", *FRAME_FLAGS}, f"{scenario}: flag groups {sorted(groups)}"
    assert "lookalikes" in by_flag.get("transient_lookalikes", {"lookalikes": 0}), (
        "transient_lookalikes has no frame with a lookalike: the flags did not reach the breakdown")
    sweep = results["scenario_baselines"]["results"]
    n_val = results["scenario_baselines"]["schedule"]["val_videos"]
    for scenario in scores:
        per_video = sweep[scenario]["per_video"]
        assert len(per_video) == n_val, f"{scenario}: {len(per_video)} per-video scores for {n_val} val videos"
        mean = sum(per_video.values()) / len(per_video)
        assert math.isclose(mean, scores[scenario], abs_tol=1e-9), f"{scenario}: J&F {scores[scenario]} != mean {mean}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_preset(path: Path, tmp_path: Path, voslab_cache: Path):
    import papermill

    output_dir = tmp_path / "outputs"
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path), str(tmp_path / path.name),
        parameters={"PRESET": "smoke", "OUTPUT_DIR": str(output_dir), "INTERACTIVE": False},
        kernel_name="python3", cwd=str(path.parent), execution_timeout=int(TIMEOUT_S),
        progress_bar=False,
    )
    seconds = time.perf_counter() - start
    assert seconds < TIMEOUT_S, f"{path.name} took {seconds:.0f} s in the smoke preset (budget {TIMEOUT_S:.0f} s)"

    executed = nbformat.read(tmp_path / path.name, as_version=4)
    assert any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in executed.cells)
    results_file = output_dir / f"{path.stem}.json"
    assert results_file.is_file(), f"{path.name} did not write {results_file.name} (call save_results at the end)"
    check_results(json.loads(results_file.read_text()), path.stem)


def _exercise_notebooks() -> list[Path]:
    return [p for p in NOTEBOOKS if any("exercise" in c.get("metadata", {}).get("tags", [])
                                        for c in nbformat.read(p, as_version=4).cells)]


@pytest.mark.parametrize("path", _exercise_notebooks(), ids=lambda p: p.stem)
def test_exercises_are_stub_then_solution_cells(path: Path):
    """Assignment format: each cell tagged ``exercise`` (the stub, calling ``todo``) is followed by a
    cell tagged ``solution`` that only runs ``if SOLUTIONS:``; stubs carry no solution code."""
    cells = _code_cells(nbformat.read(path, as_version=4))
    tags = [c.get("metadata", {}).get("tags", []) for c in cells]
    stubs = [i for i, t in enumerate(tags) if "exercise" in t]
    for i in stubs:
        assert "todo(" in cells[i].source, f"{path.name}: exercise cell {i} must call todo(...)"
        assert i + 1 < len(cells) and "solution" in tags[i + 1], f"{path.name}: exercise cell {i} has no solution cell after it"
        assert cells[i + 1].source.lstrip().startswith("if SOLUTIONS:"), f"{path.name}: solution cell must start with `if SOLUTIONS:`"
    assert len([t for t in tags if "solution" in t]) == len(stubs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_installs_voslab_where_it_is_missing(path: Path):
    """Runs where students are (a hosted notebook service): the first code cell installs voslab
    when it cannot be imported, before any voslab import."""
    first = _code_cells(nbformat.read(path, as_version=4))[0].source
    assert 'find_spec("voslab") is None' in first and "pip" in first and "import voslab" not in first
