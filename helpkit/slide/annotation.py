"""Tumour annotations: PNG masks (HeLP), ASAP XML (CAMELYON) and QuPath GeoJSON polygons.

All of them implement :class:`Annotation` (tumour and exclusion masks at any downsample,
level-0 polygons); :func:`read_annotation` picks the reader by suffix. A PNG mask is at a
downsample of level 0, non-zero = tumour; polygon files are level-0 pixel coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from helpkit.errors import HelpkitError
from helpkit.slide.polygons import Polygon, fill_polygons, trace_mask

if TYPE_CHECKING:
    import pandas as pd

    from helpkit.slide.grid import GridSpec


@dataclass(frozen=True)
class AnnotationMask:
    """A boolean tumour mask and its (x, y) downsample relative to level 0."""

    mask: np.ndarray
    downsample: tuple[float, float]


def read_annotation_mask(path: str | Path, slide_dimensions: tuple[int, int]) -> AnnotationMask:
    """Read a tumour mask PNG and infer its downsample from the slide's level-0 size.

    The downsample is not stored in the PNG, so it is slide size / mask size per axis; the
    two must agree within the rounding of one mask pixel, or the mask belongs to another
    slide (or is transposed) and a HelpkitError names it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA"):
                image = image.convert("L")  # palette indices are not intensities
            array = np.asarray(image)
    except FileNotFoundError as err:
        raise HelpkitError("annotation mask not found", path) from err
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise HelpkitError(f"cannot read annotation mask ({err})", path) from err
    if array.ndim == 3:  # colour channels only: an alpha channel is not an annotation
        array = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        mask = array.any(axis=2)
    else:
        mask = array.astype(bool)
    (width, height), (mask_h, mask_w) = slide_dimensions, mask.shape
    dsx, dsy = width / mask_w, height / mask_h
    tolerance = max(dsx, dsy) * (1.0 / mask_w + 1.0 / mask_h + 0.005)
    if abs(dsx - dsy) > tolerance:
        raise HelpkitError(
            f"mask is {mask_w}x{mask_h} but the slide is {width}x{height}: aspect ratios differ "
            f"(downsample {dsx:.2f} in x, {dsy:.2f} in y)",
            path,
        )
    return AnnotationMask(mask=mask, downsample=(dsx, dsy))


# --- One interface for every annotation: PNG masks, ASAP XML and QuPath GeoJSON polygons ---

Downsample = float | tuple[float, float]

TUMOUR_GROUPS = frozenset({"_0", "_1", "tumor", "tumour", "metastases", "metastasis", "carcinoma", "positive"})
"""Group / class names (lower case) that mark tumour: CAMELYON16's ``_0``, ``_1`` and ``Tumor``,
CAMELYON17's ``metastases``, QuPath's ``Tumor``."""

EXCLUSION_GROUPS = frozenset({"_2", "exclusion", "ignore", "ignore*", "ambiguous"})
"""Group / class names (lower case) of regions cut out of tumour that are neither tumour nor
normal (CAMELYON16's ``_2`` and ``Exclusion``): their patches are ambiguous (label -1)."""

NORMAL_GROUPS = frozenset({"normal", "negative", "stroma", "other"})
"""Group / class names (lower case) of regions annotated as normal: cut out of tumour, normal."""

POINT_TYPES = frozenset({"dot", "pointset", "point", "multipoint", "measurement", "ruler"})
"""ASAP / GeoJSON annotation types without an area: skipped and counted."""

ANNOTATION_SUFFIXES = (".png", ".xml", ".geojson", ".json")

RASTER_DOWNSAMPLE = 16.0
"""Polygons are rasterised at this downsample of level 0 for the patch index (a PNG mask is
read at its own): 8 x 8 mask pixels or more per default patch, 80 MB for a 100k x 200k slide."""


def role_of(group: str) -> str | None:
    """'tumour', 'exclusion', 'normal', or None for a name helpkit does not know."""
    key = group.strip().lower()
    for role, names in (("tumour", TUMOUR_GROUPS), ("exclusion", EXCLUSION_GROUPS), ("normal", NORMAL_GROUPS)):
        if key in names:
            return role
    return None


def _as_pair(downsample: Downsample) -> tuple[float, float]:
    if np.isscalar(downsample):
        return float(downsample), float(downsample)  # type: ignore[arg-type]
    dsx, dsy = downsample  # type: ignore[misc]
    return float(dsx), float(dsy)


class Annotation(Protocol):
    """What the patch index, the heatmaps and the scorers read of any annotation.

    ``tumour`` and ``exclusion`` give bool masks at a downsample of level 0 (or of a given
    (rows, cols) shape, its downsample then slide size / shape per axis), pixel (r, c)
    covering level-0 [c*dsx, (c+1)*dsx) x [r*dsy, (r+1)*dsy). Exclusion pixels are never
    tumour. ``polygons()`` are the level-0 regions (for FROC reference masks and overlays).
    """

    path: Path
    dimensions: tuple[int, int]

    def tumour(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray: ...

    def exclusion(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray: ...

    def masks(self, downsample: Downsample | None = None) -> tuple[AnnotationMask, AnnotationMask | None]: ...

    def polygons(self) -> list[Polygon]: ...

    def has_tumour(self) -> bool: ...  # any tumour annotated at all


class _Base:
    path: Path
    dimensions: tuple[int, int]

    def _target(self, downsample: Downsample | None, shape: tuple[int, int] | None
                ) -> tuple[tuple[int, int], tuple[float, float]]:
        width, height = self.dimensions
        if shape is not None:
            rows, cols = int(shape[0]), int(shape[1])
            if rows <= 0 or cols <= 0:
                raise HelpkitError(f"mask shape must be positive, got {shape}", self.path)
            return (rows, cols), (width / cols, height / rows)
        if downsample is None:
            raise HelpkitError("give a downsample or a shape", self.path)
        dsx, dsy = _as_pair(downsample)
        if dsx <= 0 or dsy <= 0:
            raise HelpkitError(f"downsample must be positive, got {downsample}", self.path)
        return (max(1, int(np.ceil(height / dsy - 1e-9))), max(1, int(np.ceil(width / dsx - 1e-9)))), (dsx, dsy)

    def masks(self, downsample: Downsample | None = None) -> tuple[AnnotationMask, AnnotationMask | None]:
        """Tumour and exclusion masks at ``downsample`` (None: a PNG's own, else
        ``RASTER_DOWNSAMPLE``) as ``AnnotationMask`` (exclusion None when empty)."""
        shape, ds = self._target(RASTER_DOWNSAMPLE if downsample is None else downsample, None)
        exclusion = self.exclusion(shape=shape)
        return (AnnotationMask(self.tumour(shape=shape), ds),
                AnnotationMask(exclusion, ds) if exclusion.any() else None)


class MaskAnnotation(_Base):
    """A PNG tumour mask (HeLP): tumour only, no exclusion; resampled by nearest pixel centre."""

    def __init__(self, path: str | Path, slide_dimensions: tuple[int, int]) -> None:
        self.path = Path(path)
        self.dimensions = (int(slide_dimensions[0]), int(slide_dimensions[1]))
        self.stored = read_annotation_mask(self.path, self.dimensions)

    def tumour(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        (rows, cols), (dsx, dsy) = self._target(downsample, shape)
        mask, (sx, sy) = self.stored.mask, self.stored.downsample
        if mask.shape == (rows, cols) and np.isclose(sx, dsx) and np.isclose(sy, dsy):
            return mask.copy()
        r = np.minimum(((np.arange(rows) + 0.5) * dsy / sy).astype(np.int64), mask.shape[0] - 1)
        c = np.minimum(((np.arange(cols) + 0.5) * dsx / sx).astype(np.int64), mask.shape[1] - 1)
        return mask[np.ix_(r, c)]

    def exclusion(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        return np.zeros(self._target(downsample, shape)[0], dtype=bool)

    def masks(self, downsample: Downsample | None = None) -> tuple[AnnotationMask, AnnotationMask | None]:
        """The stored mask as it is (no resampling) when ``downsample`` is None."""
        if downsample is None:
            return self.stored, None
        return super().masks(downsample)

    def has_tumour(self) -> bool:
        return bool(self.stored.mask.any())

    def polygons(self) -> list[Polygon]:
        """The mask's regions traced into level-0 polygons (holes kept)."""
        dsx, dsy = self.stored.downsample
        return trace_mask(self.stored.mask, (dsx + dsy) / 2)


class PolygonAnnotation(_Base):
    """Level-0 polygons (ASAP XML, GeoJSON) rasterised on demand.

    exclusion = exclusion polygons, plus the holes of tumour polygons not covered by another
    tumour polygon (a hole cut out of a tumour is left out, like CAMELYON16's ``_2``);
    tumour = tumour polygons (their holes empty) minus exclusion and normal polygons.
    """

    def __init__(self, path: str | Path, slide_dimensions: tuple[int, int], polygons: list[Polygon],
                 skipped: int = 0) -> None:
        self.path = Path(path)
        self.dimensions = (int(slide_dimensions[0]), int(slide_dimensions[1]))
        self._polygons = polygons
        self.skipped = skipped
        """Annotations without an area (dots, point sets) that were left out."""

    def polygons(self) -> list[Polygon]:
        return list(self._polygons)

    def has_tumour(self) -> bool:
        return any(p.role == "tumour" for p in self._polygons)

    def regions(self) -> list[Polygon]:
        """Tumour polygons only, each with the exclusion and normal polygons whose first vertex
        lies inside it added to its holes (what a lesion-level scorer needs)."""
        tumours = [p for p in self._polygons if p.role == "tumour"]
        cuts = [p for p in self._polygons if p.role != "tumour"]
        out = []
        for p in tumours:
            inside = [c.exterior for c in cuts if _contains(p.exterior, c.exterior[0])]
            out.append(Polygon(p.exterior, (*p.holes, *inside), "tumour", p.group, p.name))
        return out

    def _layers(self, shape: tuple[int, int], ds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """(tumour, exclusion) at ``shape``: exclusion polygons win over tumour; a tumour's hole
        is exclusion unless another tumour polygon (an island in it) covers it."""
        def fill(polygons: list[Polygon], keep_small: bool = True) -> np.ndarray:
            return fill_polygons(polygons, shape, ds, keep_small=keep_small)

        tumours = [p for p in self._polygons if p.role == "tumour"]
        filled = fill(tumours)
        exclusion = fill([p for p in self._polygons if p.role == "exclusion"])
        holes = [Polygon(h) for p in tumours for h in p.holes]
        if holes:
            exclusion |= fill(holes, keep_small=False) & ~filled
        normal = fill([p for p in self._polygons if p.role == "normal"], keep_small=False)
        return filled & ~exclusion & ~normal, exclusion

    def exclusion(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        return self._layers(*self._target(downsample, shape))[1]

    def tumour(self, downsample: Downsample | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        return self._layers(*self._target(downsample, shape))[0]

    def masks(self, downsample: Downsample | None = None) -> tuple[AnnotationMask, AnnotationMask | None]:
        shape, ds = self._target(RASTER_DOWNSAMPLE if downsample is None else downsample, None)
        tumour, exclusion = self._layers(shape, ds)
        return AnnotationMask(tumour, ds), (AnnotationMask(exclusion, ds) if exclusion.any() else None)


def _contains(ring: np.ndarray, point: np.ndarray) -> bool:
    """Even-odd point-in-polygon test in level-0 coordinates."""
    x, y = float(point[0]), float(point[1])
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (x < xs)) % 2)


def _number(text: str | None, what: str, path: Path) -> float:
    try:
        return float((text or "").strip().replace(",", "."))
    except ValueError:
        raise HelpkitError(f"{what}: not a number: {text!r}", path) from None


def _check_polygon(ring: np.ndarray, what: str, path: Path, dimensions: tuple[int, int]) -> np.ndarray:
    """A ring of at least 3 distinct points, inside the slide (edges included, half a pixel of slack)."""
    if len(ring) and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]  # closed rings (GeoJSON) repeat the first vertex
    if len(ring) < 3:
        raise HelpkitError(f"{what} has {len(ring)} points; a polygon needs at least 3", path)
    if not np.isfinite(ring).all():
        raise HelpkitError(f"{what} has a coordinate that is not finite", path)
    width, height = dimensions
    bad = (ring[:, 0] < -0.5) | (ring[:, 1] < -0.5) | (ring[:, 0] > width + 0.5) | (ring[:, 1] > height + 0.5)
    if bad.any():
        x, y = ring[int(np.argmax(bad))]
        raise HelpkitError(f"{what} has point ({x:g}, {y:g}) outside the {width}x{height} slide "
                           "(coordinates are level-0 pixels)", path)
    return ring


def _role(group: str, what: str, path: Path, groups: Mapping[str, str] | None) -> str:
    role = (groups or {}).get(group) or role_of(group)
    if role is None:
        raise HelpkitError(
            f"{what}: group {group!r} is not a known tumour ({', '.join(sorted(TUMOUR_GROUPS))}), exclusion "
            f"({', '.join(sorted(EXCLUSION_GROUPS))}) or normal ({', '.join(sorted(NORMAL_GROUPS))}) name", path)
    return role


def read_asap_xml(path: str | Path, slide_dimensions: tuple[int, int],
                  groups: Mapping[str, str] | None = None) -> PolygonAnnotation:
    """ASAP XML: ``<ASAP_Annotations><Annotations><Annotation Name Type PartOfGroup><Coordinates>
    <Coordinate Order X Y>``, level-0 pixels. Polygon, Spline and Rectangle annotations are
    areas (vertices in ``Order``); Dot and PointSet ones are skipped and counted. ``groups``
    maps extra group names to 'tumour', 'exclusion' or 'normal'."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as err:
        raise HelpkitError("annotation file not found", path) from err
    except (ET.ParseError, OSError, UnicodeDecodeError) as err:
        raise HelpkitError(f"cannot parse annotation XML ({err})", path) from err
    if root.tag != "ASAP_Annotations" or root.find("Annotations") is None:
        raise HelpkitError(f"not an ASAP annotation file (root <{root.tag}>, expected <ASAP_Annotations> "
                           "holding <Annotations>)", path)
    polygons, skipped = [], 0
    for k, node in enumerate(root.iter("Annotation")):
        name = node.get("Name") or f"Annotation {k}"
        what = f"annotation {name!r}"
        if (node.get("Type") or "Polygon").strip().lower() in POINT_TYPES:
            skipped += 1
            continue
        group = node.get("PartOfGroup") or "None"
        role = _role(group, what, path, groups)
        coords = sorted(
            ((_number(c.get("Order", str(i)), what, path), _number(c.get("X"), what, path),
              _number(c.get("Y"), what, path)) for i, c in enumerate(node.iter("Coordinate"))),
            key=lambda t: t[0])
        ring = _check_polygon(np.array([(x, y) for _, x, y in coords], dtype=np.float64).reshape(-1, 2),
                              what, path, slide_dimensions)
        polygons.append(Polygon(ring, (), role, group, name))
    return PolygonAnnotation(path, slide_dimensions, polygons, skipped)


def read_geojson(path: str | Path, slide_dimensions: tuple[int, int],
                 groups: Mapping[str, str] | None = None) -> PolygonAnnotation:
    """QuPath GeoJSON: a FeatureCollection (or a list of features, or one feature) of Polygon /
    MultiPolygon geometries in level-0 pixels, class from ``properties.classification.name``
    (``properties.name`` when unclassified). Interior rings are holes; point and line
    features are skipped and counted."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise HelpkitError("annotation file not found", path) from err
    except (OSError, ValueError) as err:
        raise HelpkitError(f"cannot parse GeoJSON ({err})", path) from err
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise HelpkitError("not a GeoJSON FeatureCollection (expected {\"type\": \"FeatureCollection\", "
                           "\"features\": [...]})", path)
    polygons, skipped = [], 0
    for k, feature in enumerate(features):
        props = feature.get("properties") or {}
        klass = props.get("classification") or {}
        group = (klass.get("name") if isinstance(klass, dict) else str(klass)) or props.get("name") or "None"
        name = str(props.get("name") or feature.get("id") or f"feature {k}")
        what = f"feature {name!r}"
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
            skipped += 1
            continue
        if kind not in ("Polygon", "MultiPolygon"):
            raise HelpkitError(f"{what}: geometry type {kind!r} is not Polygon or MultiPolygon", path)
        role = _role(group, what, path, groups)
        parts = geometry.get("coordinates") or []
        for part in ([parts] if kind == "Polygon" else parts):
            try:
                rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in part]
            except (ValueError, TypeError) as err:
                raise HelpkitError(f"{what}: bad coordinates ({err})", path) from err
            if not rings:
                raise HelpkitError(f"{what} has an empty polygon", path)
            rings = [_check_polygon(r, what, path, slide_dimensions) for r in rings]
            polygons.append(Polygon(rings[0], tuple(rings[1:]), role, group, name))
    return PolygonAnnotation(path, slide_dimensions, polygons, skipped)


def read_annotation(path: str | Path, slide_dimensions: tuple[int, int],
                    groups: Mapping[str, str] | None = None) -> Annotation:
    """Any annotation by suffix: ``.png`` mask, ``.xml`` ASAP, ``.geojson`` / ``.json`` QuPath."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return read_asap_xml(path, slide_dimensions, groups)
    if suffix in (".geojson", ".json"):
        return read_geojson(path, slide_dimensions, groups)
    if suffix in (".png", ".tif", ".tiff", ".bmp"):
        return MaskAnnotation(path, slide_dimensions)
    raise HelpkitError(f"unknown annotation format {suffix!r} (expected {', '.join(ANNOTATION_SUFFIXES)})", path)


def annotation_regions(path: str | Path, slide_dimensions: tuple[int, int],
                       groups: Mapping[str, str] | None = None) -> list[Polygon]:
    """The tumour regions of an annotation as level-0 polygons, each with its holes (the
    exclusion / normal polygons cut out of it); a PNG mask is traced."""
    annotation = read_annotation(path, slide_dimensions, groups)
    if isinstance(annotation, PolygonAnnotation):
        return annotation.regions()
    return [p for p in annotation.polygons() if p.role == "tumour"]


def exclude_cells(cells: pd.DataFrame, grid: GridSpec, exclusion: AnnotationMask | None) -> pd.DataFrame:
    """Cells (``patch_table`` rows) touching an exclusion region get ``tumour_frac`` NaN, so
    ``label_patches`` makes them ambiguous (-1): neither tumour nor normal."""
    if exclusion is None or cells.empty:
        return cells
    from helpkit.slide.grid import cell_fractions

    touched = cell_fractions(exclusion.mask, exclusion.downsample, grid) > 0
    hit = touched[cells["row"].to_numpy(), cells["col"].to_numpy()]
    if not hit.any():
        return cells
    tumour = cells["tumour_frac"].to_numpy(dtype=np.float32, copy=True)
    tumour[hit] = np.nan
    return cells.assign(tumour_frac=tumour)
