"""Slide-level features of heatmaps and the features table the ensemble stage reads."""

from helpkit.features.slide import CALIBRATION_FEATURES, FEATURE_NAMES, QUANTILES, THRESHOLDS, slide_features
from helpkit.features.features_table import build_features, features_table, model_dirs, write_features

__all__ = [
    "CALIBRATION_FEATURES",
    "FEATURE_NAMES",
    "QUANTILES",
    "THRESHOLDS",
    "build_features",
    "features_table",
    "model_dirs",
    "slide_features",
    "write_features",
]
