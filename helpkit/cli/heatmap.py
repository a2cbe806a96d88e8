"""CLI commands: ``helpkit heatmap`` (runs over a dataset) and ``helpkit features`` (the table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helpkit.cli.options import LayoutOption, SchedulerOption, WorkersOption
from helpkit.heatmap.tta_spec import DEFAULT_TTA, TTA_HELP


def heatmap(
    model: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="Training run folder (helpkit train --out); repeat for several models."),
    ],
    data: Annotated[Path, typer.Option(help="Dataset root (train/, test/; or a CAMELYON layout, see --layout).")],
    out: Annotated[Path, typer.Option(help="HEATMAP_DIR: writes <out>/<model>/<slide_id>.npz.")],
    stride: Annotated[
        int | None, typer.Option(help="Grid stride in pixels at the model's mpp (default: the run's stride).")
    ] = None,
    batch: Annotated[int, typer.Option(help="Patches per model call; larger keeps the model busier; 0 picks it "
                                       "by measuring the models (about a second per run).")] = 256,
    read_threads: Annotated[
        int | None, typer.Option(help="Patch-reading threads per slide (default: CPU count + 2, at most 8).")
    ] = None,
    png: Annotated[
        bool, typer.Option("--png", help="Also write <slide_id>.png: the heatmap on the thumbnail.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute heatmaps that are already current.")] = False,
    mixed_precision: Annotated[bool, typer.Option(
        "--mixed-precision", help="Run the models in mixed_float16 (float32 output): faster on a GPU with "
        "tensor cores, slower on a CPU; probabilities within 0.02 of float32.")] = False,
    xla: Annotated[bool, typer.Option(
        "--xla", help="Run the models' forward pass XLA-compiled (probabilities within 1e-4 of without).")] = False,
    tta: Annotated[str, typer.Option(help=TTA_HELP)] = DEFAULT_TTA,
    layout: LayoutOption = "auto",
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
) -> None:
    """Heatmap every tissue patch of every slide, out of fold: a training slide is scored by the
    fold model that held it out, a test slide by the mean of all fold models."""
    from helpkit.errors import HelpkitError
    from helpkit.heatmap.make import Options, make_heatmaps, slide_records
    from helpkit.heatmap.tta import tta_transforms
    from helpkit.slidemap import Executor

    if batch < 0 or (stride is not None and stride <= 0) or (read_threads is not None and read_threads <= 0):
        raise HelpkitError("--stride and --read-threads must be positive, --batch positive or 0 (measured)")
    tta_transforms(tta)  # an unknown --tta fails before the slides are listed
    counts = make_heatmaps(
        model, slide_records(data, layout=layout), out,
        Options(stride=stride, batch_size=batch, workers=read_threads, png=png, force=force,
                mixed_precision=mixed_precision, xla=xla, tta=tta),
        executor=Executor.from_env(scheduler, workers),
    )
    typer.echo(f"heatmaps: {counts['written']} written, {counts['skipped']} already current, "
               f"{counts['failed']} failed (error recorded) in {out}")


def features(
    heatmap_dirs: Annotated[
        list[Path], typer.Argument(help="HEATMAP_DIR(s): parents of <model>/ folders, or model folders.")
    ],
    out: Annotated[Path, typer.Option(help="Features table to write (parquet), one row per slide.")],
    force: Annotated[bool, typer.Option("--force", help="Rewrite even if the inputs have not changed.")] = False,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
) -> None:
    """Slide-level features (<model>__<feature> columns) of every heatmap, in one parquet table."""
    from helpkit.features import build_features
    from helpkit.slidemap import Executor

    if build_features(heatmap_dirs, out, force=force, executor=Executor.from_env(scheduler, workers)):
        typer.echo(f"features: wrote {out}")
    else:
        typer.echo(f"features: {out} is current (inputs unchanged; --force to rewrite)")


def register(app: typer.Typer) -> None:
    """Add ``heatmap`` and ``features`` to ``app``."""
    app.command("heatmap")(heatmap)
    app.command("features")(features)
