"""Static checks of a build context: what would break or leak on the platform, found before any build.

The files checked are the ones Docker would send (``.dockerignore`` applied, through the
Docker SDK's own matcher so the two never disagree).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from helpkit.errors import HelpkitError

ENTRY_POINTS = ("train.sh", "inference.sh")
MAX_CONTEXT_BYTES = 4 * 2**30
"""A context above this is refused: the platform's upload and the engine both choke on it."""
WARN_CONTEXT_BYTES = 2 * 2**30
"""A context above this is reported: every build sends it all to the engine."""

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".mrxs", ".ndpi", ".scn", ".bif", ".dcm", ".vms", ".vmu", ".svslide"}
DATA_SUFFIXES = {".npz", ".npy", ".parquet", ".h5", ".hdf5"} | SLIDE_SUFFIXES
"""Data and heatmaps never ship in an image unless submission.toml declares them in ``ship``
(weights as .h5, .npy, .npz); .keras models are allowed anywhere."""
SECRET_NAMES = {".env", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", ".pypirc", "credentials", ".git-credentials"}
SECRET_SUFFIXES = {".pem", ".key", ".p12", ".pfx"}
CACHE_NAMES = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".mypy_cache", ".git", ".DS_Store"}
TEXT_SUFFIXES = {".sh", ".py", ".toml", ".cfg", ".ini", ".txt", ".json", ".yaml", ".yml", ""}
HOST_PATH = re.compile(r"(?<![\w.])(/home/|/Users/|/root/|/mnt/|/media/|/work/|/scratch/|/var/folders/|[A-Za-z]:\\\\)[^\s'\"]*")
"""Absolute paths of someone's machine: they never exist in the platform's container."""


@dataclass(frozen=True)
class Finding:
    """One problem in a build context; errors fail validation, warnings are reported."""

    level: Literal["error", "warning"]
    check: str
    message: str
    path: str = ""


@dataclass
class StaticReport:
    """Every finding of ``check_context`` plus the size Docker would send."""

    context: str
    size_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings that fail a submission."""
        return [f for f in self.findings if f.level == "error"]

    def add(self, level: Literal["error", "warning"], check: str, message: str, path: str = "") -> None:
        """Record a finding."""
        self.findings.append(Finding(level, check, message, path))

    def raise_errors(self) -> None:
        """Raise the first error as a HelpkitError naming its file."""
        if self.errors:
            first = self.errors[0]
            raise HelpkitError(f"{first.check}: {first.message}", Path(self.context) / first.path)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"context": self.context, "size_bytes": self.size_bytes, "findings": [asdict(f) for f in self.findings]}


def sent_files(context: Path) -> list[str]:
    """Relative paths of the files ``docker build`` would send, ``.dockerignore`` applied."""
    from docker.utils.build import exclude_paths

    ignore = context / ".dockerignore"
    patterns = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.strip().startswith("#")]
    return sorted(p for p in exclude_paths(str(context), patterns) if (context / p).is_file())


def _check_entry_points(context: Path, report: StaticReport) -> None:
    for name in ENTRY_POINTS:
        path = context / name
        if not path.is_file():
            report.add("error", "entry point", f"{name} is missing (the platform runs ./{name} in the working directory)", name)
            continue
        if not os.access(path, os.X_OK):
            report.add("error", "entry point", f"{name} is not executable (chmod +x)", name)
        if not path.read_bytes().startswith(b"#!"):
            report.add("error", "entry point", f"{name} has no #! line, so it cannot be executed directly", name)


def _declared(rel: str, ship: list[str]) -> bool:
    """Whether ``rel`` is a file ``ship`` names or lies in a folder it names."""
    return any(rel == item or rel.startswith(item + "/") for item in (s.strip("/") for s in ship))


def _check_file(context: Path, rel: str, report: StaticReport, ship: list[str] = []) -> None:  # noqa: B006
    path = context / rel
    parts = Path(rel).parts
    suffix = path.suffix.lower()
    if any(part in CACHE_NAMES for part in parts) or suffix == ".pyc":
        report.add("error", "cache", "caches and version-control folders must not be baked into the image", rel)
    elif path.name in SECRET_NAMES or suffix in SECRET_SUFFIXES:
        report.add("error", "secret", "looks like a secret (key, token or credentials file)", rel)
    elif suffix in DATA_SUFFIXES and not _declared(rel, ship):
        report.add("error", "data", f"{suffix} files are data or derived data; the platform mounts data at /data "
                   "(declare shipped weights in submission.toml: ship = [...])", rel)
    elif suffix in DATA_SUFFIXES:
        pass  # declared in ship: weights, whatever the extension
    elif suffix in TEXT_SUFFIXES and rel != "Dockerfile":  # its /root/... paths are the image's own
        text = path.read_text(encoding="utf-8", errors="replace")
        match = HOST_PATH.search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            report.add("error", "host path", f"line {line} uses the absolute host path {match[0]!r}, absent in the container", rel)


def check_context(
    context: str | Path, max_bytes: int = MAX_CONTEXT_BYTES, warn_bytes: int = WARN_CONTEXT_BYTES
) -> StaticReport:
    """Check a build context without Docker: entry points, config, baked-in data/secrets/caches, host paths, size."""
    from helpkit.config import load_submission

    context = Path(context)
    report = StaticReport(str(context))
    if not (context / "Dockerfile").is_file():
        report.add("error", "dockerfile", "no Dockerfile in the build context", "Dockerfile")
        return report
    _check_entry_points(context, report)
    ship: list[str] = []
    try:
        ship = load_submission(context / "submission.toml").ship
    except HelpkitError as err:
        report.add("error", "config", err.message, "submission.toml")
    for rel in sent_files(context):
        _check_file(context, rel, report, ship)
        report.size_bytes += (context / rel).stat().st_size
    size = f"context is {report.size_bytes / 2**20:.0f} MiB"
    if report.size_bytes > max_bytes:
        report.add("error", "size", f"{size}, above the limit of {max_bytes / 2**20:.0f} MiB")
    elif report.size_bytes > warn_bytes:
        report.add("warning", "size", f"{size}, above {warn_bytes / 2**20:.0f} MiB: slow to send and upload")
    return report
