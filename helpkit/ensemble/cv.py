"""Repeated stratified K-fold on slides: out-of-fold scores for any estimator.

Rows are slides, so every split is by slide. An estimator that tunes itself inside
``fit`` (``BlendClassifier(method="tuned")`` chooses its weight method by an inner CV)
sees only the outer training folds here, so ``cross_val_oof`` of it is nested
cross-validation: the tuning never touches the slides it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.utils import _safe_indexing

from helpkit.errors import HelpkitError
from helpkit.scoring.metrics import auc, check_binary


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold scores (repeats, slides), their per-slide mean, and AUCs per repeat and fold."""

    oof: np.ndarray
    labels: np.ndarray
    n_splits: int
    fold_aucs: list[dict[str, float]] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        """Each slide's out-of-fold score averaged over the repeats."""
        return self.oof.mean(axis=0)

    @property
    def repeat_aucs(self) -> np.ndarray:
        return np.array([auc(self.labels, row) for row in self.oof])

    @property
    def auc(self) -> float:
        """AUC of the repeat-averaged out-of-fold scores."""
        return auc(self.labels, self.scores)

    def as_dict(self) -> dict[str, object]:
        return {"auc": self.auc, "repeat_aucs": self.repeat_aucs.tolist(), "n_splits": self.n_splits,
                "n_repeats": len(self.oof), "fold_aucs": self.fold_aucs}


def n_splits_for(labels: np.ndarray, n_splits: int) -> int:
    """``n_splits`` capped by the smaller class's size; an error when it cannot be 2."""
    y = check_binary(labels)
    smaller = int(min(y.sum(), (~y).sum()))
    if smaller < 2:
        raise HelpkitError(f"cross-validation needs at least 2 slides of each class, got {smaller} in the smaller class")
    return min(n_splits, smaller)


def cross_val_oof(estimator, X: np.ndarray | pd.DataFrame, y: np.ndarray, n_splits: int = 5, n_repeats: int = 3,
                  seed: int = 0) -> CVResult:
    """Fit a clone of ``estimator`` on each training fold; score the held-out slides (X: array or named frame)."""
    y = np.asarray(y)
    k = n_splits_for(y, n_splits)
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed)
    oof = np.full((n_repeats, len(y)), np.nan)
    fold_aucs = []
    for i, (train, test) in enumerate(splitter.split(X, y)):
        repeat, fold = divmod(i, k)
        model = clone(estimator).fit(_safe_indexing(X, train), y[train])
        oof[repeat, test] = model.predict_proba(_safe_indexing(X, test))[:, 1]
        held = y[test]
        fold_auc = auc(held, oof[repeat, test]) if 0 < held.sum() < len(held) else float("nan")
        fold_aucs.append({"repeat": repeat, "fold": fold, "auc": fold_auc, "n": len(test)})
    return CVResult(oof=oof, labels=y, n_splits=k, fold_aucs=fold_aucs)


def apparent_auc(estimator, X: np.ndarray | pd.DataFrame, y: np.ndarray) -> float:
    """Fit on all slides and score on the same slides: the optimistic, non-nested number."""
    model = clone(estimator).fit(X, y)
    return auc(y, model.predict_proba(X)[:, 1])
