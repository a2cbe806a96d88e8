"""CLI commands: ``helpkit score`` (one submission) and ``helpkit compare`` (two, paired DeLong)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

LabelsOption = Annotated[Path, typer.Option("--labels", help="labels.csv (header slide_id,label; 1/0).")]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Treat warnings (values outside [0, 1], a constant column) as errors.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def _load(pred: Path, labels_path: Path, strict: bool):  # noqa: ANN202
    """Labels and validated predictions aligned by slide id; warnings echoed to stderr."""
    import numpy as np

    from helpkit.scoring import read_labels, read_predictions

    labels = read_labels(labels_path)
    preds = read_predictions(pred, expected_ids=labels.index, strict=strict)
    for warning in preds.warnings:
        typer.echo(f"helpkit: warning: {pred}: {warning}", err=True)
    return labels.to_numpy(), np.asarray(preds.scores.reindex(labels.index), dtype=float)


def _fmt_auc(result) -> str:  # noqa: ANN001
    return f"{result.auc:.4f} (95% CI {result.ci_low:.4f}-{result.ci_high:.4f}, DeLong)"


def score(
    pred: Annotated[Path, typer.Argument(help="Predictions in the platform format: slide_id,probability; no header.")],
    labels: LabelsOption,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the ROC curve to this PNG.")] = None,
    as_json: JsonOption = False,
    strict: StrictOption = False,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Fixed threshold for sensitivity/specificity (score >= T is positive).")
    ] = 0.5,
) -> None:
    """Validate a predictions file against the labelled slides and score it: AUC with a 95%
    DeLong CI, sensitivity/specificity at the Youden threshold and at --threshold, counts."""
    from helpkit.scoring import summarise

    y, s = _load(pred, labels, strict)
    summary = summarise(y, s, threshold)
    if plot is not None:
        from helpkit.scoring.plots import plot_roc

        plot_roc({pred.name: (y, s)}, plot, title=f"ROC: {pred.name}")
    if as_json:
        typer.echo(json.dumps({"predictions": str(pred), **summary}, indent=2))
        return
    auc = summary["auc"]
    typer.echo(f"{pred}: {summary['n']} slides ({auc['n_positive']} positive, {auc['n_negative']} negative)")
    typer.echo(f"AUC {auc['auc']:.4f} (95% CI {auc['ci_low']:.4f}-{auc['ci_high']:.4f}, DeLong)")
    for name in ("youden", "threshold"):
        t = summary[name]
        typer.echo(f"{'Youden' if name == 'youden' else 'fixed'} threshold {t['threshold']:.4g}: "
                   f"sensitivity {t['sensitivity']:.3f}, specificity {t['specificity']:.3f} "
                   f"(TP {t['tp']}, FP {t['fp']}, TN {t['tn']}, FN {t['fn']})")
    if plot is not None:
        typer.echo(f"ROC curve: {plot}")


def compare(
    a: Annotated[Path, typer.Argument(help="First predictions file (platform format).")],
    b: Annotated[Path, typer.Argument(help="Second predictions file (platform format).")],
    labels: LabelsOption,
    as_json: JsonOption = False,
    strict: StrictOption = False,
) -> None:
    """Do two submissions' AUCs differ? Paired DeLong test on the same labelled slides."""
    from helpkit.scoring import delong_test

    y, sa = _load(a, labels, strict)
    _, sb = _load(b, labels, strict)
    result = delong_test(y, sa, sb)
    if as_json:
        typer.echo(json.dumps({"a": str(a), "b": str(b), **result.as_dict()}, indent=2))
        return
    typer.echo(f"A {a}: AUC {_fmt_auc(result.a)}")
    typer.echo(f"B {b}: AUC {_fmt_auc(result.b)}")
    typer.echo(f"A - B = {result.difference:+.4f}, z = {result.z:.3f}, p = {result.p_value:.4g} "
               f"(paired DeLong, two-sided, {len(y)} slides)")


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``compare`` to ``app``."""
    app.command("score")(score)
    app.command("compare")(compare)
