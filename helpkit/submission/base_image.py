"""``helpkit/base:bookworm``: a Debian base image made locally, for machines without a registry.

debootstrap writes a minimal bookworm root filesystem (its python3 is 3.11, like the
wheels the wheelhouse downloads), which ``docker import`` turns into an image. We shell out
to debootstrap and tar because no Python library builds a Debian root filesystem.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from helpkit.errors import HelpkitError
from helpkit.submission.docker_engine import client

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1")
"""python3-venv brings ensurepip (pip inside the image); LightGBM's wheel links libgomp."""

IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
"""Folders emptied before import: package caches and docs the image never reads."""


def _run(cmd: list[str], what: str) -> None:
    """Run ``cmd``, its output streamed to stderr; a failure names ``what`` and the log tail."""
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  {what}: {line.rstrip()}", file=sys.stderr)
            tail = (tail + [line.rstrip()])[-10:]
    if proc.returncode != 0:
        raise HelpkitError(f"{what} failed with exit code {proc.returncode}: " + " | ".join(tail))


def build_base_image(tag: str = "helpkit/base:bookworm", mirror: str | None = None) -> str:
    """Build ``tag`` with debootstrap + docker import; return the image id."""
    if shutil.which("debootstrap") is None:
        raise HelpkitError("debootstrap is not installed (apt-get install -y debootstrap, see docs/docker.md)")
    engine = client()
    repository, _, version = tag.partition(":")
    with tempfile.TemporaryDirectory(prefix="helpkit-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs)]
        _run(cmd + ([mirror] if mirror else []), "debootstrap")
        for sub in TRIM:
            shutil.rmtree(rootfs / sub, ignore_errors=True)
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], "tar")
        print(f"importing {tarball.stat().st_size / 2**20:.0f} MiB as {tag}", file=sys.stderr)
        engine.api.import_image_from_file(
            str(tarball), repository=repository, tag=version or "latest", changes=list(IMAGE_CHANGES)
        )
    image = engine.images.get(tag)
    return str(image.id)
