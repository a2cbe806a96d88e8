"""CLI command ``helpkit train``: patch CNN folds by slide into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helpkit.cli.options import LayoutOption, TumourThresholdOption, geometry_options
from helpkit.errors import HelpkitError
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.slide_defaults import TUMOUR_THRESHOLD
from helpkit.slide.stain_spec import DEFAULT_NORMALISE, NORMALISE_HELP, NORMALISERS
from helpkit.train.augment_spec import AUGMENT_HELP, DEFAULT_AUGMENT, augment_config, parse_overrides


EXIT_RESERVE_S = 10.0
"""Seconds of --time-budget kept for writing the last files and shutting TensorFlow down."""


def _read_index(path: Path):  # -> pd.DataFrame (pandas imported lazily)
    import pandas as pd

    if not path.is_file():
        raise HelpkitError("patch index not found", path)
    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise HelpkitError(f"cannot read patch index ({err})", path) from err


def _index_from_data(data: Path, geometry: PatchGeometry, max_per_class: int | None, seed: int,
                     strict: bool = False, layout: str | None = None, tumour_threshold: float = TUMOUR_THRESHOLD):
    from helpkit.data import check_labels, discover
    from helpkit.slide.index import IndexConfig, index_dataset

    slides = check_labels(discover(data, "train", layout), strict)
    result = index_dataset(slides, IndexConfig(geometry=geometry, tumour_threshold=tumour_threshold,
                                               max_per_class=max_per_class, seed=seed))
    for slide_id, error in result.failures:
        typer.echo(f"helpkit: failed: {slide_id}: {error}", err=True)
    return result.patches


@geometry_options
def train(
    model: Annotated[str, typer.Option(help="Architecture: simple, unet or inception.")] = "simple",
    out: Annotated[Path, typer.Option(
        help="Run folder: run.json and fold_<k>/ (model.keras, model.json, log.csv). "
        "Rerunning the same command resumes an interrupted run.")] = ...,
    data: Annotated[Path | None, typer.Option(
        help="Competition root or train folder; its patch index is built here unless --index is given.")] = None,
    index: Annotated[Path | None, typer.Option(
        help="Patch index from `helpkit index` (.parquet or .csv) instead of indexing --data.")] = None,
    folds: Annotated[int, typer.Option(
        help="Folds by slide, stratified by slide label (1: one stratified 25% hold-out).")] = 3,
    epochs: Annotated[int, typer.Option(help="Most epochs per fold (early stopping may end sooner).")] = 30,
    time_budget: Annotated[float | None, typer.Option(
        help="Minutes for the whole command; training stops and saves in time (folds share it).")] = None,
    width: Annotated[float, typer.Option(help="Channel multiplier of the architecture.")] = 1.0,
    batch: Annotated[int, typer.Option(help="Patches per training batch.")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Initial Adam learning rate.")] = 1e-3,
    cache: Annotated[bool, typer.Option(
        help="Read every patch once into a memory-mapped cache (RUN_DIR/cache) and train from it; "
        "--no-cache reads slides with threaded readers every epoch.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of folds, weights, shuffling and augmentation.")] = 0,
    augment: Annotated[str, typer.Option(help=AUGMENT_HELP)] = DEFAULT_AUGMENT,
    augment_param: Annotated[list[str] | None, typer.Option(
        "--augment-param", metavar="KEY=VALUE", help="Override one parameter of the --augment preset "
        "(repeatable), e.g. jpeg=0 or hed_scale=0.05: the fields of AugmentConfig, see docs/augmentation.md.")] = None,
    normalise: Annotated[str, typer.Option(help=NORMALISE_HELP)] = DEFAULT_NORMALISE,
    name: Annotated[str | None, typer.Option(help="Run name used by heatmaps and features (default: folder name).")] = None,
    max_per_class: Annotated[int | None, typer.Option(
        help="With --data: at most this many patches of each class per slide.")] = None,
    tumour_threshold: TumourThresholdOption = TUMOUR_THRESHOLD,
    strict: Annotated[bool, typer.Option(
        "--strict", help="With --data: training-label problems (a mask that contradicts its class folder, "
        "a class folder not in lower case) are errors, not warnings.")] = False,
    layout: LayoutOption = "auto",
    mixed_precision: Annotated[bool, typer.Option(
        "--mixed-precision", help="Train in mixed_float16 (float32 variables and output, loss scaling): "
        "faster on a GPU with tensor cores, slower on a CPU.")] = False,
    xla: Annotated[bool | None, typer.Option(
        "--xla/--no-xla", help="XLA-compile the train step (default: Keras' auto, on a GPU only).",
        show_default=False)] = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="After training, also write the run to this new folder without its patch cache and "
        "checkpoints, ready to ship in a submission (helpkit export RUN_DIR DIR does the same later).")] = None,
    geometry: PatchGeometry = PatchGeometry(),
) -> None:
    """Train a patch CNN per fold by slide: Adam, class weights, LR schedule, early stopping,
    a checkpoint each epoch, resume after a kill, and an optional time budget.

    The geometry options (--mpp, --patch-size, --stride, --tissue-mpp) and --tumour-threshold
    apply with --data; with --index the index's own geometry and labels are used."""
    import time

    start = time.monotonic()
    if (data is None) == (index is None):
        raise HelpkitError("give exactly one of --data (index the slides here) or --index (a patch index)")
    if normalise not in NORMALISERS:
        raise HelpkitError(f"unknown stain normalisation {normalise!r}: choose {', '.join(NORMALISERS)}")
    try:
        augmentation = augment_config(augment, parse_overrides(augment_param or []))
    except ValueError as err:
        raise HelpkitError(str(err)) from None
    from helpkit.models import build
    from helpkit.train.fit import TrainConfig, train_run

    if index is not None:
        if tumour_threshold != TUMOUR_THRESHOLD:
            raise HelpkitError("--tumour-threshold labels the patches of --data; a patch index from --index keeps "
                               "its own labels (helpkit index --tumour-threshold)")
        patches = _read_index(index)
    else:
        build(model, geometry.patch_size, width)  # a bad model, size or width fails before the slow indexing
        patches = _index_from_data(data, geometry, max_per_class, seed, strict, layout, tumour_threshold)
    config = TrainConfig(model=model, width=width, folds=folds, epochs=epochs, batch_size=batch,
                         learning_rate=learning_rate, seed=seed, cache=cache, augmentation=augmentation,
                         mixed_precision=mixed_precision, xla=xla, normalise=normalise)
    budget_s = None if time_budget is None else time_budget * 60 - (time.monotonic() - start) - EXIT_RESERVE_S
    run = train_run(patches, out, config, name=name, time_budget_s=budget_s)
    import json

    for fold in run.folds:
        metrics = json.loads((fold.model_path.parent / "model.json").read_text())["metrics"]
        auc = "n/a" if metrics["val_auc"] is None else f"{metrics['val_auc']:.4f}"
        typer.echo(f"fold {fold.index}: val patch AUC {auc}, accuracy {metrics['val_accuracy']:.4f}, "
                   f"{metrics['epochs_done']} epochs ({metrics['stopped']}), {metrics['seconds']:.0f} s")
    typer.echo(f"run '{run.name}' -> {out}")
    if export is not None:
        from helpkit.train.export import export_run

        files, size = export_run(out, export)
        typer.echo(f"exported {files} files ({size / 2**20:.1f} MiB) -> {export}")


def register(app: typer.Typer) -> None:
    """Add ``helpkit train`` to ``app``."""
    app.command("train")(train)
