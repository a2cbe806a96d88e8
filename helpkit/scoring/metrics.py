"""AUC with DeLong confidence intervals, the paired DeLong test, and threshold metrics.

DeLong is written here by hand because scikit-learn has no AUC variance or paired test
(and the small packages that do are unmaintained). This is the fast O(n log n) algorithm
of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389): placement values from
mid-ranks, computed for several predictors at once so the paired test gets their covariance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

from helpkit.errors import HelpkitError


@dataclass(frozen=True)
class AUCResult:
    """AUC with its DeLong variance and a two-sided confidence interval."""

    auc: float
    variance: float
    ci_low: float
    ci_high: float
    level: float
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    """Paired DeLong test of two predictors scored on the same slides."""

    a: AUCResult
    b: AUCResult
    difference: float
    variance: float
    z: float
    p_value: float

    def as_dict(self) -> dict[str, object]:
        return {"a": self.a.as_dict(), "b": self.b.as_dict(), "difference": self.difference,
                "variance": self.variance, "z": self.z, "p_value": self.p_value}


@dataclass(frozen=True)
class ThresholdResult:
    """Confusion counts and rates when scores >= ``threshold`` are called positive."""

    threshold: float
    sensitivity: float
    specificity: float
    tp: int
    fp: int
    tn: int
    fn: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def check_binary(labels: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """Labels as a bool array; a clear error when AUC is undefined or inputs disagree."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise HelpkitError("labels must be a 1-D array of 0/1")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise HelpkitError(f"labels have one class only ({n_pos} positive, {len(y) - n_pos} negative): AUC is undefined")
    if scores is not None:
        s = np.asarray(scores, dtype=float)
        if s.shape[-1] != len(y):
            raise HelpkitError(f"{s.shape[-1]} scores for {len(y)} labels")
        if not np.isfinite(s).all():
            raise HelpkitError("scores contain NaN or infinity")
    return y.astype(bool)


def _delong(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their covariance (k, k) for ``scores`` of shape (k, n)."""
    y = check_binary(labels, scores)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)  # mid-ranks within positives
    ty = stats.rankdata(neg, axis=1)  # mid-ranks within negatives
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # mid-ranks over all
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # ... and of the negatives
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((len(s), len(s)))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((len(s), len(s)))
    return aucs, sx / m + sy / n


def _result(auc: float, var: float, level: float, n_pos: int, n_neg: int) -> AUCResult:
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(max(var, 0.0))
    return AUCResult(float(auc), float(var), float(max(auc - half, 0.0)), float(min(auc + half, 1.0)),
                     level, n_pos, n_neg)


def auc_ci(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> AUCResult:
    """ROC AUC and its DeLong ``level`` confidence interval (normal, clipped to [0, 1])."""
    aucs, cov = _delong(labels, scores)
    n_pos = int(np.sum(labels))
    return _result(aucs[0], cov[0, 0], level, n_pos, len(labels) - n_pos)


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> PairedResult:
    """Two-sided paired DeLong test of H0: AUC(a) == AUC(b) on the same slides.

    When the difference has zero variance (e.g. both predictors separate perfectly) the
    p-value is 1 if the AUCs are equal and 0 otherwise.
    """
    aucs, cov = _delong(labels, np.vstack([scores_a, scores_b]))
    n_pos = int(np.sum(labels))
    n_neg = len(labels) - n_pos
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
    return PairedResult(_result(aucs[0], cov[0, 0], level, n_pos, n_neg),
                        _result(aucs[1], cov[1, 1], level, n_pos, n_neg), diff, var, float(z), p)


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> ThresholdResult:
    """Sensitivity and specificity when ``scores >= threshold`` are called positive."""
    y = check_binary(labels, scores)
    called = np.asarray(scores, dtype=float) >= threshold
    tp, fn = int((called & y).sum()), int((~called & y).sum())
    fp, tn = int((called & ~y).sum()), int((~called & ~y).sum())
    return ThresholdResult(float(threshold), tp / (tp + fn), tn / (tn + fp), tp, fp, tn, fn)


def youden(labels: np.ndarray, scores: np.ndarray) -> ThresholdResult:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J), and its rates."""
    y = check_binary(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, scores)
    finite = np.isfinite(thresholds)  # roc_curve's first threshold is +inf (call nothing)
    best = np.argmax(np.where(finite, tpr - fpr, -np.inf))
    return at_threshold(labels, scores, float(thresholds[best]))


def summarise(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, level: float = 0.95) -> dict[str, object]:
    """Everything ``helpkit score`` prints: AUC with CI, Youden and fixed-threshold rates, counts."""
    result = auc_ci(labels, scores, level)
    return {"auc": result.as_dict(), "youden": youden(labels, scores).as_dict(),
            "threshold": at_threshold(labels, scores, threshold).as_dict(), "n": len(labels)}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic from mid-ranks: cheap enough for tuning loops."""
    y = np.asarray(labels).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    ranks = stats.rankdata(scores)
    return float((ranks[y].sum() - m * (m + 1) / 2) / (m * n))
