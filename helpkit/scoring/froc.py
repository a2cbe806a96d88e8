"""Lesion-level FROC by the CAMELYON16 rules (the challenge's Evaluation_FROC.py, re-derived).

What is implemented, step by step (``mpp`` is the level-0 microns per pixel):

1. Reference mask at level 5: a boolean tumour mask at downsample ``EVALUATION_DOWNSAMPLE``
   = 32 of level 0 (a PNG mask at another downsample is max-pooled or repeated to it; a
   polygon annotation is rasterised at it).
2. Dilation: the Euclidean distance of every pixel to the nearest tumour pixel (level-5
   pixels); a pixel is in the reference when that distance is < ``75 / (2 * mpp * 32)``.
   The original divides the 75 um by two, so the rim is 37.5 um wide (4.82 level-5 pixels
   at its 0.243 um/px); this is kept exactly.
3. Holes are filled; regions are the 8-connected components: one lesion each.
4. ITC regions: a region whose ``axis_major_length`` (scikit-image regionprops: the major
   axis of the ellipse with the region's second moments, level-5 pixels; the original's
   ``major_axis_length``, renamed) is < ``275 / (mpp * 32)`` is an isolated-tumour-cell region (200 um plus the 75 um dilation).
5. Matching: a detection at level-0 (x, y) falls in pixel ``(int(y / 32), int(x / 32))``.
   Outside every region (or outside the mask) it is a false positive; inside an ITC region it
   is ignored (neither hit nor false positive); inside a lesion it is a hit, and each lesion
   keeps only its highest confidence (other detections on it are ignored, not FPs). A
   lesion's confidence must exceed 0 to count (the original starts each lesion at 0 and
   keeps a strictly greater one). A slide with no reference (normal) gives only FPs.
6. Curve: the thresholds are the distinct positive confidences among the FPs and the hit
   lesions; at each, FPs per slide = #FP >= t / #slides and sensitivity = #hit lesions with
   confidence >= t / #lesions (all slides, ITC regions excluded); then the point (0, 0).
7. Score: sensitivities at 1/4, 1/2, 1, 2, 4 and 8 FPs per slide by ``numpy.interp`` over
   the curve in increasing-FP order (exactly the original's call), and their mean.

One deliberate difference: the original thresholds at ``sorted(set(all confidences))[1:]``,
dropping the lowest value. That value is 0 whenever some lesion is missed or an ITC region
exists (its unfilled slot), so dropping it is the same as thresholding at positive
confidences, which is what is done here; but when every lesion is hit and there is no ITC
region it drops the lowest real detection, so perfect detections at one confidence would
score 0.5. Here they score 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.heatmap.lesions import Detections

EVALUATION_DOWNSAMPLE = 32
"""CAMELYON16 builds its evaluation mask at level 5 of a pyramid that halves per level."""

DILATION_UM = 75.0
"""Reference dilation as the original names it; its threshold halves it (a 37.5 um rim)."""

ITC_UM = 275.0
"""Longest axis below which a (dilated) region is an ITC region: 200 um + 75 um."""

CAMELYON16_MPP = 0.243
"""The original evaluation's fixed level-0 resolution, used when nothing else says."""

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Average false positives per slide at which sensitivity is read."""


@dataclass(frozen=True)
class Reference:
    """A tumour slide's evaluation mask: region labels at level 5, which of them are ITC."""

    labels: np.ndarray
    itc: frozenset[int]
    mpp: float
    downsample: int = EVALUATION_DOWNSAMPLE

    @property
    def n_regions(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0

    @property
    def lesions(self) -> list[int]:
        """Labels of the regions that count (non-ITC)."""
        return [k for k in range(1, self.n_regions + 1) if k not in self.itc]

    def region_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Region label under each level-0 point (0 outside every region or the mask)."""
        x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
        col, row = x // self.downsample, y // self.downsample
        h, w = self.labels.shape
        inside = (x >= 0) & (y >= 0) & (row < h) & (col < w)
        out = np.zeros(len(x), dtype=np.int64)
        out[inside] = self.labels[row[inside], col[inside]]
        return out


def evaluation_mask(tumour: np.ndarray, mpp: float, downsample: int = EVALUATION_DOWNSAMPLE) -> Reference:
    """The reference of one slide from its boolean tumour mask at ``downsample`` of level 0."""
    from scipy import ndimage
    from skimage import measure

    if not mpp > 0:
        raise HelpkitError(f"mpp must be positive, got {mpp}")
    tumour = np.asarray(tumour, dtype=bool)
    if not tumour.any():
        return Reference(np.zeros(tumour.shape, np.int32), frozenset(), mpp, downsample)
    distance = ndimage.distance_transform_edt(~tumour)
    threshold = DILATION_UM / (2.0 * mpp * downsample)
    filled = ndimage.binary_fill_holes(distance < threshold)
    labels = measure.label(filled, connectivity=2).astype(np.int32)
    itc_axis = ITC_UM / (mpp * downsample)
    itc = frozenset(p.label for p in measure.regionprops(labels) if p.axis_major_length < itc_axis)
    return Reference(labels, itc, mpp, downsample)


@dataclass(frozen=True)
class SlideOutcome:
    """One slide's matched detections: FP confidences, each hit lesion's best confidence."""

    slide_id: str
    fp: np.ndarray
    tp: np.ndarray
    n_lesions: int
    n_itc: int = 0
    n_detections: int = 0
    ignored_itc: int = 0
    ignored_repeat: int = 0

    @property
    def tumour(self) -> bool:
        return self.n_lesions + self.n_itc > 0


def match(slide_id: str, detections: Detections, reference: Reference | None) -> SlideOutcome:
    """Split one slide's detections into FPs, hits (best per lesion) and ignored ones."""
    conf = np.asarray(detections.confidence, dtype=float)
    if reference is None or reference.n_regions == 0:
        return SlideOutcome(slide_id, fp=conf.copy(), tp=np.zeros(0), n_lesions=0, n_detections=len(conf))
    region = reference.region_at(detections.x, detections.y)
    in_itc = np.isin(region, list(reference.itc))
    in_lesion = (region > 0) & ~in_itc
    best: dict[int, float] = {}
    for label, c in zip(region[in_lesion], conf[in_lesion], strict=True):
        if c > best.get(int(label), 0.0):
            best[int(label)] = float(c)
    return SlideOutcome(
        slide_id,
        fp=conf[region == 0],
        tp=np.asarray(sorted(best.values()), dtype=float),
        n_lesions=len(reference.lesions),
        n_itc=len(reference.itc),
        n_detections=len(conf),
        ignored_itc=int(in_itc.sum()),
        ignored_repeat=int(in_lesion.sum()) - len(best),
    )


@dataclass(frozen=True)
class FROCResult:
    """FROC score, the sensitivity at each FP rate, the curve and the counts behind them."""

    score: float
    fp_rates: tuple[float, ...]
    sensitivities: tuple[float, ...]
    curve_fp: np.ndarray
    curve_sensitivity: np.ndarray
    n_slides: int
    n_tumour_slides: int
    n_lesions: int
    n_itc: int
    n_detections: int
    n_fp: int
    n_hit: int
    ignored_itc: int
    ignored_repeat: int
    per_slide: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "froc": self.score,
            "sensitivity": {f"{r:g}": s for r, s in zip(self.fp_rates, self.sensitivities, strict=True)},
            "n_slides": self.n_slides, "n_tumour_slides": self.n_tumour_slides,
            "n_lesions": self.n_lesions, "n_itc_regions": self.n_itc, "n_detections": self.n_detections,
            "n_false_positives": self.n_fp, "n_lesions_hit": self.n_hit,
            "ignored_in_itc": self.ignored_itc, "ignored_repeat_hits": self.ignored_repeat,
            "curve": {"fp_per_slide": self.curve_fp.tolist(), "sensitivity": self.curve_sensitivity.tolist()},
            "slides": self.per_slide,
        }


def froc(outcomes: Sequence[SlideOutcome], fp_rates: Sequence[float] = FP_RATES) -> FROCResult:
    """The FROC over all slides (module docstring, steps 6 and 7)."""
    if not outcomes:
        raise HelpkitError("no slides to score")
    n_lesions = sum(o.n_lesions for o in outcomes)
    if n_lesions == 0:
        raise HelpkitError("no lesions (non-ITC regions) in the references of the scored slides: "
                           "sensitivity is undefined")
    fp = np.concatenate([o.fp for o in outcomes])
    tp = np.concatenate([o.tp for o in outcomes])
    thresholds = np.unique(np.concatenate([fp, tp]))
    thresholds = thresholds[thresholds > 0]
    fp_sorted, tp_sorted = np.sort(fp), np.sort(tp)
    n_fp_at = len(fp) - np.searchsorted(fp_sorted, thresholds, side="left")
    n_tp_at = len(tp) - np.searchsorted(tp_sorted, thresholds, side="left")
    curve_fp = np.append(n_fp_at, 0) / len(outcomes)
    curve_sens = np.append(n_tp_at, 0) / n_lesions
    sens = np.interp(np.asarray(fp_rates, float), curve_fp[::-1], curve_sens[::-1])
    return FROCResult(
        score=float(np.mean(sens)),
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivities=tuple(float(s) for s in sens),
        curve_fp=curve_fp,
        curve_sensitivity=curve_sens,
        n_slides=len(outcomes),
        n_tumour_slides=sum(o.tumour for o in outcomes),
        n_lesions=n_lesions,
        n_itc=sum(o.n_itc for o in outcomes),
        n_detections=sum(o.n_detections for o in outcomes),
        n_fp=len(fp),
        n_hit=len(tp),
        ignored_itc=sum(o.ignored_itc for o in outcomes),
        ignored_repeat=sum(o.ignored_repeat for o in outcomes),
        per_slide=[{"slide_id": o.slide_id, "lesions": o.n_lesions, "itc_regions": o.n_itc,
                    "hit": int(len(o.tp)), "false_positives": int(len(o.fp))} for o in outcomes],
    )


# --- A lesions folder against a folder of annotations -------------------------------------

REFERENCE_SUFFIXES = (".xml", ".geojson", ".json", ".png")
"""Annotation files a reference is read from, by slide id: ``<slide_id><suffix>``."""

BIG = 2**31 - 1
"""Stand-in slide size for parsing polygons when the slide's own size is not known."""


def reference_files(annotations: str | Path, slide_ids: Sequence[str]) -> dict[str, Path]:
    """The annotation file of each slide id under ``annotations`` (searched recursively);
    a slide id with two annotation files is an error naming both."""
    root = Path(annotations)
    if not root.is_dir():
        raise HelpkitError("annotations folder not found", root)
    wanted, found = set(slide_ids), {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in REFERENCE_SUFFIXES and path.stem in wanted and not path.name.startswith("."):
            if path.stem in found:
                raise HelpkitError(f"slide {path.stem!r} has two annotation files: {found[path.stem]} and {path}", root)
            found[path.stem] = path
    return found


def _pooled(mask: np.ndarray, source_ds: float, downsample: int) -> np.ndarray:
    """``mask`` at ``source_ds`` to ``downsample``: a pixel is tumour when any source pixel in
    its span is (so tiny regions survive, as small polygons do), or the covering pixel when
    the source is coarser."""
    factor = downsample / source_ds
    rows = max(1, int(np.ceil(mask.shape[0] / factor - 1e-9)))
    cols = max(1, int(np.ceil(mask.shape[1] / factor - 1e-9)))
    r0 = np.minimum((np.arange(rows) * factor).astype(np.int64), mask.shape[0] - 1)
    c0 = np.minimum((np.arange(cols) * factor).astype(np.int64), mask.shape[1] - 1)
    out = np.maximum.reduceat(mask.astype(np.uint8), r0, axis=0)
    return np.maximum.reduceat(out, c0, axis=1).astype(bool)


def tumour_at_level5(path: Path, mask_downsample: float, dimensions: tuple[int, int] | None = None) -> np.ndarray:
    """The tumour mask of one annotation file at ``EVALUATION_DOWNSAMPLE``, pixel (0, 0) at
    level-0 (0, 0). Polygons (ASAP XML, GeoJSON) are rasterised by ``helpkit.slide.annotation``
    (exclusion and normal regions cut out); without the slide's size the canvas reaches past
    the polygons by more than the rim. A PNG mask at ``mask_downsample`` is pooled to it."""
    from PIL import Image

    from helpkit.slide.annotation import MaskAnnotation, PolygonAnnotation, read_annotation

    if path.suffix.lower() == ".png":
        if dimensions is None:
            try:
                with Image.open(path) as image:
                    dimensions = (int(image.width * mask_downsample), int(image.height * mask_downsample))
            except OSError as err:
                raise HelpkitError(f"cannot read annotation mask ({err})", path) from err
        stored = MaskAnnotation(path, dimensions).stored
        return _pooled(stored.mask, (stored.downsample[0] + stored.downsample[1]) / 2, EVALUATION_DOWNSAMPLE)
    annotation = read_annotation(path, dimensions or (BIG, BIG))
    if dimensions is None:
        polygons = annotation.polygons()
        margin = 8 * EVALUATION_DOWNSAMPLE
        if polygons:
            extent = np.max([p.bounds[2:] for p in polygons], axis=0)
            dimensions = (int(extent[0]) + margin, int(extent[1]) + margin)
        else:
            dimensions = (EVALUATION_DOWNSAMPLE, EVALUATION_DOWNSAMPLE)
        annotation = PolygonAnnotation(path, dimensions, polygons)
    return annotation.tumour(downsample=EVALUATION_DOWNSAMPLE)


def _slide_mpp(summary: dict, slide_id: str, override: float | None) -> tuple[float, str]:
    if override is not None:
        return override, "option"
    mpp = (summary.get("slides", {}).get(slide_id) or {}).get("mpp")
    if mpp and all(isinstance(v, int | float) and v > 0 for v in mpp):
        return float(sum(mpp) / len(mpp)), "lesions.json"
    return CAMELYON16_MPP, "camelyon16"


def score_lesions(lesions_dir: str | Path, annotations: str | Path, mpp: float | None = None,
                  mask_downsample: float = 16) -> dict:
    """FROC of every ``<slide_id>.csv`` in ``lesions_dir``, references from ``annotations``.

    A slide with an annotation file is a tumour slide (its reference built as above); one
    without is normal. The level-0 mpp is ``mpp`` when given, else the one ``helpkit lesions``
    recorded in ``lesions.json``, else CAMELYON16's 0.243. Also the slide-level AUC of the
    maximum detection confidence (0 without detections) against tumour / normal, with a
    DeLong 95% CI, when both kinds of slide are present. Returns a JSON-able dict.
    """
    from helpkit.heatmap.lesions import read_detections, read_summary
    from helpkit.scoring.metrics import auc_ci

    lesions_dir = Path(lesions_dir)
    if not lesions_dir.is_dir():
        raise HelpkitError("lesions folder not found", lesions_dir)
    csvs = sorted(p for p in lesions_dir.glob("*.csv") if not p.name.startswith("."))
    if not csvs:
        raise HelpkitError("no detection files (<slide_id>.csv) in this folder", lesions_dir)
    summary = read_summary(lesions_dir)
    files = reference_files(annotations, [p.stem for p in csvs])
    if not files:
        raise HelpkitError(f"no annotation file for any of the {len(csvs)} slides in {lesions_dir} "
                           f"(expected <slide_id>{'|'.join(REFERENCE_SUFFIXES)} below this folder)", annotations)
    outcomes, labels, scores, sources = [], [], [], {}
    for csv_path in csvs:
        slide_id = csv_path.stem
        detections = read_detections(csv_path)
        slide_mpp, source = _slide_mpp(summary, slide_id, mpp)
        sources[source] = sources.get(source, 0) + 1
        reference = None
        if slide_id in files:
            reference = evaluation_mask(tumour_at_level5(files[slide_id], mask_downsample), slide_mpp)
        outcome = match(slide_id, detections, reference)
        outcomes.append(outcome)
        labels.append(int(outcome.tumour))
        scores.append(float(detections.confidence.max()) if len(detections) else 0.0)
    result = froc(outcomes).as_dict()
    y, s = np.asarray(labels), np.asarray(scores)
    auc = None
    if 0 < y.sum() < len(y):
        auc = auc_ci(y, s).as_dict()
    return {"lesions": str(lesions_dir), "annotations": str(annotations), **result,
            "slide_auc": auc, "mpp_sources": sources,
            "unannotated_slides": len(csvs) - len(files)}
