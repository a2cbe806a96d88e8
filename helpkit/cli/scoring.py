"""CLI commands: ``helpkit score`` (one submission) and ``helpkit compare`` (two, paired DeLong)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helpkit.io import json_text

LabelsOption = Annotated[Path, typer.Option("--labels", help="labels.csv (header slide_id,label[,size_class]; label 1/0).")]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Treat warnings (values outside [0, 1], a constant column) as errors.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text "
                                                     "(strict JSON: NaN is null).")]


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
    pred: Annotated[
        Path | None, typer.Argument(help="Predictions in the platform format: slide_id,probability; no header.")
    ] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="labels.csv (header slide_id,label[,size_class]; label 1/0).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the ROC curve to this PNG.")] = None,
    as_json: JsonOption = False,
    strict: StrictOption = False,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Fixed threshold for sensitivity/specificity (score >= T is positive).")
    ] = 0.5,
    froc: Annotated[
        Path | None, typer.Option("--froc", help="CAMELYON16 lesion-level FROC of LESIONS_DIR (helpkit lesions --out).")
    ] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="--froc: folder of <slide_id>.xml/.geojson/.png tumour annotations "
                                       "(searched recursively); a slide without one is normal.")
    ] = None,
    mpp: Annotated[
        float | None, typer.Option(help="--froc: level-0 um/px of every slide (default: lesions.json's, else 0.243).")
    ] = None,
    mask_downsample: Annotated[
        float, typer.Option(help="--froc: downsample of level 0 that PNG masks are stored at.")
    ] = 16,
    pn_stage: Annotated[
        Path | None, typer.Option("--pn-stage", help="CAMELYON17: per-slide predictions CSV (header; slide id first, "
                                                     "then negative,itc,micro,macro or score or stage) to score.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="--pn-stage: the reference stage CSV (patient,stage; .zip and .tif rows).")
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option(help="--pn-stage with a score column: T_ITC,T_MICRO,T_MACRO, increasing.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="--pn-stage: also write the CAMELYON17 submission CSV here.")
    ] = None,
) -> None:
    """Validate a predictions file against the labelled slides and score it: AUC with a 95%
    DeLong CI, sensitivity/specificity at the Youden threshold and at --threshold, counts.

    --froc LESIONS_DIR --annotations DIR: CAMELYON16's lesion-level FROC and the slide AUC of the top detection.

    --pn-stage PRED --reference STAGES: CAMELYON17's patient pN stages and quadratic kappa."""
    from helpkit.errors import HelpkitError
    from helpkit.scoring import summarise

    if froc is not None and pn_stage is not None:
        raise HelpkitError("give --froc or --pn-stage, not both")
    if froc is not None:
        _score_froc(froc, annotations, mpp, mask_downsample, as_json)
        return
    if pn_stage is not None:
        _score_pn_stage(pn_stage, reference, thresholds, out, as_json)
        return
    if pred is None or labels is None:
        raise HelpkitError("give PRED and --labels (or --froc LESIONS_DIR, or --pn-stage PRED)")
    y, s = _load(pred, labels, strict)
    summary = summarise(y, s, threshold)
    if plot is not None:
        from helpkit.scoring.plots import plot_roc

        plot_roc({pred.name: (y, s)}, plot, title=f"ROC: {pred.name}")
    if as_json:
        typer.echo(json_text({"predictions": str(pred), **summary}))
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


def _score_froc(lesions: Path, annotations: Path | None, mpp: float | None, mask_downsample: float,
                as_json: bool) -> None:
    from helpkit.errors import HelpkitError
    from helpkit.scoring.froc import score_lesions

    if annotations is None:
        raise HelpkitError("--froc needs --annotations DIR (the tumour annotations, by slide id)")
    if mpp is not None and not mpp > 0:
        raise HelpkitError(f"--mpp must be positive, got {mpp}")
    result = score_lesions(lesions, annotations, mpp=mpp, mask_downsample=mask_downsample)
    if as_json:
        typer.echo(json_text(result))
        return
    typer.echo(f"{lesions}: {result['n_slides']} slides ({result['n_tumour_slides']} with tumour), "
               f"{result['n_lesions']} lesions, {result['n_itc_regions']} ITC regions, "
               f"{result['n_detections']} detections ({result['n_lesions_hit']} lesions hit, "
               f"{result['n_false_positives']} false positives, {result['ignored_in_itc']} in ITC regions, "
               f"{result['ignored_repeat_hits']} repeat hits)")
    for rate, sensitivity in result["sensitivity"].items():
        typer.echo(f"  sensitivity at {rate:>4} FP/slide: {sensitivity:.4f}")
    typer.echo(f"FROC {result['froc']:.4f} (mean of the six; CAMELYON16 rules)")
    auc = result["slide_auc"]
    if auc is None:
        typer.echo("slide AUC: n/a (needs tumour and normal slides)")
    else:
        typer.echo(f"slide AUC (max detection confidence) {auc['auc']:.4f} "
                   f"(95% CI {auc['ci_low']:.4f}-{auc['ci_high']:.4f}, DeLong; "
                   f"{auc['n_positive']} tumour, {auc['n_negative']} normal)")
    typer.echo("mpp from: " + ", ".join(f"{k} ({v} slides)" for k, v in result["mpp_sources"].items()))


def _score_pn_stage(pred: Path, reference: Path | None, thresholds: str | None, out: Path | None,
                    as_json: bool) -> None:
    from helpkit.errors import HelpkitError
    from helpkit.scoring.pn_stage import score_stages

    if reference is None:
        raise HelpkitError("--pn-stage needs --reference STAGES.csv (CAMELYON17 patient,stage)")
    cuts = None
    if thresholds is not None:
        try:
            cuts = [float(t) for t in thresholds.split(",")]
        except ValueError:
            raise HelpkitError(f"--thresholds must be three numbers like 0.2,0.5,0.8, got {thresholds!r}") from None
    result = score_stages(pred, reference, cuts, out)
    if as_json:
        typer.echo(json_text(result))
        return
    typer.echo(f"{pred}: {result['patients']} patients, stage agreement {result['stage_agreement']:.3f}"
               + (f", node agreement {result['node_agreement']:.3f} ({result['nodes_compared']} nodes)"
                  if result["node_agreement"] is not None else ""))
    typer.echo(f"quadratic weighted kappa {result['kappa']:.4f} (CAMELYON17)")
    if out is not None:
        typer.echo(f"stages written: {out}")


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
        typer.echo(json_text({"a": str(a), "b": str(b), **result.as_dict()}))
        return
    typer.echo(f"A {a}: AUC {_fmt_auc(result.a)}")
    typer.echo(f"B {b}: AUC {_fmt_auc(result.b)}")
    typer.echo(f"A - B = {result.difference:+.4f}, z = {result.z:.3f}, p = {result.p_value:.4g} "
               f"(paired DeLong, two-sided, {len(y)} slides)")


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``compare`` to ``app``."""
    app.command("score")(score)
    app.command("compare")(compare)
