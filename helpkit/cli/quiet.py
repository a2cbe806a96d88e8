"""Quiet TensorFlow on the host terminal unless ``helpkit -v``.

TensorFlow's start-up lines (``WARNING: All log messages before absl::InitializeLog() ...``,
``I0000 ... oneDNN custom operations are on ...``, ``cpu_feature_guard ... To enable the
following instructions ...``) are written by C++ while ``import tensorflow`` runs, before
absl logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not hide them. ``quiet_host_logs``
sets that variable (for later lines, and for child processes) and wraps the first import of
``tensorflow`` so that, while it runs, file descriptor 2 goes through a filter that drops those
INFO lines and passes everything else (warnings and errors included) to the real stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\]"
    rb"|To enable the following instructions:)"
)
"""Lines TensorFlow prints at import: absl's pre-initialisation notice and INFO (I...) log lines."""


def _copy_filtered(source: int, target: int) -> None:
    """Copy lines from ``source`` to ``target`` until EOF, leaving out ``NOISE``."""
    pending = b""
    with os.fdopen(source, "rb", buffering=0) as reader:
        while True:
            chunk = reader.read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not NOISE.match(line)]
            if kept:
                os.write(target, b"".join(kept))
    if pending and not NOISE.match(pending):
        os.write(target, pending)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """While inside, file descriptor 2 (C++ included) passes through the ``NOISE`` filter."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr: nothing to filter
        yield
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    copier = threading.Thread(target=_copy_filtered, args=(read, saved), daemon=True)
    copier.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the copier drains it and stops
        copier.join(timeout=5)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)


class _QuietTensorflowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and runs its import under ``filtered_stderr``; once."""

    def __init__(self) -> None:
        self.busy = False

    def find_spec(self, fullname: str, path, target=None):  # noqa: ANN001, ANN201
        if fullname != "tensorflow" or self.busy:
            return None
        self.busy = True
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self.busy = False
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_host_logs(verbose: bool = False) -> None:
    """Hide TensorFlow's start-up and INFO lines (and its Python loggers below ERROR) unless ``verbose``."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING after start-up, here and in children
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowImport())
