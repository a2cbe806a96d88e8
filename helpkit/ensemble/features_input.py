"""The features table as the ensemble reads it: validation, models, feature columns.

One row per slide: ``slide_id, split ('train'|'test'), label (1/0, NaN or -1 unknown)``,
then ``<model>__<feature>``, ``<model>__fold`` and ``<model>__failed`` (bookkeeping, never
used as features). A slide whose ``<model>__failed`` is 1 gets NaN for all that model's
features, whatever the table holds, so every learner sees a failure the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError

SEPARATOR = "__"
BOOKKEEPING = ("fold", "failed")
SCORE_FEATURE = "max"
"""The per-model slide score blends and single-model candidates use: the max probability."""


def read_features(path: str | Path) -> pd.DataFrame:
    """Read a features table (.parquet or .csv) and validate it."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"slide_id": str}) if path.suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as err:
        raise HelpkitError(f"cannot read features table ({err})", path) from err
    return validate_features(table, path)


def validate_features(table: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """A checked copy: required columns, unique ids, known splits, labels 0/1/NaN, failures as NaN."""
    missing = [c for c in ("slide_id", "split", "label") if c not in table.columns]
    if missing:
        raise HelpkitError(f"features table lacks column(s) {', '.join(missing)}", source)
    table = table.copy()
    table["slide_id"] = table["slide_id"].astype(str)
    dupes = table.loc[table["slide_id"].duplicated(), "slide_id"].tolist()
    if dupes:
        raise HelpkitError(f"duplicate slide ids in features table: {', '.join(dupes[:10])}", source)
    bad_split = sorted(set(table["split"]) - {"train", "test"})
    if bad_split:
        raise HelpkitError(f"split must be 'train' or 'test', got {bad_split}", source)
    label = pd.to_numeric(table["label"], errors="coerce").replace(-1, np.nan)
    if (label.notna() & ~label.isin([0, 1])).any() or (label.isna() & table["label"].notna() & (table["label"] != -1)).any():
        raise HelpkitError("label must be 1, 0, or NaN/-1 for unknown", source)
    table["label"] = label
    if not models(table):
        raise HelpkitError(f"features table has no '<model>{SEPARATOR}{SCORE_FEATURE}' column", source)
    for model in models(table):
        failed = f"{model}{SEPARATOR}failed"
        if failed in table.columns:
            is_failed = table[failed].fillna(0).astype(bool)
            table.loc[is_failed, _model_columns(table, model)] = np.nan
    return table


def models(table: pd.DataFrame) -> list[str]:
    """Model names, from their ``<model>__max`` columns, in table order."""
    suffix = f"{SEPARATOR}{SCORE_FEATURE}"
    return [c[: -len(suffix)] for c in table.columns if isinstance(c, str) and c.endswith(suffix)]


def _model_columns(table: pd.DataFrame, model: str) -> list[str]:
    prefix = f"{model}{SEPARATOR}"
    return [c for c in feature_columns(table) if c.startswith(prefix)]


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Every ``<model>__<feature>`` column except the bookkeeping ones."""
    return [c for c in table.columns
            if isinstance(c, str) and SEPARATOR in c and c.rsplit(SEPARATOR, 1)[1] not in BOOKKEEPING]


def score_column(model: str) -> str:
    return f"{model}{SEPARATOR}{SCORE_FEATURE}"


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """Training slides with a known label: what every ensemble learns and is scored on."""
    rows = table[(table["split"] == "train") & table["label"].notna()]
    if rows.empty:
        raise HelpkitError("features table has no training slides with a known label")
    return rows


def empty_columns(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns with no finite value on ``rows``: nothing can be learned from them."""
    values = rows[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return [c for c, ok in zip(columns, np.isfinite(values).any(axis=0), strict=True) if not ok]


def frame(table: pd.DataFrame, columns: list[str], source: str | Path | None = None) -> pd.DataFrame:
    """The ``columns`` of ``table`` as floats, named (estimators see which column is which); an
    error naming any that are absent."""
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise HelpkitError(f"features table lacks column(s) {', '.join(absent[:10])}", source)
    return table[columns].apply(pd.to_numeric, errors="coerce").astype(float)


def matrix(table: pd.DataFrame, columns: list[str], source: str | Path | None = None) -> np.ndarray:
    """The ``columns`` of ``table`` as a float matrix (``frame`` without the names)."""
    return frame(table, columns, source).to_numpy(dtype=float)
