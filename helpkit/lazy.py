"""Lazy package exports (PEP 562): a package's names import their module on first use, so
importing a light submodule does not pull in the heavy ones beside it."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each name to ``"module"`` (the
    same name inside it) or ``"module:attr"``; any other name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        try:
            module, _, attr = exports[name].partition(":")
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(import_module(f"{package}.{module}"), attr or name)

    return __getattr__
