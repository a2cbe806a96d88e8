"""CLI command ``helpkit augment-preview``: the augmentation presets drawn on patches of your slides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helpkit.cli.options import LayoutOption, geometry_options
from helpkit.errors import HelpkitError
from helpkit.slide.geometry import PatchGeometry
from helpkit.train.augment_spec import AUGMENTATIONS, augment_config, parse_overrides


@geometry_options
def augment_preview(
    data: Annotated[Path, typer.Option(help="Competition root or slide folder to draw patches from.")] = ...,
    out: Annotated[Path, typer.Option(help="PNG to write: one row per preset, one column per patch.")] = ...,
    augment: Annotated[list[str] | None, typer.Option(
        help="Preset to draw (repeatable; default: all of them, in order).")] = None,
    augment_param: Annotated[list[str] | None, typer.Option(
        "--augment-param", metavar="KEY=VALUE",
        help="Override one parameter of every drawn preset (repeatable), as in helpkit train.")] = None,
    patches: Annotated[int, typer.Option(help="Patches (columns).", min=1)] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the patch choice and of the augmentation.")] = 0,
    layout: LayoutOption = "auto",
    geometry: PatchGeometry = PatchGeometry(),
) -> None:
    """Draw a grid of augmented patches: rows = presets, columns = the same patches of --data,
    augmented as training does (margin read and all), at the geometry options' microns and size."""
    try:
        overrides = parse_overrides(augment_param or [])
        configs = {name: augment_config(name, overrides) for name in augment or AUGMENTATIONS}
    except ValueError as err:
        raise HelpkitError(str(err)) from None
    from helpkit.train.preview import write_preview

    typer.echo(f"-> {write_preview(data, out, configs, patches, geometry, layout, seed)}")


def register(app: typer.Typer) -> None:
    """Add ``helpkit augment-preview`` to ``app``."""
    app.command("augment-preview")(augment_preview)
