"""Detection by deposit size: sensitivity per CAMELYON size class at one fixed threshold.

A positive slide's class is that of its largest deposit (macro, micro, itc;
``helpkit.layouts.size_class``). The threshold is chosen once on a labelled set (Youden's J,
e.g. on phase 1) and applied unchanged to another (phase 2), so the per-class sensitivities
say which deposits a shift loses, the way micro-metastases were lost in HeLP 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.layouts import SIZE_CLASSES
from helpkit.scoring.metrics import youden

DEPOSIT_CLASSES = ("macro", "micro", "itc")
"""Classes of positive slides, largest first."""


@dataclass(frozen=True)
class ClassSensitivity:
    """How many positive slides of one size class a threshold calls positive."""

    size_class: str
    n: int
    detected: int

    @property
    def sensitivity(self) -> float:
        """detected / n; NaN when the set has no slide of this class."""
        return self.detected / self.n if self.n else float("nan")


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (``scores >= t`` is positive) that maximises Youden's J."""
    return youden(labels, scores).threshold


def sensitivity_by_class(size_classes: Sequence[str], scores: np.ndarray,
                         threshold: float) -> dict[str, ClassSensitivity]:
    """Sensitivity at ``threshold`` on the slides of each deposit class (negatives are ignored).

    ``size_classes`` holds one of negative, itc, micro, macro per slide (any case), aligned
    with ``scores``. Returns one entry per class of ``DEPOSIT_CLASSES``, in that order.
    """
    classes = np.char.lower(np.asarray(size_classes, dtype=str))
    values = np.asarray(scores, dtype=float)
    if classes.shape != values.shape or values.ndim != 1:
        raise HelpkitError(f"{classes.size} size classes for {values.size} scores")
    unknown = sorted(set(classes.tolist()) - set(SIZE_CLASSES))
    if unknown:
        raise HelpkitError(f"unknown size class(es) {', '.join(unknown)}: expected {', '.join(SIZE_CLASSES)}")
    if not np.isfinite(values).all():
        raise HelpkitError("scores contain NaN or infinity")
    called = values >= threshold
    return {c: ClassSensitivity(c, int((classes == c).sum()), int((called & (classes == c)).sum()))
            for c in DEPOSIT_CLASSES}
