"""Ensembles of slide-level scores: blends, stackers, nested CV, the comparison report.

Names are imported on first use (PEP 562), so ``helpkit.ensemble.methods`` (the registry the
config reads) loads without scikit-learn or LightGBM.
"""

from __future__ import annotations

from helpkit.lazy import lazy_exports

_EXPORTS = {
    "METHODS": "methods:NAMES",
    "REGISTRY": "methods:REGISTRY",
    "BlendClassifier": "blend:BlendClassifier",
    "CVResult": "cv:CVResult",
    "apparent_auc": "cv:apparent_auc",
    "cross_val_oof": "cv:cross_val_oof",
    "SlideEnsemble": "fitted:SlideEnsemble",
    "fit_ensemble": "fitted:fit_ensemble",
    "load_ensemble": "fitted:load_ensemble",
    "write_model_oof": "oof:write_model_oof",
    "read_inputs": "inputs:read_inputs",
    "candidate_oof": "candidates:candidate_oof",
    "ensemble_report": "candidates:ensemble_report",
    "write_report": "candidates:write_report",
    "LGBMStacker": "stack:LGBMStacker",
    "LogisticStacker": "stack:LogisticStacker",
    "read_features": "features_input:read_features",
    "validate_features": "features_input:validate_features",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
