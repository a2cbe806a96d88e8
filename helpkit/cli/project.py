"""CLI commands: ``helpkit init`` (a project), ``helpkit import-model`` and ``helpkit export`` (run folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helpkit.slide.geometry import GEOMETRY_FIELDS


def init(
    folder: Annotated[Path, typer.Argument(help="The project folder to create (new or empty).")],
    example: Annotated[str, typer.Option(
        help="Which shipped example submission to copy into submissions/ (example, simple-maxprob, "
        "stacked-ensemble, demo-quick, demo-stacked).")] = "example",
) -> None:
    """Make a helpkit project: submissions/<example>/, a README stub and a .gitignore.

    Run helpkit from inside it: `helpkit submission build example` renders build/example/ there,
    its wheelhouse cache goes to build/wheelhouse-cache/ (or $HELPKIT_CACHE_DIR), and the first
    build writes submissions/example/submission.lock."""
    from helpkit.project import init_project

    made = init_project(folder, example)
    typer.echo(f"project {made}: submissions/{example}/submission.toml, README.md, .gitignore")
    typer.echo(f"next: cd {folder} && helpkit submission build {example}")


def import_model(
    model: Annotated[Path, typer.Argument(help="A Keras model file (.keras; .h5 too) saved outside helpkit.")],
    out: Annotated[Path, typer.Option(help="RUN_DIR to create: run.json, fold_0/model.keras, fold_0/model.json.")],
    patch_size: Annotated[int, typer.Option(help=GEOMETRY_FIELDS["patch_size"][2])],
    mpp: Annotated[float, typer.Option(help=GEOMETRY_FIELDS["mpp"][2])],
    stride: Annotated[int | None, typer.Option(help=GEOMETRY_FIELDS["stride"][2])] = None,
    tissue_mpp: Annotated[float, typer.Option(help=GEOMETRY_FIELDS["tissue_mpp"][2])] = GEOMETRY_FIELDS["tissue_mpp"][1],
    name: Annotated[str | None, typer.Option(help="Run name in heatmap folders and feature columns "
                                                  "(default: the RUN_DIR folder name).")] = None,
) -> None:
    """Make a run folder of your own Keras model, used by heatmap, features and submissions as helpkit's own.

    The model must take uint8 RGB patches, shape (batch, P, P, 3) with values 0-255, and return
    (batch, 1) tumour probabilities in [0, 1]: any normalisation belongs inside the model (a
    Rescaling layer). It is loaded and run on a test batch before anything is written."""
    from helpkit.slide.geometry import PatchGeometry
    from helpkit.train.export import import_model as run_import

    geometry = PatchGeometry(mpp=mpp, patch_size=patch_size, stride=stride, tissue_mpp=tissue_mpp)
    run = run_import(model, out, geometry, name=name)
    typer.echo(f"run '{run.name}' -> {out} ({geometry.key()}, 1 fold: every slide is scored by this model)")


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (helpkit train --out, or import-model).")],
    out: Annotated[Path, typer.Argument(help="Folder to write (new or empty): the run, ready to ship.")],
) -> None:
    """Copy a run folder without its patch cache and checkpoints: run.json and each fold's model.keras,
    model.json and log.csv, ready to ship in a submission (weights = "..." or ship = [...])."""
    from helpkit.train.export import export_run

    files, size = export_run(run_dir, out)
    typer.echo(f"exported {files} files ({size / 2**20:.1f} MiB) -> {out}")


def register(app: typer.Typer) -> None:
    """Add ``init``, ``import-model`` and ``export`` to ``app``."""
    app.command("init")(init)
    app.command("import-model")(import_model)
    app.command("export")(export)
