"""Ensembles of slide-level scores: blends, stackers, nested CV, the comparison report."""

from helpkit.ensemble.blend import BlendClassifier
from helpkit.ensemble.cv import CVResult, apparent_auc, cross_val_oof
from helpkit.ensemble.fitted import METHODS, SlideEnsemble, fit_ensemble, load_ensemble
from helpkit.ensemble.oof import read_oof, write_model_oof
from helpkit.ensemble.report import candidate_oof, ensemble_report, write_report
from helpkit.ensemble.stack import LGBMStacker, LogisticStacker
from helpkit.ensemble.table import read_features, validate_features

__all__ = [
    "METHODS",
    "BlendClassifier",
    "CVResult",
    "LGBMStacker",
    "LogisticStacker",
    "SlideEnsemble",
    "apparent_auc",
    "candidate_oof",
    "cross_val_oof",
    "ensemble_report",
    "fit_ensemble",
    "load_ensemble",
    "read_features",
    "read_oof",
    "validate_features",
    "write_model_oof",
    "write_report",
]
