"""CLI command: ``helpkit lesions`` (heatmaps -> CAMELYON16 lesion detections, one CSV a slide)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def lesions(
    heatmap_dir: Annotated[Path, typer.Argument(help="HEATMAP_DIR (parent of <model>/ folders) or one model folder.")],
    out: Annotated[Path, typer.Option(help="Writes <out>/<slide_id>.csv (confidence,x,y; no header) and lesions.json.")],
    model: Annotated[
        str | None, typer.Option(help="Which model's heatmaps, when HEATMAP_DIR holds several.")
    ] = None,
    floor: Annotated[float, typer.Option(help="Smoothed probability below which nothing is reported.")] = 0.5,
    radius: Annotated[
        float, typer.Option(help="Non-maximum suppression radius in microns (level-0 distance).")
    ] = 200.0,
    sigma: Annotated[
        float | None, typer.Option(help="Gaussian smoothing in microns (default: half the grid stride; 0: none).")
    ] = None,
    mpp: Annotated[
        float | None, typer.Option(help="Level-0 um/px for every slide (default: each heatmap's, else 0.25).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Only the heatmaps of this split (test: what CAMELYON16 scores).")
    ] = None,
) -> None:
    """Lesion detections from heatmaps, for CAMELYON16's FROC (helpkit score --froc): local
    maxima of the smoothed probability map above --floor, non-maximum suppression at --radius
    microns, each at its grid cell's centre in level-0 pixels."""
    from helpkit.errors import HelpkitError
    from helpkit.features.features_table import model_dirs
    from helpkit.heatmap.lesions import LesionOptions, write_lesions

    models = model_dirs([heatmap_dir])
    if model is not None:
        if model not in models:
            raise HelpkitError(f"no heatmaps of model {model!r} (found {', '.join(sorted(models))})", heatmap_dir)
        name = model
    elif len(models) == 1:
        name = next(iter(models))
    else:
        raise HelpkitError(f"heatmaps of {len(models)} models ({', '.join(sorted(models))}): pick one with --model",
                           heatmap_dir)
    options = LesionOptions(floor=floor, radius_um=radius, sigma_um=sigma, mpp=mpp)
    if split is not None and split not in ("train", "test"):
        raise HelpkitError(f"--split must be train or test, got {split!r}")
    counts = write_lesions(models[name], out, options, model=name, split=split)
    typer.echo(f"lesions: {counts['detections']} detections on {counts['slides']} slides of model {name} in {out}"
               + (f"; {counts['failed']} slides without a heatmap (empty files)" if counts["failed"] else "")
               + (f"; {counts['fallback_mpp']} slides without mpp (assumed)" if counts["fallback_mpp"] else "")
               + (f"; {counts['other_split']} slides of another split left out" if counts["other_split"] else ""))


def register(app: typer.Typer) -> None:
    """Add ``lesions`` to ``app``."""
    app.command("lesions")(lesions)
