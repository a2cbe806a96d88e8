"""CLI command ``helpkit synth``: a synthetic competition in the HeLP or a CAMELYON layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from helpkit.defaults import MASK_DOWNSAMPLE


def synth(
    out: Annotated[Path, typer.Argument(
        help="Folder to write the competition into (train/, test/, labels.csv, truth/, synth.json).")],
    train: Annotated[int, typer.Option(
        "--train", help="Number of training slides, about half positive (at least 2: one of each class).")] = 8,
    test: Annotated[int, typer.Option(
        "--test", help="Number of test slides, about half positive; their labels go to labels.csv.")] = 4,
    size: Annotated[int, typer.Option(
        "--size", help="Level-0 side of each square slide in pixels (0.25 um/px; at least 1024).")] = 8192,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed and options give the same bytes.")] = 0,
    shift: Annotated[float, typer.Option(
        "--shift", help="Staining/scanner shift of the test slides against train (hue, saturation, "
        "brightness, blur): 0 none, 1 about as far as HeLP phase 2 moved from phase 1.")] = 0.0,
    mask_downsample: Annotated[int, typer.Option(
        help="Tumour mask PNGs are this many times smaller than level 0 (the layouts' XML polygons are "
        "traced at it).")] = MASK_DOWNSAMPLE,
    layout: Annotated[str, typer.Option(
        help="help (the HeLP layout), camelyon16 (training/{tumor,normal}, lesion_annotations/*.xml, "
        "testing/images, testing/reference.csv) or camelyon17 (center_K/patient_NNN_node_M.tif, "
        "stage_labels.csv).")] = "help",
) -> None:
    """Synthesize a competition: pyramidal JPEG TIFF slides of H&E-like tissue with tumour masks.

    Positive slides carry tumour deposits, from micro-metastases to large regions, that differ from normal tissue in nuclear size, shape and crowding rather than in mean colour.

    Test masks are kept aside in truth/mask, test labels in labels.csv; synth.json records every slide's label and tumour regions (level-0 boxes).

    With --layout camelyon16 or camelyon17 the same slides are written in that challenge's layout, with ASAP XML annotations traced from the tumour masks (every other annotated slide with an Exclusion square in its largest deposit) and the held-out labels in testing/reference.csv (with size classes) or test_stage_labels.csv.
    """
    from helpkit.synth import make_competition

    root = make_competition(out, n_train=train, n_test=test, size=size, seed=seed, shift=shift,
                            mask_downsample=mask_downsample, progress=True, layout=layout.lower())
    slides = json.loads((root / "synth.json").read_text())["slides"]
    for s in slides:
        area = sum(r["area"] for r in s["regions"])
        size = f"  {s['size_class']}" if "size_class" in s else ""
        typer.echo(f"{s['slide_id']}  {s['split']:5}  label {s['label']}  "
                   f"{len(s['regions'])} tumour regions  {area / (s['width'] * s['height']):6.2%} tumour{size}")
    typer.echo(f"{len(slides)} slides -> {root}")


def register(app: typer.Typer) -> None:
    """Add ``helpkit synth`` to ``app``."""
    app.command("synth")(synth)
