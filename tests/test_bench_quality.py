"""bench/bench_quality.py: its --quick run writes the table and the figure; the deposit-size scoring."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit.errors import HelpkitError
from helpkit.scoring import DEPOSIT_CLASSES, sensitivity_by_class, youden_threshold

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"


def test_youden_threshold_hand_case() -> None:
    # Negatives 0.1 0.2 0.3 0.5, positives 0.4 0.8 0.9: J is 0.75 at 0.4 (all positives, one
    # false positive), 0.67 at 0.8 (two positives, no false positive).
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.4, 0.8, 0.9])
    assert youden_threshold(labels, scores) == pytest.approx(0.4)


def test_sensitivity_by_class_hand_case() -> None:
    classes = ["negative", "macro", "macro", "micro", "MICRO", "micro", "negative"]
    scores = np.array([0.9, 0.7, 0.2, 0.5, 0.49, 0.1, 0.0])
    result = sensitivity_by_class(classes, scores, threshold=0.5)
    assert list(result) == list(DEPOSIT_CLASSES)
    assert (result["macro"].n, result["macro"].detected, result["macro"].sensitivity) == (2, 1, 0.5)
    assert (result["micro"].n, result["micro"].detected) == (3, 1)  # 0.5 counts (>=), 0.49 does not
    assert result["itc"].n == 0 and math.isnan(result["itc"].sensitivity)


def test_sensitivity_by_class_checks_inputs() -> None:
    with pytest.raises(HelpkitError, match="unknown size class"):
        sensitivity_by_class(["tumour"], np.array([0.5]), 0.5)
    with pytest.raises(HelpkitError, match="2 size classes for 1 scores"):
        sensitivity_by_class(["itc", "micro"], np.array([0.5]), 0.5)
    with pytest.raises(HelpkitError, match="NaN"):
        sensitivity_by_class(["itc"], np.array([np.nan]), 0.5)
