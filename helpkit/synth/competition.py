"""One synthetic slide (``make_slide``) and a whole competition in the HeLP layout.

Cost, measured on a shared 2-core machine: about 0.4 s of CPU per level-0 megapixel (a
4096 px slide at the base 1 um/px, 4 mm a side: about 6 s; the same tissue at 0.5 um/px about
four times that), tile by tile in under 200 MB whatever the size.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpkit.defaults import MASK_DOWNSAMPLE
from helpkit.errors import HelpkitError
from helpkit.io import write_json, write_text
from helpkit.layouts import size_class
from helpkit.progress import track
from helpkit.synth.artefacts import Box
from helpkit.synth.plan import SlidePlan, make_plan, min_size, tumour_regions, write_mask
from helpkit.synth.presets import DEPOSITS, PRESETS, SplitSpec, get_preset
from helpkit.synth.stain import draw_look
from helpkit.synth.tiff import TILE, write_pyramid
from helpkit.synth.tissue_render import render_tile

MPP = 1.0
"""Base microns per level-0 pixel (a 10x scan); ``size`` arguments count pixels at it. Coarser
than a diagnostic 20x/40x scan so a 4 mm node section is 4096 px and a benchmark of hundreds of
slides renders in minutes on CPU cores; geometry is in microns, so nothing downstream depends on
it, and the ``scanner`` preset writes the same tissue at 0.5 um/px."""


def generator_version() -> str:
    """A hash of the generator's source (the modules of ``helpkit.synth`` but ``presets``, whose
    numbers synth.json records in full): recorded in synth.json, so data drawn by another version
    of the generator is never reused as if current, while recalibrating one preset redraws only
    the splits drawn from it."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(p for p in Path(__file__).parent.glob("*.py") if p.name != "presets.py"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()

MIN_SIZE = 1024
"""Smallest level-0 side: room for tissue, a margin and a micro-metastasis."""


def _constant_tile(plan: SlidePlan, boxes: list[Box], ds: float, x0: int, y0: int) -> Hashable | None:
    """'margin' or 'glass' when the tile is all non-scanned or all empty glass (no tissue, no
    artefact: a pen stroke may cross glass)."""
    x1, y1 = x0 + TILE * ds, y0 + TILE * ds
    if x1 <= plan.margin[0] or y1 <= plan.margin[1]:
        return "margin"
    if plan.tissue.window_max(x0, y0, x1, y1) > 0:
        return None
    if any(bx0 < x1 and x0 < bx1 and by0 < y1 and y0 < by1 for bx0, by0, bx1, by1 in boxes):
        return None
    if x0 >= plan.margin[0] and y0 >= plan.margin[1]:
        return "glass"
    return None


def is_current(out: str | Path, **params: Any) -> bool:
    """Whether ``out`` holds a finished competition that ``make_competition(out, **params)`` would
    draw now: the same parameters (``phase1`` 'default', no ``phase2``, ``layout`` 'help' when not given), the
    presets' numbers as they are now and this generator's source. Callers reuse such data and
    redraw anything else."""
    import json

    from helpkit.layouts import labels_file

    try:
        made = json.loads((Path(out) / "synth.json").read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    params = {"phase1": "default", "phase2": None, "layout": "help"} | params
    names = [params["phase1"]] + ([params["phase2"]] if params.get("phase2") else [])
    presets = json.loads(json.dumps({name: asdict(get_preset(name)) for name in names}))
    return (all(made.get(key, "help" if key == "layout" else None) == value for key, value in params.items())
            and made.get("presets") == presets and made.get("generator") == generator_version()
            and labels_file(Path(out)).is_file())


def slide_side(size: int, mpp: float) -> int:
    """Level-0 pixels at ``mpp`` of a side that is ``size`` pixels at the base ``MPP`` (same tissue)."""
    return int(round(size * MPP / mpp))


def slide_plan(width: int, height: int, seed: int, positive: bool, spec: SplitSpec,
               deposit: str | None = None, mimics: bool = False) -> SlidePlan:
    """The plan ``make_slide`` draws (level-0 ``width`` x ``height`` at ``spec.mpp``)."""
    return make_plan(width, height, seed, positive, mpp=spec.mpp, deposit=deposit, mimics=mimics,
                     artefacts=spec.artefacts)


def largest_deposit_um(regions: list[dict[str, int]], mpp: float) -> float:
    """Longest side of the largest tumour region's level-0 box, in microns (0 without tumour)."""
    return max((max(r["w"], r["h"]) * mpp for r in regions), default=0.0)


def make_slide(
    path: str | Path,
    size: int | tuple[int, int],
    seed: int,
    positive: bool,
    shift: float = 0.0,
    mask_path: str | Path | None = None,
    mask_downsample: int = MASK_DOWNSAMPLE,
    workers: int | None = None,
    *,
    spec: SplitSpec | None = None,
    deposit: str | None = None,
    mimics: bool = False,
) -> dict[str, Any]:
    """Write one synthetic slide (pyramidal TIFF) and, if asked, its tumour mask PNG.

    ``size`` is the level-0 side at the base ``MPP``; ``spec`` (default: the 'default' preset)
    gives the slide's mpp (a 0.5 um/px spec writes twice the pixels of the same tissue), JPEG
    quality, stain space (moved by ``shift``) and artefact rates; ``deposit`` (macro, micro,
    itc) is the planned class of a positive slide's largest deposit, ``mimics`` puts tumour
    mimics in. Returns the ground truth: size, mpp, margin, tumour regions (level-0 boxes
    and areas, from the mask at ``mask_downsample``), the largest deposit measured on the
    mask and its size class, the artefacts and the look. Memory stays bounded whatever
    ``size``; ``workers`` rendering threads (default: the CPU count, at most 8) never change
    the bytes.
    """
    spec = spec or PRESETS["default"]
    width, height = (size, size) if isinstance(size, int) else size
    if min(width, height) < MIN_SIZE:
        raise HelpkitError(f"slide size {width}x{height} is too small (minimum {MIN_SIZE})", path)
    if mask_downsample < 1:
        raise HelpkitError(f"mask downsample must be >= 1, got {mask_downsample}", mask_path)
    width, height = slide_side(width, spec.mpp), slide_side(height, spec.mpp)
    plan = slide_plan(width, height, seed, positive, spec, deposit, mimics)
    look = draw_look(seed, spec.stain.shifted(shift), spec.mpp)
    boxes = [box for _, box in plan.artefacts.boxes()] if plan.artefacts is not None else []
    write_pyramid(
        path,
        width,
        height,
        spec.mpp,
        render=lambda ds, x0, y0: render_tile(plan, look, ds, x0, y0, TILE),
        constant=lambda ds, x0, y0: _constant_tile(plan, boxes, ds, x0, y0),
        constants={
            "margin": np.zeros((TILE, TILE, 3), np.uint8),
            "glass": np.broadcast_to(look.background(), (TILE, TILE, 3)).copy(),
        },
        workers=workers or min(8, os.cpu_count() or 1),
        jpeg_quality=spec.jpeg_quality,
    )
    mask = plan.tumour_mask(mask_downsample)
    if mask_path is not None:
        write_mask(mask_path, mask)
    regions = tumour_regions(mask, mask_downsample)
    largest = largest_deposit_um(regions, spec.mpp)
    return {
        "width": width,
        "height": height,
        "mpp": spec.mpp,
        "seed": seed,
        "positive": positive,
        "shift": shift,
        "preset": spec.name,
        "margin": {"left": plan.margin[0], "top": plan.margin[1]},
        "mask_downsample": mask_downsample,
        "regions": regions,
        "deposit": plan.deposit,
        "largest_deposit_um": largest,
        "size_class": size_class(largest / 1000) if positive else "negative",
        "mimics": plan.mimics,
        "artefacts": plan.artefacts.kinds() if plan.artefacts is not None else {},
        "look": asdict(look),
    }


def quotas(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Exact counts for ``n`` items split by ``shares`` (largest remainder; ties in order)."""
    raw = {k: n * v / sum(shares.values()) for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    by_remainder = sorted(shares, key=lambda k: counts[k] - raw[k])  # stable: ties keep their order
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class Drawn:
    """One planned slide of a split: its label, largest-deposit class and mimics."""

    split: str
    label: int
    deposit: str | None
    mimics: bool


def deposit_shares(spec: SplitSpec, size: int) -> dict[str, float]:
    """``spec``'s deposit shares on slides of ``size`` base pixels: a class too big for the
    slide (``helpkit.synth.plan.min_size``) passes its share to the next smaller class."""
    side, carry = slide_side(size, spec.mpp), 0.0
    shares = dict.fromkeys(DEPOSITS, 0.0)
    for k in DEPOSITS:  # largest first
        carry += getattr(spec.deposits, k)
        if side >= min_size(k, spec.mpp) or k == DEPOSITS[-1]:
            shares[k], carry = carry, 0.0
    return shares


def draw_split(rng: np.random.Generator, split: str, n: int, spec: SplitSpec, size: int) -> list[Drawn]:
    """``n`` slides in random order: about half positive (one of each class when n >= 2), the
    positives' deposit classes (``deposit_shares``) and the negatives' mimics as exact quotas."""
    n_pos = n // 2 if n >= 2 else int(rng.integers(2))
    deposits = [k for k, c in quotas(n_pos, deposit_shares(spec, size)).items() for _ in range(c)]
    mimic_count = quotas(n - n_pos, {"mimics": spec.mimics, "plain": 1 - spec.mimics})["mimics"]
    mimics = [True] * mimic_count + [False] * (n - n_pos - mimic_count)
    rng.shuffle(deposits)
    rng.shuffle(mimics)
    slides = [Drawn(split, 1, d, False) for d in deposits] + [Drawn(split, 0, None, m) for m in mimics]
    return [slides[k] for k in rng.permutation(n)]


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
    size: int = 4096,
    seed: int = 0,
    shift: float = 0.0,
    mask_downsample: int = MASK_DOWNSAMPLE,
    progress: bool = False,
    layout: str = "help",
    phase1: str = "default",
    phase2: str | None = None,
) -> Path:
    """Write a synthetic competition in the HeLP layout under ``out`` and return ``out``
    (``layout`` 'camelyon16' / 'camelyon17': that layout instead, ``helpkit.synth.camelyon_writer``).

    Train slides are drawn from the ``phase1`` preset (``helpkit.synth.presets``), test slides
    from ``phase2`` when given, else from ``phase1`` too; ``shift`` moves the test slides' stain
    centre towards the bounds (0 none, 1 at the bounds). ``size`` is the level-0 side at the
    base ``MPP``. Each split's positives get their deposit classes, and its negatives their
    mimics, as exact quotas of the preset's shares (on slides too small for a macro- or
    micro-metastasis its share goes to the next smaller class: ``deposit_shares``, recorded
    in synth.json). Writing again into a folder made by this
    function replaces its competition.
    """
    out = Path(out)
    train_spec = get_preset(phase1)
    test_spec = get_preset(phase2) if phase2 is not None else train_spec
    if n_train < 2:
        raise HelpkitError(f"need at least 2 training slides (one per class), got {n_train}", out)
    if n_test < 1:
        raise HelpkitError(f"need at least 1 test slide, got {n_test}", out)
    if size < MIN_SIZE:
        raise HelpkitError(f"slide size {size} is too small (minimum {MIN_SIZE})", out)
    if seed < 0:
        raise HelpkitError(f"seed must be >= 0, got {seed}", out)
    if shift < 0:
        raise HelpkitError(f"shift must be >= 0, got {shift}", out)
    if mask_downsample < 1:
        raise HelpkitError(f"mask downsample must be >= 1, got {mask_downsample}", out)
    if layout not in ("help", "camelyon16", "camelyon17"):
        raise HelpkitError(f"unknown synthetic layout {layout!r}: choose help, camelyon16 or camelyon17")
    _clear(out)
    rng = np.random.default_rng([seed, 0xC0])
    order = draw_split(rng, "train", n_train, train_spec, size) + draw_split(rng, "test", n_test, test_spec, size)
    params = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed, "shift": shift,
              "mask_downsample": mask_downsample, "mpp": MPP, "tile": TILE, "generator": generator_version(), "phase1": phase1, "phase2": phase2,
              "presets": {spec.name: asdict(spec) for spec in (train_spec, test_spec)},
              "deposit_shares": {"train": deposit_shares(train_spec, size), "test": deposit_shares(test_spec, size)}}
    if layout != "help":
        from helpkit.synth.camelyon_writer import make_layout_competition

        return make_layout_competition(out, layout, order, {"train": train_spec, "test": test_spec},
                                       params=params, progress=progress)
    slide_seeds = np.random.SeedSequence(seed).generate_state(len(order))
    width = len(str(max(999, len(order))))

    slides = []
    items = enumerate(order)
    for k, drawn in track(items, "synth", total=len(order)) if progress else items:
        slide_id = f"Slide{k + 1:0{width}d}"
        group = "positive" if drawn.label else "negative"
        if drawn.split == "train":
            image = Path("train/image") / group / f"{slide_id}.tiff"
            mask = Path("train/mask") / group / f"{slide_id}.png"
        else:
            image = Path("test") / f"{slide_id}.tiff"
            mask = Path("truth/mask") / f"{slide_id}.png"
        truth = make_slide(
            out / image,
            size,
            int(slide_seeds[k]),
            bool(drawn.label),
            shift=shift if drawn.split == "test" else 0.0,
            mask_path=out / mask,
            mask_downsample=mask_downsample,
            spec=test_spec if drawn.split == "test" else train_spec,
            deposit=drawn.deposit,
            mimics=drawn.mimics,
        )
        slides.append(
            {"slide_id": slide_id, "split": drawn.split, "label": drawn.label, "path": image.as_posix(),
             "mask_path": mask.as_posix(), **truth}
        )

    test_rows = [f"{s['slide_id']},{s['label']},{s['size_class']}" for s in slides if s["split"] == "test"]
    write_text(out / "labels.csv", "slide_id,label,size_class\n" + "\n".join(test_rows) + "\n")
    write_json(out / "synth.json", {"params": params, "slides": slides})
    return out
