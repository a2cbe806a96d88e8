"""Atomic writes: another stage never reads a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("helpkit.io")

TEMP_NAME = re.compile(r"^\.(?P<stem>.*)\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")
"""The name of an ``atomic_path`` temporary file: ``.<stem>.<pid>-<8 random>.tmp<suffix>``
(without ``<pid>-`` from helpkit before it named the writer), e.g. ``.checkpoint.4711-k2j9x0qa.tmp.keras``."""

_OPEN_TEMPS: set[Path] = set()
"""Temporary files this process is writing right now: never stale."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix, so writers that pick a format by suffix
    (pandas, numpy, PIL, Keras) still do the right thing, and names the writing process
    (``TEMP_NAME``), so ``remove_stale_temps`` can tell a killed writer's leftovers from a
    live one's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}-", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _OPEN_TEMPS.add(tmp_path)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        _OPEN_TEMPS.discard(tmp_path)
        tmp_path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the ``atomic_path`` temporary files in ``folder`` that no live writer owns; return them.

    A process killed mid-write (kill -9, out of memory, a platform time limit) leaves its
    temporary file behind, a checkpoint- or cache-sized one included. Only helpkit's own
    temporary names (``TEMP_NAME``) directly in ``folder`` are touched, and only those whose
    writer is gone: one named by this process but not being written by it, by a process id
    that no longer runs, or by no process id (older helpkit). Each removal is logged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = TEMP_NAME.match(path.name)
        if match is None or path in _OPEN_TEMPS or not path.is_file():
            continue
        pid = int(match["pid"]) if match["pid"] else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        log.warning("%s: removed a temporary file left by a killed run (%.1f MB)", path, size / 1e6)
        removed.append(path)
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy's too) replaced by None, for valid JSON."""
    if isinstance(obj, float):  # numpy float64 included
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(value) for value in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalars and arrays
        return finite_json(obj.tolist())
    return obj


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON (RFC 8259) of ``obj``: NaN and infinities become null, never ``NaN``/``Infinity``.

    Every ``--json`` of the CLI prints this, and ``write_json`` writes it.
    """
    return json.dumps(finite_json(obj), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (NaN and infinities as null) to ``path`` atomically."""
    write_text(path, json_text(obj, sort_keys=True) + "\n")


IDENTITY_BYTES = 64 * 1024
"""Bytes hashed at each end of a file for its identity (headers and the last tiles/index)."""


def file_identity(path: str | Path) -> str:
    """Size, modification time (ns) and a BLAKE2 digest of the first and last 64 KiB of a file;
    for a folder (a multi-file slide) the same of every file in it, by relative path. A missing
    path has the identity 'missing'."""
    path = Path(path)
    if path.is_dir():
        parts = [f"{p.relative_to(path)}={file_identity(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
    try:
        stat = path.stat()
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            digest.update(f.read(IDENTITY_BYTES))
            if stat.st_size > IDENTITY_BYTES:
                f.seek(max(IDENTITY_BYTES, stat.st_size - IDENTITY_BYTES))
                digest.update(f.read(IDENTITY_BYTES))
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def folder_bytes(folder: Path) -> int:
    """What ``folder`` holds: apparent sizes of its files, symlinks not followed, hard links once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            try:
                info = os.lstat(os.path.join(parent, name))
            except OSError:  # removed while walking
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
