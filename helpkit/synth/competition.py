"""One synthetic slide (``make_slide``) and a whole competition in the HeLP layout."""

from __future__ import annotations

import os
import shutil
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from helpkit.defaults import MASK_DOWNSAMPLE
from helpkit.errors import HelpkitError
from helpkit.io import write_json, write_text
from helpkit.progress import track
from helpkit.synth.plan import SlidePlan, make_plan, tumour_regions, write_mask
from helpkit.synth.stain import look_for
from helpkit.synth.tiff import TILE, write_pyramid
from helpkit.synth.tissue_render import render_tile

MPP = 0.25
"""Microns per level-0 pixel (a 40x scanner)."""

MIN_SIZE = 1024
"""Smallest level-0 side: room for tissue, a margin and a micro-metastasis."""


def _constant_tile(plan: SlidePlan, ds: float, x0: int, y0: int) -> Hashable | None:
    """'margin' or 'glass' when the tile is all non-scanned or all empty glass."""
    x1, y1 = x0 + TILE * ds, y0 + TILE * ds
    if x1 <= plan.margin[0] or y1 <= plan.margin[1]:
        return "margin"
    if plan.tissue.window_max(x0, y0, x1, y1) > 0:
        return None
    if x0 >= plan.margin[0] and y0 >= plan.margin[1]:
        return "glass"
    return None


def make_slide(
    path: str | Path,
    size: int | tuple[int, int],
    seed: int,
    positive: bool,
    shift: float = 0.0,
    mask_path: str | Path | None = None,
    mask_downsample: int = MASK_DOWNSAMPLE,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write one synthetic slide (pyramidal TIFF) and, if asked, its tumour mask PNG.

    Returns the ground truth: size, margin, tumour regions (level-0 boxes and areas, from
    the mask at ``mask_downsample``), the look used. Memory stays bounded whatever ``size``.
    ``workers`` rendering threads (default: the CPU count, at most 8) never change the bytes.
    """
    width, height = (size, size) if isinstance(size, int) else size
    if min(width, height) < MIN_SIZE:
        raise HelpkitError(f"slide size {width}x{height} is too small (minimum {MIN_SIZE})", path)
    if mask_downsample < 1:
        raise HelpkitError(f"mask downsample must be >= 1, got {mask_downsample}", mask_path)
    plan = make_plan(width, height, seed, positive)
    look = look_for(seed, shift)
    write_pyramid(
        path,
        width,
        height,
        MPP,
        render=lambda ds, x0, y0: render_tile(plan, look, ds, x0, y0, TILE),
        constant=lambda ds, x0, y0: _constant_tile(plan, ds, x0, y0),
        constants={
            "margin": np.zeros((TILE, TILE, 3), np.uint8),
            "glass": np.broadcast_to(look.background(), (TILE, TILE, 3)).copy(),
        },
        workers=workers or min(8, os.cpu_count() or 1),
    )
    mask = plan.tumour_mask(mask_downsample)
    if mask_path is not None:
        write_mask(mask_path, mask)
    return {
        "width": width,
        "height": height,
        "mpp": MPP,
        "seed": seed,
        "positive": positive,
        "shift": shift,
        "margin": {"left": plan.margin[0], "top": plan.margin[1]},
        "mask_downsample": mask_downsample,
        "regions": tumour_regions(mask, mask_downsample),
        "look": look.__dict__,
    }


def _labels(rng: np.random.Generator, n: int) -> list[int]:
    """About half positive, at least one of each class when n >= 2, in random order."""
    n_pos = n // 2 if n >= 2 else int(rng.integers(2))
    labels = [1] * n_pos + [0] * (n - n_pos)
    rng.shuffle(labels)
    return labels


def _clear(out: Path) -> None:
    """Make ``out`` ready: new or empty, or an earlier competition whose slides are removed
    (stale slides from a larger run would otherwise be discovered as part of this one)."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "synth.json").is_file():
        raise HelpkitError("folder is not empty and holds no synth.json; choose a new folder", out)
    for name in ("train", "test", "truth", "training", "testing"):  # an earlier competition in any layout
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("labels.csv", "test_stage_labels.csv"):
        (out / name).unlink(missing_ok=True)


def make_competition(
    out: str | Path,
    n_train: int = 8,
    n_test: int = 4,
    size: int = 8192,
    seed: int = 0,
    shift: float = 0.0,
    mask_downsample: int = MASK_DOWNSAMPLE,
    progress: bool = False,
    layout: str = "help",
) -> Path:
    """Write a synthetic competition in the HeLP layout under ``out`` and return ``out``
    (``layout`` 'camelyon16' / 'camelyon17': that layout instead, ``helpkit.synth.camelyon_writer``).

    Train slides have the phase-1 look; ``shift`` moves the test slides' staining and
    scanner appearance (0 none, 1 about as far as HeLP phase 2 moved from phase 1).
    Writing again into a folder made by this function replaces its competition.
    """
    out = Path(out)
    if n_train < 2:
        raise HelpkitError(f"need at least 2 training slides (one per class), got {n_train}", out)
    if n_test < 1:
        raise HelpkitError(f"need at least 1 test slide, got {n_test}", out)
    if size < MIN_SIZE:
        raise HelpkitError(f"slide size {size} is too small (minimum {MIN_SIZE})", out)
    if seed < 0:
        raise HelpkitError(f"seed must be >= 0, got {seed}", out)
    if mask_downsample < 1:
        raise HelpkitError(f"mask downsample must be >= 1, got {mask_downsample}", out)
    if layout not in ("help", "camelyon16", "camelyon17"):
        raise HelpkitError(f"unknown synthetic layout {layout!r}: choose help, camelyon16 or camelyon17")
    _clear(out)
    if layout != "help":
        from helpkit.synth.camelyon_writer import make_layout_competition

        return make_layout_competition(out, layout, n_train=n_train, n_test=n_test, size=size, seed=seed,
                                       shift=shift, mask_downsample=mask_downsample, progress=progress)
    rng = np.random.default_rng([seed, 0xC0])
    order = [("train", label) for label in _labels(rng, n_train)]
    order += [("test", label) for label in _labels(rng, n_test)]
    slide_seeds = np.random.SeedSequence(seed).generate_state(len(order))
    width = len(str(max(999, len(order))))

    slides = []
    items = enumerate(order)
    for k, (split, label) in track(items, "synth", total=len(order)) if progress else items:
        slide_id = f"Slide{k + 1:0{width}d}"
        group = "positive" if label else "negative"
        if split == "train":
            image = Path("train/image") / group / f"{slide_id}.tiff"
            mask = Path("train/mask") / group / f"{slide_id}.png"
        else:
            image = Path("test") / f"{slide_id}.tiff"
            mask = Path("truth/mask") / f"{slide_id}.png"
        truth = make_slide(
            out / image,
            size,
            int(slide_seeds[k]),
            bool(label),
            shift=shift if split == "test" else 0.0,
            mask_path=out / mask,
            mask_downsample=mask_downsample,
        )
        slides.append(
            {"slide_id": slide_id, "split": split, "label": label, "path": image.as_posix(),
             "mask_path": mask.as_posix(), **truth}
        )

    test_rows = [f"{s['slide_id']},{s['label']}" for s in slides if s["split"] == "test"]
    write_text(out / "labels.csv", "slide_id,label\n" + "\n".join(test_rows) + "\n")
    params = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed, "shift": shift,
              "mask_downsample": mask_downsample, "mpp": MPP, "tile": TILE}
    write_json(out / "synth.json", {"params": params, "slides": slides})
    return out
