"""The comparison table: every candidate ensemble's out-of-fold AUC, CI and p-value.

Candidates: each model's max probability alone, the mean blend, the tuned blend (nested
CV), the logistic stacker and the LightGBM stacker. All go through the same repeated
stratified K-fold on the labelled training slides (singles and the mean blend learn
nothing from labels there, so their out-of-fold scores are their plain scores, normalised
on the training folds); each slide's score is the mean over repeats, and those scores give
the AUC, its DeLong CI and the paired DeLong p-value against the best single model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.ensemble import methods
from helpkit.ensemble import features_input as tbl
from helpkit.ensemble.cv import cross_val_oof
from helpkit.ensemble.fitted import candidate
from helpkit.io import atomic_path
from helpkit.progress import track
from helpkit.scoring.metrics import auc_ci, delong_test



def stacked_candidates() -> list[str]:
    """The registered methods the report compares besides each single model."""
    return [m.name for m in methods.REGISTRY.values() if m.candidate]


def candidate_oof(features: pd.DataFrame, n_splits: int = 5, n_repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold scores of every candidate: ``label`` then one column per candidate, by slide id."""
    features = tbl.validate_features(features)
    rows = tbl.labelled(features)
    y = rows["label"].to_numpy(dtype=int)
    recipes = [(f"single:{m}", "single", {"model": m}) for m in tbl.models(features)
               if not tbl.empty_columns(rows, [tbl.score_column(m)])]
    recipes += [(name, name, {}) for name in stacked_candidates()]
    out = pd.DataFrame({"label": y}, index=pd.Index(rows["slide_id"], name="slide_id"))
    for name, method, params in track(recipes, "ensemble candidates"):
        columns, _, estimator = candidate(features, method, **params)
        result = cross_val_oof(estimator, tbl.frame(rows, columns), y, n_splits, n_repeats, seed)
        out[name] = result.scores
        out.attrs.setdefault("repeat_aucs", {})[name] = result.repeat_aucs.tolist()
    return out


def ensemble_report(features: pd.DataFrame, n_splits: int = 5, n_repeats: int = 3, seed: int = 0,
                    oof: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per candidate: out-of-fold AUC, 95% CI, repeat spread, p-value vs the best single model."""
    oof = candidate_oof(features, n_splits, n_repeats, seed) if oof is None else oof
    y = oof["label"].to_numpy(dtype=int)
    candidates = [c for c in oof.columns if c != "label"]
    results = {c: auc_ci(y, oof[c].to_numpy()) for c in candidates}
    singles = [c for c in candidates if c.startswith("single:")]
    best = max(singles, key=lambda c: results[c].auc)
    records = []
    for name in candidates:
        r = results[name]
        repeats = np.asarray(oof.attrs.get("repeat_aucs", {}).get(name, [np.nan]))
        p = 1.0 if name == best else delong_test(y, oof[name].to_numpy(), oof[best].to_numpy()).p_value
        records.append({"candidate": name, "auc": r.auc, "ci_low": r.ci_low, "ci_high": r.ci_high,
                        "auc_repeat_mean": float(repeats.mean()), "auc_repeat_std": float(repeats.std()),
                        "p_vs_best_single": p, "best_single": name == best,
                        "n": len(y), "n_positive": int(y.sum()), "n_negative": int(len(y) - y.sum())})
    return pd.DataFrame.from_records(records)


def write_report(features: pd.DataFrame, out_dir: str | Path, n_splits: int = 5, n_repeats: int = 3,
                 seed: int = 0) -> pd.DataFrame:
    """Write ``report.csv``, ``oof_scores.csv`` and ``roc.png`` to ``out_dir``; return the table."""
    from helpkit.scoring.plots import plot_roc

    out_dir = Path(out_dir)
    oof = candidate_oof(features, n_splits, n_repeats, seed)
    report = ensemble_report(features, oof=oof)
    with atomic_path(out_dir / "report.csv") as tmp:
        report.to_csv(tmp, index=False)
    with atomic_path(out_dir / "oof_scores.csv") as tmp:
        oof.to_csv(tmp)
    y = oof["label"].to_numpy()
    plot_roc({c: (y, oof[c].to_numpy()) for c in report["candidate"]}, out_dir / "roc.png",
             title="Out-of-fold ROC, training slides")
    return report
