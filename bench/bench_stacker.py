"""Study: slide stackers fitted on few training slides, scored on a clean and a shifted test set.

Every variant is fitted on the out-of-fold heatmaps' features of the training slides (all of
them, and ``--seeds`` stratified random subsets of each smaller ``--sizes`` to mimic small
challenges) and scored on the phase-1 (clean) and phase-2 (stain-shifted) test slides: mean
AUC over the subsets (its spread in brackets) and the mean number of distinct predicted values
per test set (ties cost AUC). Features are recomputed from the saved heatmaps with this
helpkit's ``features_table``, so the ``base`` set (without ``CALIBRATION_FEATURES``) and the
``+calib`` set are measured on the same slides. Writes every fit's numbers to
``--out/stacker_study.csv``.

    .venv/bin/python bench/bench_stacker.py --truth1 labels1.csv
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.data import read_labels
from helpkit.ensemble import BlendClassifier, LGBMStacker, LogisticStacker
from helpkit.ensemble import features_input as tbl
from helpkit.features import CALIBRATION_FEATURES, features_table, model_dirs
from helpkit.layouts import labels_file
from helpkit.scoring import auc

BENCH = Path("build/bench-quality")
RUN = BENCH / "out-medium"
DATA = BENCH / "data"
_OLD = {"min_slides": 0, "tie_break": 0.0}
"""LGBMStacker as it was before the tie-break and the few-slide fallback."""
_STUMPS = {"num_leaves": 2, "max_depth": 1, "n_estimators": 300, "learning_rate": 0.02, "min_child_samples": 3}

# name: (columns: max | base | calib, unfitted estimator)
VARIANTS: dict[str, tuple[str, Callable[[], object]]] = {
    "lgbm old defaults": ("base", lambda: LGBMStacker(**_OLD)),
    "lgbm old defaults +calib": ("calib", lambda: LGBMStacker(**_OLD)),
    "lgbm stumps, 300 x 0.02": ("base", lambda: LGBMStacker(**_STUMPS, **_OLD)),
    "lgbm tie-break only": ("base", lambda: LGBMStacker(min_slides=0)),
    "lgbm tie-break only +calib": ("calib", lambda: LGBMStacker(min_slides=0)),
    "lgbm (shipped defaults)": ("base", lambda: LGBMStacker()),
    "lgbm (shipped defaults) +calib": ("calib", lambda: LGBMStacker()),
    "logreg": ("base", lambda: LogisticStacker()),
    "logreg +calib": ("calib", lambda: LogisticStacker()),
    "logreg of max (the fallback)": ("max", lambda: LogisticStacker()),
    "mean blend of max, rank": ("max", lambda: BlendClassifier(method="mean")),
    "mean blend of max, logit": ("max", lambda: BlendClassifier(method="mean", normalisation="logit")),
}


def _labels(truth: Path) -> pd.Series:
    return read_labels(truth if truth.is_file() else labels_file(truth))


def load(heatmaps: Path, truth: Path | None = None) -> pd.DataFrame:
    """The features table of ``heatmaps`` (``<model>/<slide>.npz``), labelled from ``truth`` when given."""
    table = features_table(model_dirs([heatmaps]))
    if truth is not None:
        table["label"] = _labels(truth).reindex(table["slide_id"]).to_numpy(dtype=float)
        table["split"] = "train"  # scored like labelled slides; nothing is fitted on them
    return tbl.labelled(tbl.validate_features(table))


def columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """The three feature sets: each model's max, every feature but the calibration ones, every feature."""
    every = tbl.feature_columns(table)
    calib = {f"{tbl.SEPARATOR}{name}" for name in CALIBRATION_FEATURES}
    return {"max": [tbl.score_column(m) for m in tbl.models(table)],
            "base": [c for c in every if not c.endswith(tuple(calib))], "calib": every}


def subsets(y: np.ndarray, sizes: list[int], seeds: int) -> list[tuple[int, int, np.ndarray]]:
    """(size, seed, row indices): half of each class, drawn per seed; all rows once when size is all."""
    out = []
    for size in sizes:
        if size >= len(y):
            out.append((len(y), 0, np.arange(len(y))))
            continue
        for seed in range(seeds):
            rng = np.random.default_rng([size, seed])
            out.append((size, seed, np.concatenate([rng.choice(np.flatnonzero(y == k), size // 2, replace=False)
                                                    for k in (0, 1)])))
    return out


def study(train: pd.DataFrame, tests: dict[str, pd.DataFrame], sizes: list[int], seeds: int) -> pd.DataFrame:
    """One row per (variant, size, seed): each test set's AUC and number of distinct predictions."""
    sets = columns(train)
    y = train["label"].to_numpy(dtype=int)
    rows = []
    for name, (which, make) in VARIANTS.items():
        X = tbl.frame(train, sets[which])
        for size, seed, idx in subsets(y, sizes, seeds):
            estimator = make().fit(X.iloc[idx], y[idx])
            row = {"variant": name, "n_train": size, "seed": seed}
            for phase, test in tests.items():
                p = estimator.predict_proba(tbl.frame(test, sets[which]))[:, 1]
                row[f"{phase}_auc"] = auc(test["label"].to_numpy(dtype=int), p)
                row[f"{phase}_distinct"] = len(np.unique(p))
            rows.append(row)
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame, phases: list[str]) -> pd.DataFrame:
    """Mean (and std over subsets) of each number, per variant and training size, in variant order."""
    grouped = results.groupby(["n_train", "variant"], sort=False)
    out = pd.DataFrame(index=grouped.size().index)
    for phase in phases:
        auc_mean, auc_std = grouped[f"{phase}_auc"].mean(), grouped[f"{phase}_auc"].std().fillna(0)
        out[f"{phase} AUC"] = [f"{m:.3f} ({s:.3f})" for m, s in zip(auc_mean, auc_std, strict=True)]
        out[f"{phase} distinct"] = grouped[f"{phase}_distinct"].mean().round(1)
    return out.sort_index(level="n_train", sort_remaining=False)


def single_feature_aucs(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """AUC of each model's max and calibration features alone on each set (no fitting)."""
    names = ("max", *CALIBRATION_FEATURES)
    models = tbl.models(next(iter(tables.values())))
    return pd.DataFrame({phase: {f"{m}__{n}": auc(t["label"].to_numpy(dtype=int), t[f"{m}__{n}"].fillna(0).to_numpy())
                                 for m in models for n in names}
                         for phase, t in tables.items()}).round(3)


def _work_dir(inference: Path) -> Path:
    """The one work dir (``<hash>/heatmaps``) of an inference folder."""
    found = sorted(inference.glob("*/heatmaps"))
    if len(found) != 1:
        raise SystemExit(f"expected one <work dir>/heatmaps under {inference}, found {len(found)}")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=RUN / "models/stacked/heatmaps",
                        help="Out-of-fold heatmaps of the labelled training slides.")
    parser.add_argument("--test1", type=Path, default=RUN / "inference/phase1/stacked", help="Phase-1 inference.")
    parser.add_argument("--test2", type=Path, default=RUN / "inference/phase2/stacked", help="Phase-2 inference.")
    parser.add_argument("--truth1", type=Path, default=DATA / "phase1_train60_test100_size4096_seed0",
                        help="Phase-1 truth: a competition root or its labels file.")
    parser.add_argument("--truth2", type=Path, default=DATA / "phase2_train60_test100_size4096_seed0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 30, 45, 60], help="Training slides per fit.")
    parser.add_argument("--seeds", type=int, default=10, help="Random subsets per size below all slides.")
    parser.add_argument("--out", type=Path, default=Path("build/stacker-study"))
    args = parser.parse_args()
    if not args.train.is_dir():  # `make bench` runs every bench: this one studies a bench_quality run
        print(f"bench_stacker: skipped: no out-of-fold heatmaps at {args.train} (run bench/bench_quality.py "
              "first, or pass --train, --test1, --test2)")
        return

    start = time.perf_counter()
    train = load(args.train)
    tests = {"phase1": load(_work_dir(args.test1), args.truth1), "phase2": load(_work_dir(args.test2), args.truth2)}
    results = study(train, tests, args.sizes, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "stacker_study.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(f"{len(train)} training slides ({int(train['label'].sum())} positive); test sets: "
              + ", ".join(f"{k} {len(t)} ({int(t['label'].sum())} positive)" for k, t in tests.items()))
        print("\nEach feature alone (AUC):")
        print(single_feature_aucs({"train": train, **tests}).to_string())
        print(f"\nStackers: mean test AUC (std over {args.seeds} subsets per size below {len(train)}) "
              "and distinct predicted values per test set:")
        print(summary(results, list(tests)).to_string())
    print(f"\n{len(results)} fits in {time.perf_counter() - start:.0f} s; per fit: {args.out / 'stacker_study.csv'}")


if __name__ == "__main__":
    main()
