"""The wheelhouse: helpkit's own wheel plus every dependency, so ``docker build`` needs no network.

Dependencies are downloaded once into a cache under ``build/`` and resolved offline against
it afterwards, so a warm rebuild touches no index. Wheels are chosen for the image, not for
this machine: CPython 3.11 on x86_64 glibc up to Debian bookworm's 2.36. We drive pip as a
subprocess because pip has no Python API; its ``--report`` names the exact files chosen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from helpkit.errors import HelpkitError

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / "build" / "wheelhouse-cache"
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
"""Newest manylinux glibc the images accept (bookworm); older ones are accepted too."""

TARGET_FLAGS = [
    "--only-binary=:all:",
    "--implementation=cp",
    f"--python-version={PYTHON_VERSION}",
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)),
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
]


REPRODUCIBLE_ENV = {"SOURCE_DATE_EPOCH": "315532800"}
"""Fixed zip timestamps: the same code gives the same wheel, so Docker's layer cache holds."""


def _pip(args: list[str], what: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    """Run pip of this interpreter; a failure raises HelpkitError with pip's last lines."""
    cmd = [sys.executable, "-m", "pip", *args]
    env = {**os.environ, **REPRODUCIBLE_ENV}
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-6:] if not line.startswith("WARNING"))
        raise HelpkitError(f"{what} failed: {tail}")
    return proc


PACKAGE_SOURCES = ("pyproject.toml", "README.md", "helpkit")
"""What building the wheel reads; copied out so builds never share setuptools' in-tree build/."""


def build_helpkit_wheel(out_dir: Path) -> Path:
    """Build the helpkit wheel from this repository's sources into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("helpkit-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="helpkit-wheel-") as tmp:
        for name in PACKAGE_SOURCES:
            src, dest = REPO_ROOT / name, Path(tmp) / name
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dest)
        args = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir.resolve()), tmp]
        _pip(args, "building the helpkit wheel")
    (wheel,) = out_dir.glob("helpkit-*.whl")
    return wheel


def _resolve_offline(wheel: Path, cache: Path) -> list[Path] | None:
    """The files pip would install for ``wheel`` from ``cache`` alone, or None if any is missing."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--no-index", f"--find-links={cache}", *TARGET_FLAGS]
        try:
            _pip([*args, "-q", f"--report={report}", str(wheel)], "offline resolution")
        except HelpkitError:
            return None
        installs = json.loads(report.read_text())["install"]
    return [Path(unquote(urlparse(item["download_info"]["url"]).path)) for item in installs]


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (no copy of a 300 MB wheel), copying across filesystems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def vendor(dest: Path, cache: Path = CACHE_DIR) -> list[Path]:
    """Fill ``dest/helpkit`` with helpkit's wheel and ``dest/deps`` with its dependencies.

    Two folders so the image installs the dependencies in a layer that a change to helpkit's
    code does not invalidate. Downloads only what ``cache`` lacks (pip shows its progress),
    then resolves offline. Returns the files placed.
    """
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "deps").mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = build_helpkit_wheel(dest / "helpkit")
    files = _resolve_offline(wheel, cache)
    if files is None:
        print(f"downloading dependencies into {cache} (once; later builds reuse it)", file=sys.stderr)
        _pip(["download", f"--dest={cache}", *TARGET_FLAGS, str(wheel)], "downloading the wheelhouse", quiet=False)
        for stale in cache.glob("helpkit-*.whl"):
            stale.unlink()
        files = _resolve_offline(wheel, cache)
        if files is None:
            raise HelpkitError("the downloaded wheelhouse does not resolve offline", cache)
    placed = [wheel]
    for src in files:
        if src != wheel:
            _link_or_copy(src, dest / "deps" / src.name)
            placed.append(dest / "deps" / src.name)
    return placed
