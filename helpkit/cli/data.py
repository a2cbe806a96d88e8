"""CLI command ``helpkit index``: the patch index of a competition's slides."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from helpkit.cli.options import LayoutOption, SchedulerOption, TumourThresholdOption, WorkersOption, geometry_options
from helpkit.slide.slide_defaults import MIN_TISSUE, TUMOUR_THRESHOLD
from helpkit.slide.geometry import PatchGeometry


class Split(str, Enum):
    """Which slides to index."""

    train = "train"
    test = "test"
    all = "all"


@geometry_options
def index(
    data: Annotated[Path, typer.Argument(
        help="Competition root (train/ and/or test/), a train folder (image/, mask/) or a test folder of slides.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Patch index to write: .parquet, or .csv by suffix.")],
    split: Annotated[Split, typer.Option(
        help="Slides to index. Test slides have no masks: their tissue patches get label -1.")] = Split.train,
    tumour_threshold: TumourThresholdOption = TUMOUR_THRESHOLD,
    min_tissue: Annotated[float, typer.Option(
        help="Keep patches with at least this share of tissue (annotated tumour counts as tissue).")] = MIN_TISSUE,
    max_per_class: Annotated[int | None, typer.Option(
        help="At most this many patches of each class per slide (default: no cap).")] = None,
    balance: Annotated[bool, typer.Option(
        help="On a slide with tumour, keep as many normal patches as tumour patches.")] = True,
    seed: Annotated[int, typer.Option(help="Sampling seed: same seed, same patches.")] = 0,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Training-label problems (a mask that contradicts its class folder, a class folder "
        "not in lower case) are errors, not warnings.")] = False,
    layout: LayoutOption = "auto",
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    parts: Annotated[Path | None, typer.Option(
        help="Folder of per-slide parts (<slide_id>.parquet): a rerun reuses a slide's part while its "
        "files and these options are unchanged; a killed run resumes. Default: OUT's name + .slides beside it."
    )] = None,
    geometry: PatchGeometry = PatchGeometry(),
) -> None:
    """Index slides: tissue, patch grid, labels from the tumour masks, per-slide sampling.

    Writes one table (slide_id, path, slide_label, mpp, patch_size, stride, tissue_mpp, row, col, x, y, tissue_frac, tumour_frac, label; x, y level-0) and prints per-slide counts.

    A slide that cannot be opened or read is skipped and listed at the end; the exit code is 1 only when no slide could be indexed.
    """
    from helpkit.data import check_labels, discover
    from helpkit.slide.index import IndexConfig, index_dataset, write_index
    from helpkit.slidemap import Executor

    slides = check_labels(discover(data, None if split is Split.all else split.value, layout), strict)
    config = IndexConfig(geometry=geometry, tumour_threshold=tumour_threshold, min_tissue=min_tissue,
                         max_per_class=max_per_class, balance=balance, seed=seed)
    parts = parts or out.with_name(f"{out.name}.slides")
    result = index_dataset(slides, config, executor=Executor.from_env(scheduler, workers), parts_dir=parts)
    if not result.summary.empty:
        typer.echo(result.summary.to_string(index=False))
    for slide_id, error in result.failures:
        typer.echo(f"helpkit: failed: {slide_id}: {error}", err=True)
    if result.summary.empty:
        typer.echo(f"helpkit: error: none of the {len(slides)} slides could be indexed", err=True)
        raise typer.Exit(1)
    write_index(result.patches, out)
    labels = result.patches["label"].value_counts()
    typer.echo(
        f"{len(result.patches)} patches from {len(result.summary)} slides "
        f"({labels.get(1, 0)} tumour, {labels.get(0, 0)} normal, {labels.get(-1, 0)} unlabelled) -> {out}"
        + (f"; {len(result.failures)} slides failed" if result.failures else "")
    )


def register(app: typer.Typer) -> None:
    """Add ``helpkit index`` to ``app``."""
    app.command("index")(index)
