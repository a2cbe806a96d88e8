"""Blends of per-model slide scores: normalise, then a weighted mean with learned weights.

Normalisation is fitted on the training slides only and then applied to any slide on its
own, so a test slide's blended score never depends on the other test slides:
- ``rank``: the training scores' empirical CDF (mid-rank convention), in [0, 1];
- ``zscore``: (score - train mean) / train std;
- ``logit``: logit of the probability (clipped to [1e-6, 1 - 1e-6]), then z-scored the same way;
- ``none``: the raw score (used for a single model's probability).

The blend is the weighted mean of the normalised scores a slide has; a NaN score (a model
that failed on that slide) is left out and the other weights renormalised. Rank and none
blends are then in [0, 1]; zscore and logit blends go through a sigmoid. A slide with no
score from any selected model gets 0.5 (``helpkit.defaults.FALLBACK_PROBABILITY``). Outputs
rank slides; they are not calibrated probabilities.

Weights come from ``method``:
- ``mean``: equal weights;
- ``greedy``: Caruana et al. (2004) ensemble selection with replacement, starting from the
  best single model and keeping the best ensemble seen along the path;
- ``optimise``: direct maximisation of a smoothed AUC (sigmoid of pairwise differences,
  Yan et al. 2003) over softmax-parametrised simplex weights, kept only if its exact AUC
  beats equal weights;
- ``tuned``: picks one of the three by inner stratified CV on the training slides, then
  refits it on all of them; evaluated by an outer CV this is nested cross-validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from helpkit.defaults import FALLBACK_PROBABILITY
from helpkit.io import write_json
from helpkit.scoring.metrics import auc

NORMALISATIONS = ("rank", "zscore", "logit", "none")
WEIGHT_METHODS = ("mean", "greedy", "optimise", "tuned")
"""How a blend's weights are chosen (``BlendClassifier(method=...)``); the ensemble methods are in ``methods``."""
_EPS = 1e-6


def _center_scale(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    std = float(finite.std())
    return float(finite.mean()), std if std > 0 else 1.0


class Normaliser:
    """Per-column normalisation fitted on training scores; see the module docstring."""

    def __init__(self, method: str = "rank") -> None:
        if method not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {method!r}")
        self.method = method
        self.state: list[Any] = []

    def fit(self, X: np.ndarray) -> Normaliser:
        X = np.asarray(X, dtype=float)
        if self.method == "rank":
            self.state = [np.sort(col[np.isfinite(col)]).tolist() for col in X.T]
        elif self.method == "zscore":
            self.state = [_center_scale(col) for col in X.T]
        elif self.method == "logit":
            self.state = [_center_scale(self._logit(col)) for col in X.T]
        else:
            self.state = [None] * X.shape[1]
        return self

    @staticmethod
    def _logit(values: np.ndarray) -> np.ndarray:
        return special.logit(np.clip(values, _EPS, 1 - _EPS))

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        out = np.empty_like(X)
        for j, state in enumerate(self.state):
            col = X[:, j]
            if self.method == "rank":
                ref = np.asarray(state, dtype=float)
                if ref.size == 0:
                    out[:, j] = np.nan
                    continue
                below = np.searchsorted(ref, col, side="left")
                upto = np.searchsorted(ref, col, side="right")
                out[:, j] = (below + upto) / (2.0 * ref.size)
            elif self.method == "none":
                out[:, j] = col
            else:
                values = self._logit(col) if self.method == "logit" else col
                out[:, j] = (values - state[0]) / state[1]
            out[~np.isfinite(col), j] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "state": self.state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        norm = cls(data["method"])
        norm.state = data["state"]
        return norm


def combine(Z: np.ndarray, weights: np.ndarray, normalisation: str) -> np.ndarray:
    """Weighted mean over the non-NaN normalised scores of each row, mapped to [0, 1]."""
    present = np.isfinite(Z)
    w = np.where(present, weights[None, :], 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = np.where(present, Z, 0.0) @ weights / total
    if normalisation in ("zscore", "logit"):
        blended = special.expit(blended)
    return np.where(total > 0, np.clip(blended, 0.0, 1.0), FALLBACK_PROBABILITY)


def greedy_weights(Z: np.ndarray, y: np.ndarray, normalisation: str, n_rounds: int) -> np.ndarray:
    """Caruana ensemble selection with replacement; weights are selection counts / total."""
    k = Z.shape[1]
    counts = np.zeros(k)
    best_counts, best_auc = counts, -np.inf
    for _ in range(n_rounds):
        trials = [auc(y, combine(Z, counts + np.eye(k)[j], normalisation)) for j in range(k)]
        j = int(np.argmax(trials))
        counts = counts + np.eye(k)[j]
        if trials[j] > best_auc + 1e-12:
            best_counts, best_auc = counts, trials[j]
    return best_counts / best_counts.sum()


def optimised_weights(Z: np.ndarray, y: np.ndarray, normalisation: str) -> np.ndarray:
    """Maximise a sigmoid-smoothed AUC over simplex weights; fall back to equal weights."""
    k = Z.shape[1]
    equal = np.full(k, 1.0 / k)
    if k == 1:
        return equal
    filled = np.where(np.isfinite(Z), Z, np.nanmean(np.where(np.isfinite(Z), Z, np.nan), axis=0))
    filled = np.nan_to_num(filled)
    pos, neg = filled[y], filled[~y]
    diffs = (pos[:, None, :] - neg[None, :, :]).reshape(-1, k)  # every positive-negative pair
    tau = 0.1 * max(float(filled.std()), _EPS)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = special.softmax(theta)
        sig = special.expit(diffs @ w / tau)
        grad_w = -((sig * (1 - sig)) @ diffs) / (tau * len(diffs))
        return -float(sig.mean()), w * (grad_w - w @ grad_w)  # chain rule through the softmax

    result = optimize.minimize(loss, np.zeros(k), jac=True, method="L-BFGS-B")
    weights = special.softmax(result.x)
    if auc(y, combine(Z, weights, normalisation)) > auc(y, combine(Z, equal, normalisation)):
        return weights
    return equal


class BlendClassifier(ClassifierMixin, BaseEstimator):
    """A blend of per-model score columns as a binary scikit-learn classifier.

    Columns of ``X`` are models' slide scores (e.g. each model's max probability); see the
    module docstring for the normalisations, the NaN handling and the weight methods.
    """

    def __init__(self, method: str = "mean", normalisation: str = "rank", n_rounds: int = 25,
                 inner_splits: int = 3, random_state: int = 0) -> None:
        self.method = method
        self.normalisation = normalisation
        self.n_rounds = n_rounds
        self.inner_splits = inner_splits
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> BlendClassifier:
        if self.method not in WEIGHT_METHODS:
            raise ValueError(f"method must be one of {WEIGHT_METHODS}, got {self.method!r}")
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("BlendClassifier needs 2 classes; y has one class")
        target = y == self.classes_[1]
        self.normaliser_ = Normaliser(self.normalisation).fit(X)
        Z = self.normaliser_.transform(X)
        self.cv_scores_ = self._inner_cv(X, target.astype(int)) if self.method == "tuned" else {}
        if self.method == "tuned":  # best inner-CV AUC; ties and too few slides go to the plain mean
            self.chosen_method_ = max(self.cv_scores_, key=self.cv_scores_.get, default="mean")
        else:
            self.chosen_method_ = self.method
        if self.chosen_method_ == "greedy":
            self.weights_ = greedy_weights(Z, target, self.normalisation, self.n_rounds)
        elif self.chosen_method_ == "optimise":
            self.weights_ = optimised_weights(Z, target, self.normalisation)
        else:
            self.weights_ = np.full(X.shape[1], 1.0 / X.shape[1])
        return self

    def _inner_cv(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Inner CV on these slides: out-of-fold AUC of each weight method (empty if too few slides).

        The best of these numbers is the tuned blend's non-nested score, optimistic by the
        selection; an outer CV around ``fit`` gives the honest one.
        """
        from helpkit.ensemble.cv import cross_val_oof

        n_min = int(min(y.sum(), len(y) - y.sum()))
        if n_min < 2:
            return {}
        return {method: cross_val_oof(clone(self).set_params(method=method), X, y, n_splits=min(self.inner_splits, n_min),
                                      n_repeats=1, seed=self.random_state).auc
                for method in ("mean", "greedy", "optimise")}

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        p = combine(self.normaliser_.transform(X), self.weights_, self.normalisation)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags

    def save(self, folder: str | Path) -> None:
        """Write ``blend.json`` (parameters, normaliser state, weights) atomically."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        write_json(Path(folder) / "blend.json", {
            "params": self.get_params(), "classes": self.classes_.tolist(), "n_features_in": self.n_features_in_,
            "feature_names": None if names is None else [str(n) for n in names],
            "normaliser": self.normaliser_.to_dict(), "weights": self.weights_.tolist(),
            "chosen_method": self.chosen_method_, "cv_scores": self.cv_scores_})

    @classmethod
    def load(cls, folder: str | Path) -> BlendClassifier:
        data = json.loads((Path(folder) / "blend.json").read_text())
        blend = cls(**data["params"])
        blend.classes_ = np.asarray(data["classes"])
        blend.n_features_in_ = data["n_features_in"]
        if data.get("feature_names") is not None:
            blend.feature_names_in_ = np.asarray(data["feature_names"], dtype=object)
        blend.normaliser_ = Normaliser.from_dict(data["normaliser"])
        blend.weights_ = np.asarray(data["weights"], dtype=float)
        blend.chosen_method_ = data["chosen_method"]
        blend.cv_scores_ = data["cv_scores"]
        return blend
