"""Your own predictions as the ensemble reads them: any of four formats, one features-shaped table.

``read_inputs(items, labels)`` takes files, each ``PATH`` or ``NAME=PATH``, and returns the
table the ensemble code reads (``slide_id, split, label, <model>__max[, <model>__fold]``):

- **platform format**, one file per model: ``slide_id,probability``, no header (what
  ``output.csv`` holds); the model is ``NAME`` or the file's stem;
- **long format**, one file for all models: header ``slide_id,model,probability``, optional
  ``fold`` and ``label`` columns;
- **per-model with a header**: ``slide_id,probability`` or ``slide_id,label,fold,score`` (what
  ``helpkit ensemble oof`` writes); ``fold`` and ``label`` are optional;
- **a features table** (``.parquet``, or a CSV with a ``split`` column) from ``helpkit features``:
  it must be the only input.

Labels come from ``labels`` (``--labels labels.csv``) when given, else from the files' ``label``
columns, which must agree. Every model must score the same slides. The ``fold`` column is
recorded (``<model>__fold``) but never needed.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.ensemble import features_input as tbl
from helpkit.errors import HelpkitError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
FORMATS = "platform (slide_id,probability; no header), long (slide_id,model,probability[,fold]), " \
          "per-model CSV (slide_id,[label,][fold,]score|probability) or a features table"


def split_item(item: str | Path) -> tuple[str | None, Path]:
    """``NAME=PATH`` or ``PATH`` (a path that exists is taken whole, '=' and all)."""
    text = str(item)
    name, sep, path = text.partition("=")
    if sep and name and not Path(text).exists() and "/" not in name:
        return name, Path(path)
    return None, Path(text)


def _model_name(name: str, path: Path) -> str:
    if not _NAME.match(name) or tbl.SEPARATOR in name:
        raise HelpkitError(f"model name {name!r} must be letters, digits, '.', '_', '+', '-' "
                           f"and not contain {tbl.SEPARATOR!r}; name it with NAME=PATH", path)
    return name


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [cell.strip().lower() for cell in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HelpkitError(f"cannot read predictions ({err})", path) from err


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"slide_id": str, "model": str})
    except (OSError, ValueError) as err:
        raise HelpkitError(f"cannot read predictions ({err})", path) from err
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise HelpkitError(f"row {row + 2}: {column} {frame[column].iloc[row]!r} is not a number", path)
    return values


def _per_model(frame: pd.DataFrame, score: str, path: Path) -> pd.DataFrame:
    """slide_id-indexed ``score``, ``fold``, ``label`` (the last two NaN when absent) of one model's rows."""
    dupes = frame.loc[frame["slide_id"].duplicated(), "slide_id"]
    if len(dupes):
        raise HelpkitError(f"duplicate slide ids: {', '.join(dupes.astype(str)[:10])}", path)
    out = pd.DataFrame({"score": _numeric(frame, score, path).to_numpy()}, index=frame["slide_id"].astype(str))
    for column in ("fold", "label"):
        out[column] = _numeric(frame, column, path).to_numpy() if column in frame.columns else np.nan
    return out


def _read_file(name: str | None, path: Path) -> dict[str, pd.DataFrame]:
    """{model: its rows} from one predictions file of any of the per-model or long formats."""
    header = _header(path)
    if "slide_id" not in header:  # the platform format: no header
        from helpkit.scoring import read_predictions

        scores = read_predictions(path).scores
        model = _model_name(name or path.stem, path)
        return {model: pd.DataFrame({"score": scores.to_numpy(dtype=float), "fold": np.nan, "label": np.nan},
                                    index=scores.index.astype(str))}
    frame = _read_csv(path)
    score = "probability" if "probability" in frame.columns else "score" if "score" in frame.columns else None
    if score is None:
        raise HelpkitError(f"no probability (or score) column; expected one of: {FORMATS}", path)
    unknown = sorted(set(frame.columns) - {"slide_id", "model", "fold", "label", score})
    if unknown:
        raise HelpkitError(f"unexpected column(s) {', '.join(unknown)}; expected one of: {FORMATS}", path)
    if "model" not in frame.columns:
        return {_model_name(name or path.stem, path): _per_model(frame, score, path)}
    if name is not None:
        raise HelpkitError("a long-format file names its models in its model column; give it without NAME=", path)
    if frame["model"].isna().any():
        raise HelpkitError(f"row {int(frame['model'].isna().to_numpy().argmax()) + 2}: empty model", path)
    return {_model_name(model, path): _per_model(rows.reset_index(drop=True), score, path)
            for model, rows in frame.groupby("model", sort=False)}


def _is_features_table(path: Path) -> bool:
    return path.suffix == ".parquet" or (path.suffix == ".csv" and "split" in _header(path))


def read_inputs(items: list[str | Path], labels: pd.Series | None = None, split: str = "train") -> pd.DataFrame:
    """The features-shaped table of ``items`` (see the module docstring); rows get ``split``.

    ``labels`` (slide_id -> 0/1) replace any label column; a slide without one gets NaN.
    """
    if not items:
        raise HelpkitError("no predictions given")
    parsed = [split_item(item) for item in items]
    for _, path in parsed:
        if not path.is_file():
            raise HelpkitError("predictions file not found", path)
    tables = [path for _, path in parsed if _is_features_table(path)]
    if tables:
        if len(parsed) > 1:
            raise HelpkitError("a features table must be the only input (give per-model predictions instead)", tables[0])
        table = tbl.read_features(tables[0])
        if labels is not None:
            table["label"] = labels.reindex(table["slide_id"]).to_numpy(dtype=float)
        return tbl.validate_features(table, tables[0])
    models: dict[str, pd.DataFrame] = {}
    source: dict[str, Path] = {}
    for name, path in parsed:
        for model, rows in _read_file(name, path).items():
            if model in models:
                raise HelpkitError(f"model {model!r} is given twice (also in {source[model].name}); "
                                   "name each file with NAME=PATH", path)
            first = next(iter(models), None)
            if first is not None and set(rows.index) != set(models[first].index):
                diff = sorted(set(rows.index) ^ set(models[first].index))
                raise HelpkitError(f"slides differ from model {first!r}'s: {', '.join(diff[:10])}"
                                   + (f" and {len(diff) - 10} more" if len(diff) > 10 else ""), path)
            models[model], source[model] = rows, path
    ids = list(next(iter(models.values())).index)
    table = pd.DataFrame({"slide_id": ids, "split": split})
    if labels is not None:
        table["label"] = labels.reindex(ids).to_numpy(dtype=float)
    else:
        table["label"] = _file_labels(models, source, ids)
    for model, rows in models.items():
        rows = rows.reindex(ids)
        table[tbl.score_column(model)] = rows["score"].to_numpy()
        if rows["fold"].notna().any():
            table[f"{model}{tbl.SEPARATOR}fold"] = rows["fold"].fillna(-1).astype(int).to_numpy()
    return tbl.validate_features(table, parsed[0][1])


def _file_labels(models: dict[str, pd.DataFrame], source: dict[str, Path], ids: list[str]) -> np.ndarray:
    """Labels from the files' label columns; they must agree where two files give one."""
    label = pd.Series(np.nan, index=ids)
    for model, rows in models.items():
        given = rows["label"].reindex(ids)
        clash = label.notna() & given.notna() & (label != given)
        if clash.any():
            raise HelpkitError(f"labels disagree with another file for {', '.join(label.index[clash][:10])}",
                               source[model])
        label = label.fillna(given)
    return label.to_numpy(dtype=float)
