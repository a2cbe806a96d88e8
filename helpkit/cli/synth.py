"""CLI command ``helpkit synth``: a synthetic competition in the HeLP or a CAMELYON layout."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer

from helpkit.defaults import MASK_DOWNSAMPLE
from helpkit.synth.presets import PRESETS


def synth(
    out: Annotated[Path, typer.Argument(
        help="Folder to write the competition into (train/, test/, labels.csv, truth/, synth.json).")],
    train: Annotated[int, typer.Option(
        "--train", help="Number of training slides, about half positive (at least 2: one of each class).")] = 8,
    test: Annotated[int, typer.Option(
        "--test", help="Number of test slides, about half positive; their labels go to labels.csv.")] = 4,
    size: Annotated[int, typer.Option(
        "--size", help="Level-0 side of each square slide in pixels at the base 1 um/px, so also its side in "
        "microns (at least 1024; macro-metastases need about 4096); a preset scanned at 0.5 um/px writes "
        "twice the pixels of the same tissue.")] = 4096,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed and options give the same bytes.")] = 0,
    shift: Annotated[float, typer.Option(
        "--shift", help="Moves the test slides' stain centre towards the bounds of the stain space (bluer, "
        "paler, more haematoxylin, less eosin, softer focus): 0 none, 1 at the bounds (more is clipped).")] = 0.0,
    phase1: Annotated[str, typer.Option(
        "--phase1", help="Preset of the training slides (and of the test slides without --phase2), one of: "
        + ", ".join(PRESETS) + " (listed above).")] = "default",
    phase2: Annotated[str | None, typer.Option(
        "--phase2", help="Preset of the test slides (a phase-2 test set), one of: " + ", ".join(PRESETS) + ".")
    ] = None,
    mask_downsample: Annotated[int, typer.Option(
        help="Tumour mask PNGs are this many times smaller than level 0 (the layouts' XML polygons are "
        "traced at it).")] = MASK_DOWNSAMPLE,
    layout: Annotated[str, typer.Option(
        help="help (the HeLP layout), camelyon16 (training/{tumor,normal}, lesion_annotations/*.xml, "
        "testing/images, testing/reference.csv) or camelyon17 (center_K/patient_NNN_node_M.tif, "
        "stage_labels.csv).")] = "help",
) -> None:
    """Synthesize a competition: pyramidal JPEG TIFF slides of H&E-like tissue with tumour masks.

    Positive slides carry tumour deposits (their largest one a macro-metastasis, a micro-metastasis or isolated tumour cells, as exact quotas per split), that differ from normal tissue in nuclear size, shape and crowding rather than in mean colour; some negatives carry tumour mimics.

    Each split is drawn from a preset (stain space, scanner mpp and JPEG quality, deposit mix, mimic share, artefact rates): train from --phase1 ('default'), test from --phase2 when given (a phase-2 test set).

    Cost: about 0.4 s of CPU per level-0 megapixel (a 4096 px slide at 1 um/px about 6 s), in bounded memory.

    Test masks are kept aside in truth/mask, test labels and size classes in labels.csv; synth.json records the presets and every slide's label, tumour regions (level-0 boxes), largest deposit, mimics, artefacts and look.

    With --layout camelyon16 or camelyon17 the same slides are written in that challenge's layout, with ASAP XML annotations traced from the tumour masks (every other annotated slide with an Exclusion square in its largest deposit) and the held-out labels in testing/reference.csv (with size classes) or test_stage_labels.csv.
    """
    from helpkit.synth import make_competition

    root = make_competition(out, n_train=train, n_test=test, size=size, seed=seed, shift=shift,
                            mask_downsample=mask_downsample, progress=True, layout=layout.lower(),
                            phase1=phase1, phase2=phase2)
    slides = json.loads((root / "synth.json").read_text())["slides"]
    for s in slides:
        area = sum(r["area"] for r in s["regions"])
        typer.echo(f"{s['slide_id']}  {s['split']:5}  label {s['label']}  {s['size_class']:8}  "
                   f"{len(s['regions'])} tumour regions  {area / (s['width'] * s['height']):6.2%} tumour"
                   f"{'  mimics' if s['mimics'] else ''}")
    typer.echo(f"{len(slides)} slides -> {root}")


def register(app: typer.Typer) -> None:
    """Add ``helpkit synth`` to ``app``."""
    presets = "\n\n".join(f"{spec.name}: {spec.summary()}." for spec in PRESETS.values())
    app.command("synth", help=f"{inspect.cleandoc(synth.__doc__ or '')}\n\nPresets:\n\n{presets}")(synth)
