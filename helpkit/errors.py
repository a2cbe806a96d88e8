"""Errors that the CLI turns into one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class HelpkitError(Exception):
    """A user-facing error: bad input, bad configuration, a missing dependency.

    ``path`` names the file at fault when there is one; the message says what is wrong.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
