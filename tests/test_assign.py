"""voslab.assign: student copies without solutions that still run, and a grader that scores
solved, unsolved and broken submissions without stopping."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from voslab import assign, cli

REPO = Path(__file__).resolve().parents[1]
TEACHER_NOTEBOOKS = [p for p in sorted((REPO / "notebooks").glob("*.ipynb"))
                     if any("solution" in c.get("metadata", {}).get("tags", []) for c in nbformat.read(p, 4).cells)]


def tiny_teacher_notebook() -> nbformat.NotebookNode:
    """Parameters, an exercise stub, its solution, a checker, a prediction and save_results."""
    def code(source, tags=()):
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        return cell

    return nbformat.v4.new_notebook(cells=[
        code('PRESET = "auto"\nSEED = 0\nOUTPUT_DIR = None\nINTERACTIVE = None\nSOLUTIONS = True  # stubs when False',
             ["parameters"]),
        code("from voslab import exercises, notebook\nP = notebook.resolve(globals())"),
        code('def double(x):\n    exercises.todo("return twice x")', ["exercise"]),
        code("if SOLUTIONS:\n    def double(x):\n        return 2 * x", ["solution"]),
        code('exercises.check("double", double, lambda x: x + x, [1, 2.5], mistakes={"adds one": lambda x: x + 1})'),
        code('GUESS = None', ["prediction"]),
        code('exercises.predict("guess", GUESS, ["up", "down"])\nexercises.reveal("guess", 0.5, "up")'),
        code('notebook.save_results(OUTPUT_DIR, "tiny", {"timings": {"all": 0.0}})'),
    ])


def test_student_copy_removes_solutions_and_keeps_the_rest():
    teacher = tiny_teacher_notebook()
    student = assign.student_copy(teacher)
    sources = [c.source for c in student.cells]
    assert len(student.cells) == len(teacher.cells) - 1
    assert not any("return 2 * x" in s for s in sources) and any("todo(" in s for s in sources)
    assert "SOLUTIONS = False  # stubs when False" in sources[0]
    assert any("exercises.check" in s for s in sources) and student.metadata["voslab"]["student_copy"]


def test_a_solution_without_its_stub_is_refused():
    teacher = tiny_teacher_notebook()
    del teacher.cells[2]
    with pytest.raises(ValueError, match="not an 'exercise' stub"):
        assign.student_copy(teacher)


@pytest.mark.parametrize("path", TEACHER_NOTEBOOKS, ids=lambda p: p.stem)
def test_student_copies_of_the_notebooks_have_no_solution_code(path, tmp_path):
    [copy] = assign.make_student_copies(path, tmp_path)
    teacher, student = nbformat.read(path, 4), nbformat.read(copy, 4)
    solutions = [c.source for c in teacher.cells if "solution" in c.get("metadata", {}).get("tags", [])]
    assert solutions and not any(c.source in solutions for c in student.cells)
    assert len(student.cells) == len(teacher.cells) - len(solutions)


@pytest.mark.notebook
def test_student_copies_run_under_nbval_with_checks_not_done(tmp_path, voslab_cache):
    """CI's check of the student copies: they run top to bottom in the smoke preset, and every
    exercise check reports 'not done' (the notebook goes on with the library's versions)."""
    copies = assign.make_student_copies(TEACHER_NOTEBOOKS, tmp_path / "student")
    env = {**os.environ, "VOSLAB_PRESET": "smoke", "VOSLAB_OUTPUT_DIR": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "--nbval-lax", "--nbval-current-env", *map(str, copies)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for copy in copies:
        record = json.loads((tmp_path / "out" / f"{copy.stem}.json").read_text())["exercises"]
        checks = {k: v["status"] for k, v in record.items() if v["kind"] == "check"}
        assert checks and set(checks.values()) == {"not done"}, (copy.name, checks)


@pytest.mark.notebook
def test_grader_scores_solved_unsolved_and_broken_submissions(tmp_path, voslab_cache):
    teacher = tiny_teacher_notebook()
    subs = tmp_path / "submissions"
    for student, nb in {"ada": teacher, "bob": assign.student_copy(teacher)}.items():
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / "tiny.ipynb")
    wrong = assign.student_copy(teacher)
    wrong.cells[2].source = "def double(x):\n    return x + 1"              # a known mistake
    wrong.cells[4].source = 'GUESS = "up"'
    nbformat.write(wrong, subs / "cy__tiny.ipynb")
    broken = assign.student_copy(teacher)
    broken.cells[1].source += "\nraise RuntimeError('my kernel broke')"
    nbformat.write(broken, subs / "dee__tiny.ipynb")

    assert cli.main(["assign", "grade", str(subs), "--out", str(tmp_path / "grades"), "--timeout", "120"]) == 0
    rows = (tmp_path / "grades" / "grades.csv").read_text()
    scores = {}
    for line in rows.splitlines()[1:]:
        student, nb, exercise, kind, status, points, *_ = line.split(",")
        scores[(student, exercise)] = (status, int(points))
    assert scores[("ada", "double")] == ("ok", 1)
    assert scores[("bob", "double")] == ("not done", 0)
    assert scores[("cy", "double")] == ("wrong", 0) and scores[("cy", "guess")] == ("ok", 1)
    assert scores[("dee", "double")] == ("not run", 0)
    mistakes = (tmp_path / "grades" / "mistakes.md").read_text()
    assert "double: adds one" in mistakes and "my kernel broke" in mistakes
    assert "| ada | tiny | 1 / 1 |" in (tmp_path / "grades" / "grades.md").read_text()
