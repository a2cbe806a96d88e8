"""Platform-format predictions (``slide_id,probability``, no header).

Reading is strict because the platform is: a header line, a duplicate id, an unknown or
missing slide, a NaN or an infinity makes a submission fail or score wrongly, so each is
an error that names its line. Values outside [0, 1] and a constant column still score on
the platform, so they are warnings (errors under ``strict``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path

MAX_LISTED = 10
"""How many problems one error message lists before it says '... and N more'."""


@dataclass(frozen=True)
class Predictions:
    """Validated predictions: ``scores`` indexed by slide id (file order), plus warnings."""

    scores: pd.Series
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    extra = len(problems) - MAX_LISTED
    return shown + (f"; ... and {extra} more" if extra > 0 else "")


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_predictions(
    path: str | Path, expected_ids: Iterable[str] | None = None, strict: bool = False
) -> Predictions:
    """Read and validate a platform-format predictions file.

    Every problem is collected and reported in one ``HelpkitError`` naming the file, each
    with its 1-based line number. ``expected_ids`` (e.g. the labelled or test slides), when
    given, makes unknown and missing slides errors too.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HelpkitError(f"cannot read predictions ({err})", path) from err

    expected = None if expected_ids is None else set(map(str, expected_ids))
    errors: list[str] = []
    first_line: dict[str, int] = {}
    ids: list[str] = []
    values: list[float] = []
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not cells:
            errors.append(f"line {line}: empty line")
            continue
        if len(cells) != 2:
            errors.append(f"line {line}: expected 2 columns (slide_id,probability), got {len(cells)}")
            continue
        slide_id, text = cells
        value = _parse_float(text)
        if value is None:
            if line == 1:
                errors.append(f"line 1: header line {','.join(cells)!r}; the platform format has no header")
            else:
                errors.append(f"line {line}: probability {text!r} is not a number")
            continue
        if not slide_id:
            errors.append(f"line {line}: empty slide id")
            continue
        if math.isnan(value) or math.isinf(value):
            errors.append(f"line {line}: probability of {slide_id} is {text} (must be finite)")
        if slide_id in first_line:
            errors.append(f"line {line}: duplicate slide id {slide_id} (first on line {first_line[slide_id]})")
            continue
        if expected is not None and slide_id not in expected:
            errors.append(f"line {line}: slide id {slide_id} is not among the expected slides")
        first_line[slide_id] = line
        ids.append(slide_id)
        values.append(value)
    if not rows:
        errors.append("file is empty")
    if expected is not None:
        missing = sorted(expected - set(first_line))
        if missing:
            errors.append(f"missing {len(missing)} expected slide(s), no row for: {', '.join(missing[:MAX_LISTED])}"
                          + (" ..." if len(missing) > MAX_LISTED else ""))
    if errors:
        raise HelpkitError(f"{len(errors)} problem(s): {_listing(errors)}", path)

    scores = pd.Series(values, index=pd.Index(ids, name="slide_id"), name="probability", dtype=float)
    warnings = _value_warnings(scores, first_line)
    if strict and warnings:
        raise HelpkitError(f"strict: {_listing(warnings)}", path)
    return Predictions(scores=scores, warnings=warnings, path=path)


def _value_warnings(scores: pd.Series, first_line: dict[str, int]) -> list[str]:
    """Problems the platform tolerates: out-of-range values and a constant column."""
    outside = [f"line {first_line[sid]}: {sid} = {value:g}" for sid, value in scores.items() if not 0.0 <= value <= 1.0]
    warnings = [f"{len(outside)} value(s) outside [0, 1]: {_listing(outside)}"] if outside else []
    if len(scores) > 1 and scores.nunique() == 1:
        warnings.append(f"all {len(scores)} probabilities equal {scores.iloc[0]:g}: a constant column scores AUC 0.5")
    return warnings


def write_predictions(path: str | Path, scores: pd.Series) -> None:
    """Write ``scores`` (indexed by slide id) atomically in the platform format, ids quoted
    the CSV way where they need it (``read_predictions`` reads them back).

    helpkit's own outputs are always finite probabilities in [0, 1] with unique ids;
    anything else is a bug upstream, so it raises instead of writing a bad file.
    """
    path = Path(path)
    values = np.asarray(scores, dtype=float)
    ids = [str(i) for i in scores.index]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise HelpkitError(f"refusing to write duplicate slide ids: {', '.join(dupes[:MAX_LISTED])}", path)
    bad = [sid for sid, v in zip(ids, values, strict=True) if not (np.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise HelpkitError(f"refusing to write non-probabilities for: {', '.join(bad[:MAX_LISTED])}", path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        # Minimal quoting: plain ids are written as is; an id with a comma, quote or line
        # break (a file name can hold them) is quoted, so every row keeps two columns.
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerows((sid, repr(float(v))) for sid, v in zip(ids, values, strict=True))

