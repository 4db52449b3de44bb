"""Batch experiments: run a notebook over a grid of parameters with papermill, and report.

    voslab sweep notebooks/03_adnet.ipynb -p PRESET cpu -p SEED 0 1 2 -p ABLATION_STEPS 500 1000 --out runs/
    voslab report runs/

:func:`run_sweep` checks every parameter against the notebook's ``parameters`` cell before anything
runs (unknown names and values of the wrong type are refused), then executes one run per point of
the grid into ``<out>/<run name>/`` (the executed notebook, its results JSON, ``run.json`` with the
parameters and the status). Runs whose results exist are skipped, so an interrupted sweep resumes; a
failing run is recorded and the others go on. With ``jobs > 1`` runs go in parallel, each kernel with
one torch thread (two PyTorch processes with all threads each slow each other down many times).

:func:`collect` reads a sweep folder into rows (parameters + numeric metrics), :func:`summarize`
groups them by every parameter but the seed (mean and bootstrap 95% CI over seeds, with
:func:`voslab.stats.bootstrap_ci`), :func:`write_report` writes ``report.csv``, ``report.md`` and a
plot per metric.
"""
from __future__ import annotations

import ast
import concurrent.futures
import csv
import io
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from voslab.jupyter import literal_assignments
from voslab.stats import bootstrap_ci
from voslab.utils import atomic_write, write_json

__all__ = ["declared_parameters", "parse_grid", "run_names", "run_sweep", "collect", "summarize", "write_report",
           "SweepError", "to_dataframe", "parameter_columns", "check_grid"]

SEED_NAMES = ("SEED",)
HARNESS = {"OUTPUT_DIR", "INTERACTIVE"}  # set by the sweep itself


class SweepError(ValueError):
    """A sweep that cannot start: unknown parameter, wrong value type, missing notebook."""


# ------------------------------------------------------------------------------------ parameters
def declared_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """``{NAME: default}`` of the notebook's cell tagged ``parameters``."""
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise SweepError(f"{path}: no such notebook")
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SweepError(f"{path.name}: expected one code cell tagged 'parameters', found {len(cells)}")
    return literal_assignments(cells[0].source)


def _parse(text: str) -> Any:
    """A command-line value: a Python literal (1, 0.5, True, None, [1, 2], 'a') or else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or default == "auto" or value is None:
        return True  # "not set here" sentinels accept any value
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def parse_grid(notebook: str | os.PathLike, pairs: Iterable[Sequence[str]]) -> dict[str, list[Any]]:
    """``[["SEED", "0", "1"], ["PRESET", "cpu"]]`` -> ``{"SEED": [0, 1], "PRESET": ["cpu"]}``, checked
    against the notebook's parameters cell (:func:`check_grid`)."""
    grid = {name: [_parse(t) for t in texts] for name, *texts in pairs}
    check_grid(notebook, grid)
    return grid


def check_grid(notebook: str | os.PathLike, grid: Mapping[str, Sequence[Any]]) -> None:
    """:class:`SweepError` naming what is wrong when a name of ``grid`` is not in the notebook's
    parameters cell, is set by the sweep itself, has no value, or a value has another type than
    the notebook's default."""
    declared = declared_parameters(notebook)
    for name, values in grid.items():
        if name not in declared:
            raise SweepError(f"{Path(notebook).name} has no parameter {name!r}; its parameters cell declares: "
                             f"{', '.join(declared)}")
        if name in HARNESS:
            raise SweepError(f"{name} is set by the sweep itself (one folder per run, static figures)")
        if not values:
            raise SweepError(f"-p {name}: give at least one value")
        for value in values:
            if not _type_ok(value, declared[name]):
                raise SweepError(f"-p {name} {value!r}: the notebook's default is {declared[name]!r} "
                                 f"({type(declared[name]).__name__}); give a value of that type")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "none"


def run_names(stem: str, grid: Mapping[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """One (folder name, parameters) per point of the grid, named by its parameters."""
    names = list(grid)
    runs = []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        runs.append(("__".join([stem, *(f"{n}={_slug(v)}" for n, v in params.items())]), params))
    return runs


# ------------------------------------------------------------------------------------ running
def _execute(notebook: Path, run_dir: Path, params: dict[str, Any], timeout: int, one_thread: bool) -> dict[str, Any]:
    """One papermill run in a subprocess -> the run record (status, seconds, error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    injected = {**params, "OUTPUT_DIR": str(run_dir.resolve()), "INTERACTIVE": False}
    env = dict(os.environ)
    if one_thread:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(run_dir / notebook.name), "-y", json.dumps(injected),
           "--cwd", str(notebook.parent), "--execution-timeout", str(timeout), "--no-progress-bar", "-k", "python3"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return {"status": "done", "seconds": seconds}
    tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
    error = next((line for line in reversed(tail) if re.match(r"^\w*(Error|Exception)\b", line.strip())),
                 tail[-1] if tail else f"papermill exited {proc.returncode}")
    atomic_write(run_dir / "error.log", lambda f: f.write(proc.stdout + "\n" + proc.stderr), binary=False)
    return {"status": "failed", "seconds": seconds, "error": error.strip()[:500]}


def run_sweep(notebook: str | os.PathLike, grid: Mapping[str, list[Any]], out_dir: str | os.PathLike, *,
              jobs: int = 1, timeout: int = 3600, force: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Run ``notebook`` at every point of ``grid`` (see :func:`parse_grid`) into ``out_dir``.
    Returns one record per run: ``name``, ``parameters``, ``status`` ("done", "skipped", "failed"),
    ``seconds``, ``error``."""
    path = Path(notebook)
    check_grid(path, grid)  # the API gets the same checks as the command line
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_names(path.stem, grid)
    todo_runs, records = [], {}
    for name, params in runs:
        results = out / name / f"{path.stem}.json"
        if results.is_file() and not force:
            records[name] = {"name": name, "parameters": params, "status": "skipped", "seconds": 0.0}
        else:
            todo_runs.append((name, params))
    if progress:
        print(f"sweep {path.name}: {len(runs)} runs, {len(runs) - len(todo_runs)} already done, "
              f"{len(todo_runs)} to run with {jobs} job(s)", flush=True)

    def one(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        name, params = item
        record = {"name": name, "parameters": params, **_execute(path, out / name, params, timeout, jobs > 1)}
        write_json(out / name / "run.json", record)
        if progress:
            tail = f": {record['error']}" if record["status"] == "failed" else ""
            print(f"  {record['status']:<6} {name} ({record['seconds']:.0f} s){tail}", flush=True)
        return record

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        for record in pool.map(one, todo_runs):
            records[record["name"]] = record
    return [records[name] for name, _ in runs]


# ------------------------------------------------------------------------------------ reporting
def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def collect(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per run folder of a sweep: ``run``, ``status``, the parameters, and every numeric
    metric of its results JSON (nested keys joined with "/")."""
    rows = []
    for record_path in sorted(Path(runs_dir).glob("*/run.json")):
        record = json.loads(record_path.read_text())
        row: dict[str, Any] = {"run": record["name"], "status": record["status"], **record["parameters"]}
        results = [p for p in record_path.parent.glob("*.json") if p.name != "run.json"]
        if results:
            row.update(_flatten(json.loads(results[0].read_text()).get("metrics", {})))
            row["status"] = "done" if row["status"] == "skipped" else row["status"]
        rows.append(row)
    return rows


def parameter_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The parameter columns of the rows: notebook parameters are upper-case names (metrics are not)."""
    return [k for k in dict.fromkeys(k for row in rows for k in row) if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)]


def summarize(rows: Sequence[Mapping[str, Any]], metric: str, seed_names: Sequence[str] = SEED_NAMES,
              confidence: float = 0.95) -> list[dict[str, Any]]:
    """Rows grouped by every parameter except the seed: ``n`` runs, ``mean``, ``low``, ``high``
    (bootstrap CI of the mean over seeds; None with one seed) of ``metric``."""
    keys = [k for k in parameter_columns(rows) if k not in seed_names]
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if metric in row:
            groups.setdefault(tuple(_hashable(row.get(k)) for k in keys), []).append(row[metric])
    out = []
    for values_key, values in groups.items():
        low, high = bootstrap_ci(values, confidence) if len(values) > 1 else (None, None)
        out.append({**dict(zip(keys, values_key)), "metric": metric, "n": len(values), "mean": float(np.mean(values)),
                    "low": low, "high": high})
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def to_dataframe(rows: Sequence[Mapping[str, Any]]):
    """The rows as a pandas DataFrame (pandas is optional: ImportError with the fix when missing)."""
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError("to_dataframe needs pandas (`pip install pandas`); the rows are plain dicts otherwise") from err
    return pd.DataFrame(list(rows))


def write_report(runs_dir: str | os.PathLike, metrics: Sequence[str] = ("J&F-Mean",), out_dir: str | os.PathLike | None = None,
                 x: str | None = None) -> dict[str, Path]:
    """Write ``report.csv`` (every run), ``report.md`` (grouped means with CIs, failed runs) and
    ``<metric>.png`` (the metric against parameter ``x``, default: the first parameter with several
    values other than the seed; one line per other-parameter group) into ``out_dir`` (default:
    ``runs_dir``). Returns the paths."""
    rows = collect(runs_dir)
    if not rows:
        raise FileNotFoundError(f"{runs_dir}: no runs (folders with run.json) to report on; run `voslab sweep` first")
    out = Path(out_dir) if out_dir is not None else Path(runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": atomic_write(out / "report.csv", lambda f: f.write(buffer.getvalue()), binary=False)}

    params = [k for k in parameter_columns(rows) if k not in SEED_NAMES]
    lines = ["# Sweep report", "", f"{len(rows)} runs in `{Path(runs_dir).name}`: "
             f"{sum(r['status'] == 'done' for r in rows)} done, {sum(r['status'] == 'failed' for r in rows)} failed.", ""]
    for metric in metrics:
        groups = summarize(rows, metric)
        if not groups:
            lines += [f"No run recorded `{metric}`.", ""]
            continue
        lines += [f"## {metric} (mean over seeds, 95% bootstrap CI)", "",
                  "| " + " | ".join(params) + " | n | mean | 95% CI |", "|" + "---|" * (len(params) + 3)]
        for g in groups:
            ci = "-" if g["low"] is None else f"[{g['low']:.3f}, {g['high']:.3f}]"
            lines.append("| " + " | ".join(str(g.get(p, "")) for p in params) + f" | {g['n']} | {g['mean']:.3f} | {ci} |")
        lines.append("")
        paths[metric] = _plot(groups, metric, params, x, out)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            record = json.loads((Path(runs_dir) / r["run"] / "run.json").read_text())
            lines.append(f"- `{r['run']}`: {record.get('error', 'unknown error')}")
    paths["md"] = atomic_write(out / "report.md", lambda f: f.write("\n".join(lines) + "\n"), binary=False)
    return paths


def _plot(groups: list[dict[str, Any]], metric: str, params: list[str], x: str | None, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    varying = [p for p in params if len({str(g.get(p)) for g in groups}) > 1]
    x = x or (varying[0] if varying else None)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        lines.setdefault(tuple((p, str(g.get(p))) for p in varying if p != x), []).append(g)
    for label, members in lines.items():
        members.sort(key=lambda g: (str(type(g.get(x))), g.get(x)) if x else 0)
        xs = [str(g.get(x)) for g in members] if x else ["all"] * len(members)
        ys = [g["mean"] for g in members]
        err = [[g["mean"] - g["low"] if g["low"] is not None else 0 for g in members],
               [g["high"] - g["mean"] if g["high"] is not None else 0 for g in members]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=", ".join(f"{p}={v}" for p, v in label) or metric)
    ax.set(xlabel=x or "", ylabel=metric, title=f"{metric}: mean over seeds, 95% CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{_slug(metric)}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
