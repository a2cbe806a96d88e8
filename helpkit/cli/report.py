"""CLI commands: ``helpkit demo`` (the main job end to end) and ``helpkit report``."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Argument(Path("demo-run"), help="Run folder: data, validation, predictions, report.html."),
    quick: bool = typer.Option(False, "--quick", help="A small competition and short budgets (a few minutes)."),
    docker: bool = typer.Option(True, "--docker/--no-docker",
                                help="Build and validate the image in Docker (default), or run the stages "
                                "on this machine without containers and without a verdict."),
    layout: str = typer.Option("help", "--layout", help="The synthetic competition's layout: help (HeLP), "
                               "camelyon16 or camelyon17 (ASAP XML annotations, reference.csv / stage CSV)."),
) -> None:
    """Synthesize a competition (plus a phase-2 test set from the help22 preset), build the stacked-ensemble
    image, validate it under the platform contract on both test sets, score, and write a report."""
    from helpkit.demo import run_demo

    run_demo(out, quick=quick, docker=docker, layout=layout.lower())


def report(
    run_dir: Path = typer.Argument(..., help="A run folder: `helpkit demo`'s (demo.json), a `helpkit submission "
                                   "validate --work-dir` folder (model/, output/), or a model dir (pipeline.json)."),
    output: Path = typer.Option(None, "-o", "--output", help="HTML file to write (default RUN_DIR/report.html)."),
    validation: Path = typer.Option(None, "--validation", help="The validator's JSON report (default: a *.json with "
                                    "a verdict in RUN_DIR, or beside it naming it)."),
    data: Path = typer.Option(None, "--data", help="The competition (test slides, labels.csv, truth masks); default: "
                              "the one the validation report names."),
    output_csv: Path = typer.Option(None, "--output-csv", help="With a model dir: a test output.csv to judge."),
    labels: Path = typer.Option(None, "--labels", help="Labels of the test slides (default: the competition's)."),
    heatmaps: bool = typer.Option(True, "--heatmaps/--no-heatmaps", help="Make the test slides' heatmaps and "
                                  "per-model scores on this machine from the trained model when no earlier report "
                                  "left them (TensorFlow; kept in RUN_DIR/report-inference)."),
) -> None:
    """One self-contained HTML page (images embedded) to judge a run: provenance (version, commit, image
    digest), stage time and memory against their limits, per-slide tables with the misclassified slides'
    heatmaps first, score distributions, ROC curves, LightGBM feature importance, training curves, the
    candidate ensembles, log tails and the configuration."""
    from helpkit.report import build_report

    path = build_report(run_dir, output or run_dir / "report.html", validation=validation, data=data,
                        output_csv=output_csv, labels=labels, heatmaps=heatmaps)
    print(path)


def register(app: typer.Typer) -> None:
    """Add ``demo`` and ``report`` to ``app``."""
    app.command("demo")(demo)
    app.command("report")(report)
