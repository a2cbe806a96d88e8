"""Slide ensembles fitted on the features table, saved to and loaded from a folder.

``fit_ensemble(features, method, out_dir)`` learns on the training slides with known
labels, cross-validates the same recipe for honest fold scores, and writes:
``ensemble.json`` (method, estimator, feature columns, dropped columns), the estimator's
own files (``blend.json``; or ``stacker.json``, plus LightGBM's ``model.txt`` for lgbm)
and ``fold_scores.json``. ``load_ensemble(out_dir).predict_proba(features)`` then scores
any slides, one at a time in effect: nothing depends on the other rows.

NaN handling at prediction: failed slides' features are NaN (see ``table``); blends use the
models a slide has and give 0.5 when it has none, LightGBM follows its learned missing-value
branches, the logistic stacker imputes the training median. Columns that were all NaN on
the training slides are dropped at fit time (listed in ``ensemble.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpkit.defaults import FALLBACK_PROBABILITY
from helpkit.ensemble import methods
from helpkit.ensemble import features_input as tbl
from helpkit.ensemble.cv import cross_val_oof
from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.scoring.metrics import auc, auc_ci, check_binary

METHODS = methods.NAMES
ESTIMATORS = {cls.__name__: cls for cls in {m.estimator_class() for m in methods.REGISTRY.values()}}
"""Estimator classes by the name ``ensemble.json`` records, from the registry."""
SCHEMA_VERSION = 1


def best_single_model(features: pd.DataFrame) -> str:
    """The model whose max-probability column has the highest AUC on the labelled slides."""
    rows = tbl.labelled(features)
    y = rows["label"].to_numpy(dtype=int)

    def score(model: str) -> float:
        values = tbl.matrix(rows, [tbl.score_column(model)])[:, 0]
        return auc(y, np.where(np.isfinite(values), values, FALLBACK_PROBABILITY))

    usable = [m for m in tbl.models(features) if not tbl.empty_columns(rows, [tbl.score_column(m)])]
    if not usable:
        raise HelpkitError("no model has a max-probability score on the labelled slides")
    return max(usable, key=score)


def candidate(features: pd.DataFrame, method: str, **params: Any) -> tuple[list[str], list[str], Any]:
    """(columns, dropped all-NaN columns, unfitted estimator) for one registered ensemble ``method``."""
    rows = tbl.labelled(features)
    columns, estimator = _recipe(features, method, dict(params))
    dropped = tbl.empty_columns(rows, columns)
    kept = [c for c in columns if c not in dropped]
    if not kept:
        raise HelpkitError(f"every column for {method!r} is NaN on the labelled slides: {', '.join(dropped)}")
    return kept, dropped, estimator


def _recipe(features: pd.DataFrame, method: str, params: dict[str, Any]) -> tuple[list[str], Any]:
    """The columns a method reads (by its registry entry) and its unfitted estimator."""
    spec = methods.get(method)
    estimator = methods.build(method, params)  # a bad parameter is a one-line HelpkitError naming it
    if spec.columns == "one":
        model = params.get("model") or best_single_model(features)
        if model not in tbl.models(features):
            raise HelpkitError(f"no model {model!r} in the features table (have {', '.join(tbl.models(features))})")
        return [tbl.score_column(model)], estimator
    if spec.columns == "scores":
        return [tbl.score_column(m) for m in tbl.models(features)], estimator
    return tbl.feature_columns(features), estimator


@dataclass
class SlideEnsemble:
    """A fitted ensemble: which columns it reads and the estimator that scores them."""

    method: str
    columns: list[str]
    estimator: Any
    dropped: list[str] = field(default_factory=list)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Probability of metastasis for every row of ``features``, in [0, 1], NaN-robust."""
        table = tbl.validate_features(features)
        p = self.estimator.predict_proba(tbl.frame(table, self.columns))[:, 1]
        return np.clip(np.where(np.isfinite(p), p, FALLBACK_PROBABILITY), 0.0, 1.0)


def fit_ensemble(features: pd.DataFrame, method: str, out_dir: str | Path, cv_splits: int = 5,
                 cv_repeats: int = 3, seed: int = 0, **params: Any) -> SlideEnsemble:
    """Fit a registered ``method`` (``helpkit.ensemble.methods``) on the labelled training slides; save it.

    ``params`` are the method's registered parameters (``model=`` for single), checked first. The same recipe is cross-validated first
    (``cv_repeats`` x stratified ``cv_splits``-fold) for ``fold_scores.json``; with fewer
    than 2 slides of a class it is skipped (the file says why) and the fit goes ahead.
    """
    features = tbl.validate_features(features)
    columns, dropped, estimator = candidate(features, method, **params)
    rows = tbl.labelled(features)
    X, y = tbl.frame(rows, columns), rows["label"].to_numpy(dtype=int)
    check_binary(y)
    try:
        cv = cross_val_oof(estimator, X, y, n_splits=cv_splits, n_repeats=cv_repeats, seed=seed)
        fold_scores = {**cv.as_dict(), "auc_ci": auc_ci(y, cv.scores).as_dict()}
    except HelpkitError as err:  # too few slides of a class to cross-validate: still fit, say why
        fold_scores = {"skipped": str(err)}
    estimator.fit(X, y)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    estimator.save(out_dir)
    write_json(out_dir / "fold_scores.json", fold_scores)
    write_json(out_dir / "ensemble.json", {
        "schema_version": SCHEMA_VERSION, "method": method, "estimator": type(estimator).__name__,
        "columns": columns, "dropped_columns": dropped, "n_train": len(y), "n_positive": int(y.sum())})
    return SlideEnsemble(method, columns, estimator, dropped)


def load_ensemble(out_dir: str | Path) -> SlideEnsemble:
    """Load what ``fit_ensemble`` saved in ``out_dir``."""
    path = Path(out_dir) / "ensemble.json"
    try:
        meta = json.loads(path.read_text())
        estimator = ESTIMATORS[meta["estimator"]].load(out_dir)
    except (OSError, ValueError, KeyError) as err:
        raise HelpkitError(f"not a saved ensemble ({err})", path) from err
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise HelpkitError(f"ensemble schema_version {meta.get('schema_version')} != {SCHEMA_VERSION}", path)
    return SlideEnsemble(meta["method"], meta["columns"], estimator, meta["dropped_columns"])
