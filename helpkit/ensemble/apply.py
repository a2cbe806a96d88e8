"""Apply tuned blend weights or a fitted ensemble to test predictions (``helpkit ensemble apply``).

Two sources: the JSON ``helpkit ensemble tune --out`` writes (per blend: the weights and the
normaliser fitted on the training predictions, so a test slide is scored on its own), or a
folder ``helpkit ensemble fit --out`` (``fit_ensemble``) saved. Either way the test table must
hold a score for every model the weights or the stacker were fitted on, named the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpkit.ensemble import features_input as tbl
from helpkit.errors import HelpkitError

WEIGHTS_KIND = "helpkit-blend-weights"


@dataclass
class Applier:
    """Columns to read and an estimator (or a SlideEnsemble) that scores them."""

    columns: list[str]
    scorer: Any
    what: str

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        absent = [c for c in self.columns if c not in table.columns]
        if absent:
            models = sorted({c.split(tbl.SEPARATOR)[0] for c in absent})
            have = ", ".join(tbl.models(table))
            raise HelpkitError(f"{self.what} needs predictions of model(s) {', '.join(models)}, "
                               f"which the inputs lack (they hold {have}); name each file as when it was fitted")
        if hasattr(self.scorer, "columns"):  # a SlideEnsemble: its own NaN handling
            return self.scorer.predict_proba(table)
        return self.scorer.predict_proba(tbl.matrix(table, self.columns))[:, 1]

    def describe(self) -> str:
        return self.what


def _blend_from_json(path: Path, data: dict[str, Any], blend: str | None) -> Applier:
    from helpkit.ensemble.blend import BlendClassifier, Normaliser

    blends = data.get("blends", {})
    name = blend or data.get("best") or "tuned"
    if name not in blends:
        raise HelpkitError(f"no blend {name!r} in the weights (have {', '.join(blends)})", path)
    entry = blends[name]
    if "normaliser" not in entry:
        raise HelpkitError("these weights have no normaliser state; tune again with this helpkit's "
                           "'helpkit ensemble tune --out'", path)
    models = list(entry["weights"])
    estimator = BlendClassifier(method=name, normalisation=data["normalisation"])
    estimator.classes_ = np.array([0, 1])
    estimator.n_features_in_ = len(models)
    estimator.normaliser_ = Normaliser.from_dict(entry["normaliser"])
    estimator.weights_ = np.asarray([entry["weights"][m] for m in models], dtype=float)
    estimator.chosen_method_ = entry.get("chosen_method", name)
    estimator.cv_scores_ = {}
    weights = ", ".join(f"{m} {w:.3f}" for m, w in entry["weights"].items())
    return Applier([tbl.score_column(m) for m in models], estimator, f"{name} blend: {weights}")


def load_applier(source: str | Path, blend: str | None = None) -> Applier:
    """What scores test predictions: tuned weights (a JSON file) or a fitted ensemble (a folder)."""
    source = Path(source)
    if source.is_dir():
        from helpkit.ensemble.fitted import load_ensemble

        if blend is not None:
            raise HelpkitError("--blend chooses among tuned weights; a fitted ensemble folder has one estimator", source)
        ensemble = load_ensemble(source)
        return Applier(ensemble.columns, ensemble, f"{ensemble.method} ensemble")
    try:
        data = json.loads(source.read_text())
    except FileNotFoundError:
        raise HelpkitError("no such weights file or ensemble folder", source) from None
    except (OSError, ValueError) as err:
        raise HelpkitError(f"not tuned weights (JSON) nor an ensemble folder ({err})", source) from err
    if not isinstance(data, dict) or "blends" not in data:
        raise HelpkitError("not the JSON of 'helpkit ensemble tune --out' (no 'blends')", source)
    return _blend_from_json(source, data, blend)
