"""Where am I running? Jupyter kernel, papermill run, or plain script (a bottom-layer module).

Both the figures (``voslab.viz``: widgets or static images) and the training loop (progress bar or
log lines) ask this module; the notebook harness (``voslab.notebook.resolve``) tells it what the
``INTERACTIVE`` parameter settled on with :func:`set_interactive`.
"""
from __future__ import annotations

import ast
import os
import sys
from typing import Any, Mapping

__all__ = ["in_jupyter", "is_interactive", "set_interactive", "parse_bool", "injected_parameters",
           "literal_assignments"]

_state: dict[str, bool | None] = {"INTERACTIVE": None}


def _ipython_shell():
    """The running IPython shell, or None (IPython not imported or not running)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (JupyterLab, notebook, papermill, nbval)."""
    return type(_ipython_shell()).__name__ == "ZMQInteractiveShell"


def parse_bool(value: Any) -> bool | None:
    """``True``/``"1"``/``"yes"``/``"true"`` -> True, their opposites -> False, None/"" -> None."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none", "auto"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"INTERACTIVE / $VOSLAB_INTERACTIVE must be a boolean (True/False/1/0), got {value!r}")


def literal_assignments(source: str) -> dict[str, Any]:
    """``NAME = <literal>`` statements of a cell, as a dict (non-literal ones are skipped)."""
    values: dict[str, Any] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return values
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def injected_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Values papermill injected in this kernel session (read from the input history ``In``).

    papermill adds a cell whose source starts with ``# Parameters`` and holds one literal
    assignment per ``-p`` option. The last such cell that ran wins.
    """
    history = namespace.get("_ih") or namespace.get("In") or []
    found: dict[str, Any] = {}
    for source in history:
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            found = literal_assignments(source)
    return found


def set_interactive(value: Any) -> None:
    """Record the notebook's ``INTERACTIVE`` parameter (None = decide by the environment)."""
    _state["INTERACTIVE"] = parse_bool(value)


def is_interactive(value: Any = None) -> bool:
    """Whether to show widgets (sliders, Play buttons) on top of the static figures.

    First of: ``value`` (True/False), the ``INTERACTIVE`` parameter recorded by
    :func:`set_interactive`, ``$VOSLAB_INTERACTIVE`` (1/0/true/false). Otherwise True only in a
    Jupyter kernel that papermill did not parameterise (papermill runs with ``-p`` give False; CI's
    nbval runs set ``VOSLAB_INTERACTIVE=0``; plain scripts and the terminal give False).
    """
    for candidate in (value, _state["INTERACTIVE"], os.environ.get("VOSLAB_INTERACTIVE")):
        decided = parse_bool(candidate)
        if decided is not None:
            return decided
    if not in_jupyter():
        return False
    return not injected_parameters(_ipython_shell().user_ns)
