"""Out-of-fold scores CSVs (header ``slide_id,label,fold,score``): one per model.

``write_model_oof`` splits a features table into these files (score = ``<model>__max``,
training slides only: test slides have no out-of-fold score); ``read_oof`` joins several
back into a score matrix for weight tuning, checking that they cover the same slides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.ensemble import table as tbl
from helpkit.errors import HelpkitError
from helpkit.io import atomic_path

COLUMNS = ["slide_id", "label", "fold", "score"]


def write_model_oof(features: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``<model>.csv`` per model into ``out_dir``; return the paths."""
    features = tbl.validate_features(features)
    train = features[features["split"] == "train"]
    paths = []
    for model in tbl.models(features):
        fold_col = f"{model}{tbl.SEPARATOR}fold"
        folds = train[fold_col] if fold_col in train.columns else pd.Series(-1, index=train.index)
        frame = pd.DataFrame({"slide_id": train["slide_id"], "label": train["label"].astype("Int64"),
                              "fold": folds.astype("Int64"), "score": train[tbl.score_column(model)]})
        path = Path(out_dir) / f"{model}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        paths.append(path)
    return paths


def read_oof(paths: list[Path], labels: pd.Series | None = None) -> pd.DataFrame:
    """A features-shaped table (``slide_id, split, label, <stem>__max``) from OOF CSVs.

    Labels come from ``labels`` when given (slides without one are dropped), else from
    the files, which must then agree. Every file must hold the same slides.
    """
    merged: pd.DataFrame | None = None
    for path in map(Path, paths):
        try:
            frame = pd.read_csv(path, dtype={"slide_id": str})
        except (OSError, ValueError) as err:
            raise HelpkitError(f"cannot read out-of-fold scores ({err})", path) from err
        if list(frame.columns) != COLUMNS:
            raise HelpkitError(f"expected header {','.join(COLUMNS)}, got {','.join(map(str, frame.columns))}", path)
        if frame["slide_id"].duplicated().any():
            raise HelpkitError(f"duplicate slide ids: {', '.join(frame.loc[frame['slide_id'].duplicated(), 'slide_id'][:10])}", path)
        frame = frame.set_index("slide_id")
        column = tbl.score_column(path.stem)
        if merged is None:
            merged = frame[["label"]].assign(**{column: frame["score"]})
            continue
        if column in merged.columns:
            raise HelpkitError(f"two files for model {path.stem!r}", path)
        if set(frame.index) != set(merged.index):
            diff = sorted(set(frame.index) ^ set(merged.index))
            raise HelpkitError(f"slides differ from {Path(paths[0]).name}: {', '.join(diff[:10])}", path)
        disagree = frame["label"].reindex(merged.index).fillna(-1) != merged["label"].fillna(-1)
        if labels is None and disagree.any():
            raise HelpkitError(f"labels disagree with {Path(paths[0]).name} for {', '.join(merged.index[disagree][:10])}", path)
        merged[column] = frame["score"].reindex(merged.index)
    if merged is None:
        raise HelpkitError("no out-of-fold score files given")
    if labels is not None:
        merged["label"] = labels.reindex(merged.index).astype(float)
    merged = merged.reset_index().assign(split="train")
    merged["label"] = merged["label"].where(merged["label"].isin([0, 1]), np.nan)
    return tbl.validate_features(merged)
