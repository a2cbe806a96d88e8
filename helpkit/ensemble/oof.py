"""Out-of-fold scores CSVs (header ``slide_id,label,fold,score``; ``fold`` optional): one per model.

``write_model_oof`` splits a features table into these files (score = ``<model>__max``,
training slides only: test slides have no out-of-fold score);
``helpkit.ensemble.inputs.read_inputs`` reads them back (one of the formats it takes).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpkit.ensemble import features_input as tbl
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
