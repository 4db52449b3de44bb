"""voslab sweep / voslab report: parameter checks before anything runs, one folder per run, a failing
run recorded while the others go on, resumption, and the grouped report with CIs over seeds."""
from __future__ import annotations

import json

import nbformat
import pytest

from voslab import cli, sweep


def tiny_notebook(path):
    """Parameters PRESET/SEED/K/FAIL; metrics J&F-Mean = 0.1 K + 0.01 SEED; raises when FAIL."""
    cells = [
        nbformat.v4.new_code_cell('PRESET = "auto"\nSEED = 0\nK = 1\nFAIL = False\nOUTPUT_DIR = None\nINTERACTIVE = None'),
        nbformat.v4.new_code_cell("from voslab import notebook\nP = notebook.resolve(globals())"),
        nbformat.v4.new_code_cell("if FAIL:\n    raise RuntimeError('this run fails on purpose')"),
        nbformat.v4.new_code_cell('notebook.save_results(OUTPUT_DIR, "tiny", {"metrics": {"J&F-Mean": 0.1 * K + 0.01 * SEED, '
                                  '"per K": {"K": float(K)}}, "timings": {"all": 0.0}})'),
    ]
    cells[0].metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("pairs, words", [
    ([["STEPS", "3"]], "has no parameter 'STEPS'"),
    ([["K", "abc"]], "default is 1 (int)"),
    ([["FAIL", "1"]], "default is False (bool)"),
    ([["OUTPUT_DIR", "x"]], "set by the sweep itself"),
])
def test_bad_parameters_are_refused_before_anything_runs(tmp_path, pairs, words, capsys):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    argv = ["sweep", str(nb), "--out", str(tmp_path / "runs")]
    for name, *values in pairs:
        argv += ["-p", name, *values]
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_grid_values_are_literals_and_runs_are_named_by_them(tmp_path):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = sweep.parse_grid(nb, [["SEED", "0", "1"], ["PRESET", "smoke"]])
    assert grid == {"SEED": [0, 1], "PRESET": ["smoke"]}
    assert [n for n, _ in sweep.run_names("tiny", grid)] == ["tiny__SEED=0__PRESET=smoke", "tiny__SEED=1__PRESET=smoke"]


@pytest.mark.notebook
def test_sweep_runs_records_a_failure_resumes_and_reports(tmp_path, capsys):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    runs = tmp_path / "runs"
    argv = ["sweep", str(nb), "-p", "SEED", "0", "1", "-p", "K", "1", "2", "--out", str(runs), "--jobs", "2"]
    assert cli.main(argv) == 0
    assert cli.main(["sweep", str(nb), "-p", "SEED", "0", "-p", "K", "3", "-p", "FAIL", "True", "--out", str(runs)]) == 1
    out = capsys.readouterr().out
    assert "this run fails on purpose" in out and "1 failed" in out
    records = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/run.json")}
    assert len(records) == 5 and records["tiny__SEED=0__K=3__FAIL=True"]["status"] == "failed"

    assert cli.main(argv) == 0  # resumes: every run already done
    assert "4 already done, 0 to run" in capsys.readouterr().out

    assert cli.main(["report", str(runs), "--metric", "J&F-Mean", "--metric", "per K/K"]) == 0
    rows = sweep.collect(runs)
    assert {r["status"] for r in rows} == {"done", "failed"}
    groups = {g["K"]: g for g in sweep.summarize(rows, "J&F-Mean")}
    assert groups[1]["n"] == 2 and groups[1]["mean"] == pytest.approx(0.105)
    assert groups[1]["low"] <= 0.105 <= groups[1]["high"] and 3 not in groups  # the failed run has no score
    report = (runs / "report.md").read_text()
    assert "| 2 | " in report and "this run fails on purpose" in report
    assert (runs / "report.csv").is_file() and (runs / "J-F-Mean.png").is_file()
