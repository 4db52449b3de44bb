"""voslab: learn video object segmentation by building five landmark papers.

LVO, AGNN, AD-Net, AGSS-VOS and FEELVOS, with their training regimes, DAVIS-exact
metrics, data readers and visualisation. See README.md and notebooks/.
"""
from __future__ import annotations

__version__ = "0.1.0"


def require(spec: str) -> None:
    """Raise if the installed voslab does not satisfy ``spec`` (e.g. ``">=0.1"``).

    Notebooks call this first so a learner with a stale install gets a clear message.
    """
    import re

    m = re.fullmatch(r"\s*(>=|==|<=|>|<)?\s*([0-9][0-9.]*)\s*", spec)
    if not m:
        raise ValueError(f"voslab.require: cannot parse version spec {spec!r}; use e.g. '>=0.1'")
    op, want = m.group(1) or ">=", m.group(2)

    def key(v: str) -> tuple[int, ...]:
        parts = [int(p) for p in v.split(".") if p]
        return tuple(parts + [0] * (3 - len(parts)))

    have, need = key(__version__), key(want)
    ok = {">=": have >= need, "==": have == need, "<=": have <= need, ">": have > need, "<": have < need}[op]
    if not ok:
        raise RuntimeError(
            f"this notebook needs voslab {op}{want} but voslab {__version__} is installed; "
            "run `pip install -e .` in the voslab repository to update it"
        )
