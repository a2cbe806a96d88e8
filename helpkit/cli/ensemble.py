"""CLI commands: ``helpkit ensemble tune|report|oof|fit|apply|predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ensemble_app = typer.Typer(
    help="Blends and stackers of slide scores, chosen on out-of-fold evidence.", no_args_is_help=True
)

FeaturesArg = Annotated[Path, typer.Argument(help="Features table (.parquet or .csv), one row per slide.")]
PredictionsArg = Annotated[list[str], typer.Argument(
    metavar="PRED...",
    help="Predictions: one platform-format file per model (slide_id,probability; no header; the model is "
    "the file stem, or NAME=PATH), a long-format CSV (slide_id,model,probability[,fold]), per-model CSVs "
    "with a header (slide_id,[label,][fold,]score), or one features table.")]
LabelsOption = Annotated[Path | None, typer.Option(
    "--labels", help="labels.csv (header slide_id,label[,size_class]); default: the files' label column.")]
SplitsOption = Annotated[int, typer.Option("--splits", help="Stratified K-fold splits (capped by the smaller class).")]
RepeatsOption = Annotated[int, typer.Option("--repeats", help="Repeats of the K-fold with different shuffles.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the fold shuffles.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text.")]


def _read(pred: list[str], labels: Path | None, split: str = "train"):  # noqa: ANN202
    from helpkit.data import read_labels
    from helpkit.ensemble import read_inputs

    return read_inputs(list(pred), read_labels(labels) if labels is not None else None, split=split)


@ensemble_app.command("tune")
def tune(
    pred: PredictionsArg,
    labels: LabelsOption = None,
    normalisation: Annotated[str, typer.Option("--normalisation", help="rank, zscore or logit: how scores are put on one scale.")] = "rank",
    out: Annotated[Path | None, typer.Option("--out", help="Write the weights, normalisers and scores as JSON here "
                                             "(the input of 'helpkit ensemble apply').")] = None,
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Tune blend weights of out-of-fold predictions (mean, greedy Caruana selection, direct AUC
    optimisation, and 'tuned', which picks among them by inner CV). Reports each blend's apparent
    AUC (weights fitted and scored on the same slides: optimistic) and its nested-CV AUC (weights
    tuned inside each outer fold: the number to believe), and the weights fitted on all slides;
    'best' is the blend with the highest nested-CV AUC."""
    from helpkit.ensemble import BlendClassifier, apparent_auc, cross_val_oof
    from helpkit.ensemble import features_input as tbl
    from helpkit.ensemble.blend import WEIGHT_METHODS
    from helpkit.errors import HelpkitError
    from helpkit.io import json_text, write_json
    from helpkit.scoring import auc_ci

    if normalisation not in ("rank", "zscore", "logit"):
        raise HelpkitError(f"--normalisation must be rank, zscore or logit, got {normalisation!r}")
    table = _read(pred, labels)
    rows = tbl.labelled(table)
    columns = [tbl.score_column(m) for m in tbl.models(table)]
    X, y = tbl.matrix(rows, columns), rows["label"].to_numpy(dtype=int)
    results = {}
    for method in WEIGHT_METHODS:
        blend = BlendClassifier(method=method, normalisation=normalisation, random_state=seed)
        nested = cross_val_oof(blend, X, y, splits, repeats, seed)
        fitted = blend.fit(X, y)
        results[method] = {
            "weights": dict(zip(tbl.models(table), fitted.weights_.round(6).tolist(), strict=True)),
            "chosen_method": fitted.chosen_method_, "apparent_auc": apparent_auc(blend, X, y),
            "nested_cv": auc_ci(y, nested.scores).as_dict(), "repeat_aucs": nested.repeat_aucs.tolist(),
            "normaliser": fitted.normaliser_.to_dict()}
    best = max(results, key=lambda m: results[m]["nested_cv"]["auc"])
    report = {"kind": "helpkit-blend-weights", "models": tbl.models(table), "normalisation": normalisation,
              "n": len(y), "best": best, "blends": results}
    if out is not None:
        write_json(out, report)
    if as_json:
        typer.echo(json_text(report))
        return
    typer.echo(f"{len(y)} slides ({int(y.sum())} positive), models: {', '.join(tbl.models(table))}")
    for method, r in results.items():
        cv = r["nested_cv"]
        weights = ", ".join(f"{m} {w:.3f}" for m, w in r["weights"].items())
        typer.echo(f"{method:9s} nested-CV AUC {cv['auc']:.4f} [{cv['ci_low']:.4f}, {cv['ci_high']:.4f}]  "
                   f"apparent {r['apparent_auc']:.4f}  weights: {weights}")
    typer.echo(f"best by nested CV: {best}" + (f"; wrote {out}" if out is not None else ""))


@ensemble_app.command("report")
def report(
    pred: PredictionsArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.csv, oof_scores.csv and roc.png.")],
    labels: LabelsOption = None,
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Compare every candidate (each model's score alone and each method of the registry: blends,
    logistic and LightGBM stackers) by out-of-fold AUC with 95% CI and the paired DeLong p-value
    against the best single model, on the labelled training slides."""
    from helpkit.ensemble import write_report
    from helpkit.io import json_text

    table = write_report(_read(pred, labels), out, splits, repeats, seed)
    if as_json:
        typer.echo(json_text(table.to_dict(orient="records")))
        return
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


def _method_help() -> str:
    from helpkit.ensemble.methods import REGISTRY

    return "Ensemble method: " + "; ".join(
        f"{m.name} ({m.description}; params: {', '.join(f'{k}={p.describe()}' for k, p in m.params.items())})"
        for m in REGISTRY.values())


@ensemble_app.command("fit")
def fit(
    pred: PredictionsArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for the saved ensemble.")],
    method: Annotated[str | None, typer.Option("--method", help=_method_help() + ". Default: the --config's, else lgbm.")] = None,
    param: Annotated[list[str], typer.Option("--param", metavar="KEY=VALUE",
                                             help="A parameter of the method's estimator (repeatable), checked "
                                             "against it before anything is fitted.")] = [],  # noqa: B006
    config: Annotated[Path | None, typer.Option("--config", help="A submission.toml (or its folder or name): its "
                                                "[ensemble] method and params; --method and --param override.")] = None,
    labels: LabelsOption = None,
    splits: SplitsOption = 5,
    repeats: RepeatsOption = 3,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Fit one ensemble on the labelled training slides and save it (with its CV fold scores)."""
    from helpkit.ensemble import fit_ensemble
    from helpkit.ensemble.methods import parse_params
    from helpkit.io import json_text

    params: dict = {}
    if config is not None:
        from helpkit.config import load_submission

        spec = load_submission(config).ensemble
        method = method or spec.method
        params = dict(spec.params) if method == spec.method else {}
    method = method or "lgbm"
    params |= parse_params(method, param)  # a typo or a bad value stops here, before any reading or fitting
    fit_ensemble(_read(pred, labels), method, out, cv_splits=splits, cv_repeats=repeats, seed=seed, **params)
    scores = json.loads((out / "fold_scores.json").read_text())
    if as_json:
        typer.echo(json_text({"method": method, "params": params, "out": str(out), "fold_scores": scores}))
        return
    if "auc_ci" not in scores:
        typer.echo(f"{method}: fitted without fold scores ({scores.get('skipped')}); saved to {out}")
        return
    ci = scores["auc_ci"]
    typer.echo(f"{method}: out-of-fold AUC {ci['auc']:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}]; saved to {out}")


@ensemble_app.command("apply")
def apply(
    weights_or_model: Annotated[Path, typer.Argument(
        metavar="WEIGHTS_OR_MODEL",
        help="The JSON of 'helpkit ensemble tune --out', or a folder of 'helpkit ensemble fit --out'.")],
    pred: PredictionsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Platform-format output to write (slide_id,probability).")]
    = Path("output.csv"),
    blend: Annotated[str | None, typer.Option("--blend", help="Which tuned blend of the JSON (mean, greedy, "
                                              "optimise, tuned); default: its best by nested CV.")] = None,
    fallback: Annotated[float, typer.Option("--fallback", help="Probability of a slide no model scored.")] = 0.5,
) -> None:
    """Score test predictions with tuned weights or a fitted stacker; write output.csv in the
    platform format (one row per slide of PRED, the models named as when it was tuned or fitted)."""
    import pandas as pd

    from helpkit.ensemble.apply import load_applier
    from helpkit.scoring import write_predictions

    applier = load_applier(weights_or_model, blend)
    table = _read(pred, None, split="test")
    probs = applier.predict_proba(table)
    probs = pd.Series(probs, index=table["slide_id"]).fillna(fallback).clip(0.0, 1.0)
    write_predictions(out, probs)
    typer.echo(f"wrote {len(probs)} predictions ({applier.describe()}) to {out}")


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
