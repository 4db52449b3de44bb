"""The library's layers: imports run one way, even through imports inside functions.

    0 base      voslab, errors, utils, jupyter
    1 data      data/*, flow, optim, checkpoints, pretrained, postprocess
    2 nn        nn/*
    3 models    models/*
    4 run       engine, train_state, distributed, inference, metrics, stats, profile
    5 viz       viz
    6 harness   notebook, presets, zoo, exercises
    7 cli       cli, __main__

A module may import modules of its own layer or below, never above, and no two modules may import
each other (directly or round a loop). A new paper file under models/ needs no change here.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "voslab"
LAYERS: list[tuple[str, ...]] = [
    ("voslab", "voslab.errors", "voslab.utils", "voslab.jupyter"),
    ("voslab.data", "voslab.flow", "voslab.optim", "voslab.checkpoints", "voslab.pretrained", "voslab.postprocess"),
    ("voslab.nn",),
    ("voslab.models",),
    ("voslab.engine", "voslab.train_state", "voslab.distributed", "voslab.inference", "voslab.metrics",
     "voslab.stats", "voslab.profile"),
    ("voslab.viz",),
    ("voslab.notebook", "voslab.presets", "voslab.zoo", "voslab.exercises", "voslab.assign",
     "voslab.sweep"),
    ("voslab.cli", "voslab.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> int:
    """The layer of a module: its own entry, else its package's (``voslab.data.davis`` -> data)."""
    for probe in [name] + [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]:
        for index, members in enumerate(LAYERS):
            if probe in members and (probe != "voslab" or name == "voslab"):
                return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """voslab modules that ``path`` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_no_import_points_upward():
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
              for src, targets in import_graph().items() for dst in sorted(targets) if layer(dst) > layer(src)]
    assert not upward, "imports must run data -> nn -> models -> engine -> viz -> harness -> cli:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # a package importing its own submodules (voslab.data -> voslab.data.davis) is how
            # packages work; the reverse edge (submodule -> its package __init__) is the cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_rule_can_fail(tmp_path, monkeypatch):
    """Guard: an engine that imports the figures is caught."""
    graph = import_graph()
    graph["voslab.engine"] = graph["voslab.engine"] | {"voslab.viz"}
    assert any(layer(dst) > layer(src) for src, targets in graph.items() for dst in targets)


IMPORT_IN_LAYER_ORDER = """
import importlib, json, sys
layers, order = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def layer(name):
    for probe in [name] + [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]:
        for i, members in enumerate(layers):
            if probe in members and (probe != "voslab" or name == "voslab"):
                return i
for name in order:
    importlib.import_module(name)
    above = sorted(m for m in sys.modules if m.startswith("voslab") and m in set(order) and layer(m) > layer(name))
    if above:
        sys.exit(f"importing {name} (layer {layer(name)}) loaded {above}")
"""


@pytest.mark.slow
def test_fresh_interpreter_imports_each_layer_without_the_ones_above():
    import json

    order = sorted((n for n in modules() if n != "voslab.__main__"), key=lambda n: (layer(n), n))
    proc = subprocess.run([sys.executable, "-c", IMPORT_IN_LAYER_ORDER, json.dumps(LAYERS), json.dumps(order)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
