"""Local scoring: platform-format predictions I/O, AUC with DeLong CI and test, ROC plots."""

from helpkit.scoring.metrics import (
    AUCResult,
    PairedResult,
    ThresholdResult,
    at_threshold,
    auc,
    auc_ci,
    delong_test,
    summarise,
    youden,
)
from helpkit.scoring.deposits import DEPOSIT_CLASSES, ClassSensitivity, sensitivity_by_class, youden_threshold
from helpkit.data import read_labels  # re-exported: scoring reads labels.csv, data owns its format
from helpkit.scoring.predictions import Predictions, read_predictions, write_predictions

__all__ = [
    "AUCResult",
    "ClassSensitivity",
    "DEPOSIT_CLASSES",
    "PairedResult",
    "Predictions",
    "ThresholdResult",
    "at_threshold",
    "auc",
    "auc_ci",
    "delong_test",
    "read_labels",
    "read_predictions",
    "sensitivity_by_class",
    "summarise",
    "write_predictions",
    "youden",
    "youden_threshold",
]
