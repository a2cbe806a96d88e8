"""CLI commands: ``helpkit ensemble tune|report|oof|fit|predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ensemble_app = typer.Typer(
    help="Blends and stackers of slide scores, chosen on out-of-fold evidence.", no_args_is_help=True
)

FeaturesArg = Annotated[Path, typer.Argument(help="Features table (.parquet or .csv), one row per slide.")]
SplitsOption = Annotated[int, typer.Option("--splits", help="Stratified K-fold splits (capped by the smaller class).")]
RepeatsOption = Annotated[int, typer.Option("--repeats", help="Repeats of the K-fold with different shuffles.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the fold shuffles.")]


@ensemble_app.command("tune")
def tune(
    oof: Annotated[list[Path], typer.Argument(help="Out-of-fold scores CSVs (slide_id,label,fold,score), one per model; the file stem names the model.")],
    labels: Annotated[Path | None, typer.Option("--labels", help="labels.csv (slide_id,label); default: the files' label column.")] = None,
    normalisation: Annotated[str, typer.Option("--normalisation", help="rank, zscore or logit: how scores are put on one scale.")] = "rank",
    out: Annotated[Path | None, typer.Option("--out", help="Write the weights and scores as JSON here.")] = None,
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tune blend weights (mean, greedy Caruana selection, direct AUC optimisation, and 'tuned',
    which picks among them by inner CV). Reports each blend's apparent AUC (weights fitted and
    scored on the same slides: optimistic) and its nested-CV AUC (weights tuned inside each
    outer fold: the number to believe), and the weights fitted on all slides."""
    from helpkit.ensemble import BlendClassifier, apparent_auc, cross_val_oof, read_oof
    from helpkit.ensemble import table as tbl
    from helpkit.errors import HelpkitError
    from helpkit.io import write_json
    from helpkit.scoring import auc_ci, read_labels

    if normalisation not in ("rank", "zscore", "logit"):
        raise HelpkitError(f"--normalisation must be rank, zscore or logit, got {normalisation!r}")
    table = read_oof(oof, read_labels(labels) if labels is not None else None)
    rows = tbl.labelled(table)
    columns = [tbl.score_column(m) for m in tbl.models(table)]
    X, y = tbl.matrix(rows, columns), rows["label"].to_numpy(dtype=int)
    results = {}
    for method in ("mean", "greedy", "optimise", "tuned"):
        blend = BlendClassifier(method=method, normalisation=normalisation, random_state=seed)
        nested = cross_val_oof(blend, X, y, splits, repeats, seed)
        fitted = blend.fit(X, y)
        results[method] = {
            "weights": dict(zip(tbl.models(table), fitted.weights_.round(6).tolist(), strict=True)),
            "chosen_method": fitted.chosen_method_, "apparent_auc": apparent_auc(blend, X, y),
            "nested_cv": auc_ci(y, nested.scores).as_dict(), "repeat_aucs": nested.repeat_aucs.tolist()}
    report = {"models": tbl.models(table), "normalisation": normalisation, "n": len(y), "blends": results}
    if out is not None:
        write_json(out, report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{len(y)} slides ({int(y.sum())} positive), models: {', '.join(tbl.models(table))}")
    for method, r in results.items():
        cv = r["nested_cv"]
        weights = ", ".join(f"{m} {w:.3f}" for m, w in r["weights"].items())
        typer.echo(f"{method:9s} nested-CV AUC {cv['auc']:.4f} [{cv['ci_low']:.4f}, {cv['ci_high']:.4f}]  "
                   f"apparent {r['apparent_auc']:.4f}  weights: {weights}")


@ensemble_app.command("report")
def report(
    features: FeaturesArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.csv, oof_scores.csv and roc.png.")],
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
) -> None:
    """Compare every candidate (each model's max probability, mean blend, tuned blend, logistic
    and LightGBM stackers) by out-of-fold AUC with 95% CI and the paired DeLong p-value
    against the best single model, on the labelled training slides."""
    from helpkit.ensemble import read_features, write_report

    table = write_report(read_features(features), out, splits, repeats, seed)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    typer.echo(f"wrote {out / 'report.csv'}, {out / 'oof_scores.csv'}, {out / 'roc.png'}")


@ensemble_app.command("oof")
def oof(
    features: FeaturesArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for one <model>.csv per model.")],
) -> None:
    """Write each model's out-of-fold scores (slide_id,label,fold,score; score = <model>__max)
    for the training slides, the input of 'helpkit ensemble tune'."""
    from helpkit.ensemble import read_features, write_model_oof

    for path in write_model_oof(read_features(features), out):
        typer.echo(f"wrote {path}")


@ensemble_app.command("fit")
def fit(
    features: FeaturesArg,
    method: Annotated[str, typer.Option("--method", help="single, mean, tuned, logreg or lgbm.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the saved ensemble.")],
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
) -> None:
    """Fit one ensemble on the labelled training slides and save it (with its CV fold scores)."""
    from helpkit.ensemble import fit_ensemble, read_features

    fit_ensemble(read_features(features), method, out, cv_splits=splits, cv_repeats=repeats, seed=seed)
    scores = json.loads((out / "fold_scores.json").read_text())["auc_ci"]
    typer.echo(f"{method}: out-of-fold AUC {scores['auc']:.4f} [{scores['ci_low']:.4f}, {scores['ci_high']:.4f}]; saved to {out}")


@ensemble_app.command("predict")
def predict(
    features: FeaturesArg,
    model: Annotated[Path, typer.Option("--model", help="Folder written by 'helpkit ensemble fit'.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions CSV to write (platform format).")],
    split: Annotated[str, typer.Option("--split", help="Which rows to score: test, train or all.")] = "test",
) -> None:
    """Score slides with a saved ensemble and write slide_id,probability (no header)."""
    import pandas as pd

    from helpkit.ensemble import load_ensemble, read_features
    from helpkit.errors import HelpkitError
    from helpkit.scoring import write_predictions

    if split not in ("test", "train", "all"):
        raise HelpkitError(f"--split must be test, train or all, got {split!r}")
    table = read_features(features)
    rows = table if split == "all" else table[table["split"] == split]
    if rows.empty:
        raise HelpkitError(f"no {split} slides in the features table", features)
    probs = load_ensemble(model).predict_proba(rows)
    write_predictions(out, pd.Series(probs, index=rows["slide_id"]))
    typer.echo(f"wrote {len(rows)} predictions to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` command group to ``app``."""
    app.add_typer(ensemble_app, name="ensemble")
