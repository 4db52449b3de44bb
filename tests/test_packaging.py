"""Packaging and CI hygiene: stripped notebooks, environment.yml vs pyproject, README vs .ci/run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def nbstripout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbstripout", *args], capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- notebooks are stripped
def test_notebooks_have_no_outputs():
    assert NOTEBOOKS, "no notebooks under notebooks/"
    result = nbstripout("--verify", *map(str, NOTEBOOKS))
    assert result.returncode == 0, (
        "these notebooks carry outputs or execution metadata; strip them with "
        f"`.venv/bin/nbstripout notebooks/*.ipynb`:\n{result.stdout}{result.stderr}"
    )


def test_nbstripout_verify_catches_outputs(tmp_path: Path):
    """The check above can fail: a notebook with an output and an execution count is caught."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells = [cell]
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    result = nbstripout("--verify", str(dirty))
    assert result.returncode != 0 and "dirty.ipynb" in result.stdout


def test_notebooks_are_valid_and_use_the_python3_kernel():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


def test_gitattributes_sets_the_nbstripout_filter():
    text = (REPO / ".gitattributes").read_text()
    assert re.search(r"^\*\.ipynb\s+filter=nbstripout\b", text, re.M)


# --------------------------------------------------------------------------- environment.yml
def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = pyproject()["project"]
    deps = env["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"], pythons
    minimum = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups())
    assert (3, 11) >= minimum
    assert "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip[0] == "-c requirements/constraints.txt"
    extras = re.fullmatch(r"-e \.\[([\w,]+)\]", pip[1])
    assert extras, f"environment.yml must install voslab with `-e .[extras]`, found {pip[1]!r}"
    assert set(extras.group(1).split(",")) == {"dev", "notebooks"}
    assert set(extras.group(1).split(",")) <= set(project["optional-dependencies"])
    assert len(pip) == 2, "list dependencies in pyproject.toml, not in environment.yml"


def test_constraints_pin_the_cpu_torch_and_no_torchvision():
    constraints = (REPO / "requirements" / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+\s*$", constraints, re.M)
    deps = pyproject()["project"]["dependencies"]
    extras = pyproject()["project"]["optional-dependencies"]
    for name in ("dependencies", "dev", "notebooks"):
        listed = deps if name == "dependencies" else extras[name]
        assert not any(d.lower().startswith("torchvision") for d in listed), f"torchvision in {name}"


def test_dev_extra_has_the_test_tools_and_pytest_runs_notebooks():
    dev = " ".join(pyproject()["project"]["optional-dependencies"]["dev"])
    for tool in ("pytest", "nbval", "papermill", "nbstripout", "nbformat", "pyyaml"):
        assert tool in dev, f"dev extra lacks {tool}"
    ini = pyproject()["tool"]["pytest"]["ini_options"]
    assert "notebooks" in ini["testpaths"] and "tests" in ini["testpaths"]
    for flag in ("--nbval-lax", "--nbval-current-env"):
        assert flag in ini["addopts"]


# --------------------------------------------------------------------------- README vs CI
def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md's Quick start needs a ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quick_start_is_two_commands_that_ci_runs():
    commands = quick_start_commands()
    assert len(commands) == 2, f"the quick start must be exactly two commands, found {commands}"
    setup, test = commands
    assert "venv" in setup and "-c requirements/constraints.txt" in setup and "pytest" in test
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert setup in ci_lines, f".ci/run must run README's set-up command verbatim: {setup}"
    assert test in ci_lines, f".ci/run must run README's test command verbatim: {test}"
    assert ci_lines.index(setup) < ci_lines.index(test)
    assert "set -euo pipefail" in ci_lines


def test_readme_lists_every_notebook():
    readme = (REPO / "README.md").read_text() + (REPO / "notebooks" / "README.md").read_text()
    for path in NOTEBOOKS:
        prefix = "_".join(path.stem.split("_")[:2])  # e.g. "03_adnet"
        assert prefix in readme, f"README.md / notebooks/README.md do not mention {path.name}"
