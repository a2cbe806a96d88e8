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
    """Synthesize a competition (plus a shifted phase-2 test set), build the stacked-ensemble
    image, validate it under the platform contract on both test sets, score, and write a report."""
    from helpkit.demo import run_demo

    run_demo(out, quick=quick, docker=docker, layout=layout.lower())


def report(
    run_dir: Path = typer.Argument(..., help="A run folder made by `helpkit demo` (it holds demo.json)."),
    output: Path = typer.Option(None, "-o", "--output", help="HTML file to write (default RUN_DIR/report.html)."),
) -> None:
    """One self-contained HTML page (images embedded) to judge a run: scores, ROC curves,
    heatmaps with true tumour outlines, phase 1 vs phase 2, the validator's verdict and timings."""
    from helpkit.report import build_report

    path = build_report(run_dir, output or run_dir / "report.html")
    print(path)


def register(app: typer.Typer) -> None:
    """Add ``demo`` and ``report`` to ``app``."""
    app.command("demo")(demo)
    app.command("report")(report)
