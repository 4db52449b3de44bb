"""Course assignments from the teacher notebooks: student copies and a grader.

The teacher notebook is the one source. Its exercises follow :mod:`voslab.exercises`: a stub cell
tagged ``exercise`` (calls ``todo``), a cell tagged ``solution`` (``if SOLUTIONS: ...``), a checker
cell; "predict, then measure" experiments have a cell tagged ``prediction`` the student fills in.

* :func:`make_student_copies` writes copies without the ``solution`` cells (and without outputs),
  everything else kept: prose, stubs, checkers, the rest of the notebook, which goes on with the
  library's reference after each exercise.
* :func:`grade` runs every submitted notebook with papermill (``smoke`` preset, a time limit per
  cell), never stops on a broken one, and writes a per-student, per-exercise score table
  (``grades.csv``, ``grades.md``) and the checkers' messages counted over all students
  (``mistakes.md``).

From the command line: ``voslab assign student notebooks/ student/`` and
``voslab assign grade submissions/ --out grades/``. Submissions: one folder per student holding
their notebooks (``submissions/<student>/03_adnet.ipynb``), or notebooks named ``<student>__<stem>.ipynb``.
"""
from __future__ import annotations

import collections
import copy
import csv
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from voslab.utils import atomic_write

__all__ = ["make_student_copies", "student_copy", "grade", "Submission", "GradeReport"]

SOLUTION_TAG, EXERCISE_TAG = "solution", "exercise"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _notebooks(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.ipynb") if not p.name.startswith("."))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: not a notebook or a folder of notebooks")
    return found


# ------------------------------------------------------------------------------------ student copies
def student_copy(notebook):
    """A student version of a teacher notebook (an nbformat node): ``solution`` cells removed,
    outputs cleared, ``SOLUTIONS = False`` in the parameters cell. Raises ValueError when a solution
    cell does not follow an exercise stub (it would leave the student nothing to fill in)."""
    import nbformat

    nb = copy.deepcopy(nbformat.from_dict(notebook))
    cells = []
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG in _tags(cell):
            if not cells or EXERCISE_TAG not in _tags(cells[-1]):
                raise ValueError(f"cell {i} is tagged 'solution' but the cell before it is not an 'exercise' stub")
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if "parameters" in _tags(cell):
                cell.source = _solutions_off(cell.source)
        cells.append(cell)
    nb.cells = cells
    nb.metadata["voslab"] = {"student_copy": True}
    return nb


def _solutions_off(source: str) -> str:
    """The parameters cell with ``SOLUTIONS = False`` (its comment kept)."""
    lines = []
    for line in source.split("\n"):
        name, eq, rest = line.partition("=")
        if eq and name.strip() == "SOLUTIONS":
            comment = rest.partition("#")[2]
            line = "SOLUTIONS = False" + (f"  #{comment}" if comment else "")
        lines.append(line)
    return "\n".join(lines)


def make_student_copies(source: str | os.PathLike | Iterable, out_dir: str | os.PathLike) -> list[Path]:
    """Write the student copy of each notebook of ``source`` (a notebook, a folder, or a list) into
    ``out_dir`` (same file names). Returns the written paths. Notebooks without exercises are
    copied as they are (minus outputs)."""
    import nbformat

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in _notebooks(source):
        nb = student_copy(nbformat.read(path, as_version=4))
        text = nbformat.writes(nb)
        written.append(atomic_write(out / path.name, lambda f: f.write(text), binary=False))
    return written


# ------------------------------------------------------------------------------------ grading
@dataclass
class Submission:
    """One executed notebook of one student: its recorded exercises, or why it did not run."""

    student: str
    notebook: str
    exercises: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class GradeReport:
    """What :func:`grade` found: submissions, the table rows, and the counted mistake messages."""

    submissions: list[Submission]
    rows: list[dict[str, Any]]
    mistakes: collections.Counter

    def scores(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(student, notebook) -> (exercise checks passed, checks in the notebook)."""
        table: dict[tuple[str, str], list[int]] = {}
        for row in self.rows:
            if row["kind"] == "check":
                entry = table.setdefault((row["student"], row["notebook"]), [0, 0])
                entry[0] += row["points"]
                entry[1] += 1
        return {k: (v[0], v[1]) for k, v in table.items()}


def _submissions(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            found += [(path.name, nb) for nb in sorted(path.glob("*.ipynb"))]
        elif path.suffix == ".ipynb":
            student, sep, _ = path.stem.partition("__")
            found.append((student if sep else path.stem, path))
    return found


def _notebook_stem(path: Path) -> str:
    return path.stem.partition("__")[2] or path.stem


def run_submission(student: str, path: Path, workdir: Path, preset: str = "smoke", timeout: int = 300) -> Submission:
    """Execute one submitted notebook with papermill; never raises (a failure is recorded)."""
    import papermill

    stem = _notebook_stem(path)
    out_dir = workdir / student / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(str(path), str(out_dir / path.name), kernel_name="python3", language="python",
                                   cwd=str(path.parent),
                                   parameters={"PRESET": preset, "OUTPUT_DIR": str(out_dir), "INTERACTIVE": False},
                                   execution_timeout=timeout, progress_bar=False, log_output=False)
    except Exception as err:  # noqa: BLE001 - a broken submission must not stop the grading of the others
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"[:300]
    results = out_dir / f"{stem}.json"
    record = json.loads(results.read_text()).get("exercises", {}) if results.is_file() else {}
    return Submission(student, stem, record, error, time.perf_counter() - start)


def grade(submissions: str | os.PathLike, out_dir: str | os.PathLike, preset: str = "smoke", timeout: int = 300,
          workdir: str | os.PathLike | None = None, progress: bool = True) -> GradeReport:
    """Run and score every submitted notebook; write ``grades.csv``, ``grades.md`` and
    ``mistakes.md`` into ``out_dir``. An exercise a notebook never reached (it failed earlier)
    scores 0 with status "not run"."""
    folder = Path(submissions)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of submissions (one sub-folder per student, or "
                                "<student>__<notebook>.ipynb files)")
    found = _submissions(folder)
    if not found:
        raise FileNotFoundError(f"{folder}: no .ipynb submissions found")
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="voslab-grade-"))
    runs = []
    for k, (student, path) in enumerate(found, start=1):
        if progress:
            print(f"[{k}/{len(found)}] {student}: {path.name}", flush=True)
        runs.append(run_submission(student, path, work, preset, timeout))
    report = _report(runs)
    _write_reports(report, Path(out_dir))
    return report


def _report(runs: list[Submission]) -> GradeReport:
    names: dict[str, dict[str, str]] = collections.defaultdict(dict)  # notebook -> exercise -> kind
    for run in runs:
        for name, entry in run.exercises.items():
            names[run.notebook][name] = entry.get("kind", "check")
    rows, mistakes = [], collections.Counter()
    for run in runs:
        for name, kind in names[run.notebook].items():
            entry = run.exercises.get(name, {"status": "not run", "message": run.error or "the notebook stopped before it"})
            points = int(entry.get("status") == "ok")
            rows.append({"student": run.student, "notebook": run.notebook, "exercise": name, "kind": kind,
                         "status": entry.get("status"), "points": points, "message": entry.get("message", ""),
                         "prediction": entry.get("prediction"), "outcome": entry.get("outcome")})
            if kind == "check" and entry.get("status") in ("wrong", "error"):
                mistakes[f"{name}: {entry.get('mistake') or entry.get('message')}"] += 1
        if run.error:
            mistakes[f"{run.notebook}: notebook failed ({run.error})"] += 1
    return GradeReport(runs, rows, mistakes)


def _write_reports(report: GradeReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["student", "notebook", "exercise", "kind", "status", "points", "message", "prediction", "outcome"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(report.rows)
    atomic_write(out / "grades.csv", lambda f: f.write(buffer.getvalue()), binary=False)

    lines = ["# Grades", "", "| student | notebook | checks passed | predictions made | ran |", "|---|---|---|---|---|"]
    made = collections.Counter((r["student"], r["notebook"]) for r in report.rows
                               if r["kind"] == "prediction" and r["status"] == "ok")
    errors = {(s.student, s.notebook): s.error for s in report.submissions}
    for (student, nb), (passed, total) in sorted(report.scores().items()):
        ran = "yes" if errors.get((student, nb)) is None else f"no: {errors[(student, nb)]}"
        lines.append(f"| {student} | {nb} | {passed} / {total} | {made[(student, nb)]} | {ran} |")
    lines += ["", "## Per exercise", "", "| student | notebook | exercise | status | message |", "|---|---|---|---|---|"]
    lines += [f"| {r['student']} | {r['notebook']} | {r['exercise']} | {r['status']} | {r['message']} |"
              for r in report.rows]
    atomic_write(out / "grades.md", lambda f: f.write("\n".join(lines) + "\n"), binary=False)

    common = ["# Common mistakes", "", "| count | exercise: what the checker said |", "|---|---|"]
    common += [f"| {n} | {message} |" for message, n in report.mistakes.most_common()] or ["| 0 | none |"]
    atomic_write(out / "mistakes.md", lambda f: f.write("\n".join(common) + "\n"), binary=False)
