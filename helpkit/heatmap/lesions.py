"""Lesion detections from heatmaps: (confidence, x, y) points at level 0, one CSV per slide.

This is what the CAMELYON16 lesion-level task asks for and what ``helpkit score --froc``
scores. Per slide:

1. The probability map (NaN outside tissue read as 0) is smoothed by a Gaussian of
   ``sigma_um`` microns (per axis, in grid cells: ``sigma_um / (stride0 * mpp)``); 0 turns
   smoothing off. The default is half a grid stride.
2. Candidates are the tissue cells that are local maxima of the smoothed map (equal to the
   maximum of their 3x3 neighbourhood) with a smoothed value >= ``floor``.
3. Non-maximum suppression: candidates in decreasing confidence (ties by row, then column)
   are kept unless a kept one lies within ``radius_um`` microns (level-0 distance between
   cell centres, each axis scaled by its mpp).
4. Each kept cell is written as its smoothed value and its centre in level-0 pixels:
   ``x = origin_x + col * stride0 + patch_size0 // 2`` (likewise y), integers.

The level-0 mpp comes from the heatmap's ``mpp`` key; when it is missing (NaN) the
``FALLBACK_MPP`` the slide reader assumed for it (``helpkit.slide.geometry``) is used too, and
the slide is marked in ``lesions.json``.

Files: ``OUT/<slide_id>.csv`` in the CAMELYON16 submission format (no header; rows
``confidence,x,y``; a slide with no detection gets an empty file, so it still counts in the
false-positive denominator), and ``OUT/lesions.json`` with the parameters and, per slide,
the mpp used (and where it came from), the number of detections, split and label.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.heatmap.store import Heatmap, read_heatmap
from helpkit.io import atomic_path, write_json
from helpkit.slide.geometry import FALLBACK_MPP

FLOOR = 0.5
"""Smoothed probability below which no lesion is reported."""

RADIUS_UM = 200.0
"""Non-maximum-suppression radius in microns (NCRF used 12 px at level 6 of 0.243 um/px: 187 um)."""

SUMMARY = "lesions.json"


@dataclass(frozen=True)
class Detections:
    """One slide's detections: parallel arrays, confidences in the order they were written."""

    confidence: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.confidence)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass(frozen=True)
class LesionOptions:
    """Detection parameters; ``sigma_um=None`` means half the heatmap's grid stride."""

    floor: float = FLOOR
    radius_um: float = RADIUS_UM
    sigma_um: float | None = None
    mpp: float | None = None
    """Level-0 mpp to use for every slide, overriding the heatmaps' own."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.floor <= 1.0):
            raise HelpkitError(f"floor must be in [0, 1], got {self.floor}")
        if not self.radius_um >= 0 or (self.sigma_um is not None and not self.sigma_um >= 0):
            raise HelpkitError(f"radius and sigma must be >= 0 microns, got {self.radius_um} and {self.sigma_um}")
        if self.mpp is not None and not self.mpp > 0:
            raise HelpkitError(f"mpp must be positive, got {self.mpp}")


def slide_mpp(heatmap: Heatmap, override: float | None = None) -> tuple[tuple[float, float], str]:
    """The level-0 (x, y) mpp to use and where it came from: 'option', 'heatmap' or 'fallback'."""
    if override is not None:
        return (override, override), "option"
    if heatmap.mpp is not None and all(math.isfinite(v) and v > 0 for v in heatmap.mpp):
        return (float(heatmap.mpp[0]), float(heatmap.mpp[1])), "heatmap"
    return (FALLBACK_MPP, FALLBACK_MPP), "fallback"


def detect(heatmap: Heatmap, options: LesionOptions = LesionOptions()) -> Detections:
    """The lesion detections of one heatmap (module docstring: smoothing, maxima, suppression)."""
    from scipy import ndimage

    prob = np.asarray(heatmap.prob, dtype=np.float64)
    if heatmap.failed or prob.size == 0:
        return Detections.empty()
    valid = np.isfinite(prob)
    values = np.where(valid, prob, 0.0)
    (mppx, mppy), _ = slide_mpp(heatmap, options.mpp)
    stride0 = heatmap.stride0
    sigma_um = 0.5 * stride0 * (mppx + mppy) / 2 if options.sigma_um is None else options.sigma_um
    if sigma_um > 0:
        sigma_cells = (sigma_um / (stride0 * mppy), sigma_um / (stride0 * mppx))  # (rows, cols)
        values = ndimage.gaussian_filter(values, sigma=sigma_cells, mode="constant", cval=0.0)
    peak = ndimage.maximum_filter(values, size=3, mode="constant", cval=-np.inf)
    rows, cols = np.nonzero(valid & (values >= peak) & (values >= options.floor))
    conf = values[rows, cols]
    order = np.lexsort((cols, rows, -conf))
    rows, cols, conf = rows[order], cols[order], conf[order]
    # Centres in level-0 pixels, then microns for the suppression distance.
    x = heatmap.origin[0] + cols.astype(np.int64) * stride0 + heatmap.patch_size0 // 2
    y = heatmap.origin[1] + rows.astype(np.int64) * stride0 + heatmap.patch_size0 // 2
    keep: list[int] = []
    for i in range(len(conf)):
        if keep:
            k = np.asarray(keep)
            d2 = ((x[k] - x[i]) * mppx) ** 2 + ((y[k] - y[i]) * mppy) ** 2
            if (d2 < options.radius_um**2).any():
                continue
        keep.append(i)
    k = np.asarray(keep, dtype=np.int64)
    return Detections(confidence=conf[k], x=x[k], y=y[k])


def write_detections(path: str | Path, detections: Detections) -> None:
    """Write the CAMELYON16 format atomically: no header, ``confidence,x,y`` per row (confidence
    to 7 significant digits, what a float32 heatmap holds)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for c, x, y in zip(detections.confidence, detections.x, detections.y, strict=True):
            writer.writerow([f"{float(c):.7g}", int(x), int(y)])


def read_detections(path: str | Path) -> Detections:
    """Read a detections CSV (``confidence,x,y``; no header, though a ``confidence,x,y`` header
    line is accepted). Coordinates are level-0 pixels and are truncated to integers, as the
    CAMELYON16 evaluation reads them. A bad row is an error naming its line."""
    path = Path(path)
    confidence: list[float] = []
    xs: list[int] = []
    ys: list[int] = []
    try:
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and row[0].strip().lower() == "confidence":
                    continue
                if len(row) != 3:
                    raise HelpkitError(f"line {number}: expected confidence,x,y, got {len(row)} fields", path)
                try:
                    c, x, y = float(row[0]), float(row[1]), float(row[2])
                except ValueError as err:
                    raise HelpkitError(f"line {number}: not a number ({err})", path) from err
                if not all(map(math.isfinite, (c, x, y))):
                    raise HelpkitError(f"line {number}: confidence and coordinates must be finite", path)
                confidence.append(c)
                xs.append(int(x))
                ys.append(int(y))
    except FileNotFoundError as err:
        raise HelpkitError("detections file not found", path) from err
    except (OSError, UnicodeDecodeError) as err:
        raise HelpkitError(f"cannot read detections ({err})", path) from err
    return Detections(np.asarray(confidence, float), np.asarray(xs, np.int64), np.asarray(ys, np.int64))


def read_summary(lesions_dir: str | Path) -> dict:
    """``lesions.json`` of a lesions folder, or {} when there is none (CSVs from elsewhere)."""
    import json

    path = Path(lesions_dir) / SUMMARY
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HelpkitError(f"cannot read lesions summary ({err})", path) from err


def write_lesions(heatmaps: Sequence[Path], out: str | Path, options: LesionOptions = LesionOptions(),
                  model: str = "", split: str | None = None) -> dict[str, int]:
    """Detect lesions in each heatmap file (only those of ``split`` when given); write
    ``OUT/<slide_id>.csv`` and ``OUT/lesions.json``.

    Returns counts: slides, detections, failed (heatmaps recording an error: empty CSV),
    fallback_mpp (slides whose mpp was assumed), other_split (heatmaps left out).
    """
    from helpkit.progress import track

    out = Path(out)
    slides: dict[str, dict] = {}
    counts = {"slides": 0, "detections": 0, "failed": 0, "fallback_mpp": 0, "other_split": 0}
    for path in track(list(heatmaps), "lesions"):
        heatmap = read_heatmap(path)
        if split is not None and heatmap.split != split:
            counts["other_split"] += 1
            continue
        if heatmap.slide_id in slides:
            raise HelpkitError(f"slide {heatmap.slide_id!r} has two heatmaps", path)
        found = detect(heatmap, options)
        write_detections(out / f"{heatmap.slide_id}.csv", found)
        mpp, source = slide_mpp(heatmap, options.mpp)
        slides[heatmap.slide_id] = {
            "mpp": list(mpp), "mpp_source": source, "detections": len(found), "split": heatmap.split,
            "label": None if math.isnan(heatmap.label) else heatmap.label, "error": heatmap.error,
        }
        counts["slides"] += 1
        counts["detections"] += len(found)
        counts["failed"] += heatmap.failed
        counts["fallback_mpp"] += source == "fallback"
    write_json(out / SUMMARY, {
        "schema_version": 1, "model": model, "floor": options.floor, "radius_um": options.radius_um,
        "sigma_um": options.sigma_um, "fallback_mpp": FALLBACK_MPP, "split": split, "slides": slides,
    })
    return counts
