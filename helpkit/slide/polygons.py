"""Level-0 polygons: rasterising them at any downsample, tracing them from masks, writing them.

One pixel convention throughout helpkit: pixel (r, c) of a mask at downsample ``ds`` covers
level-0 [c*ds, (c+1)*ds) x [r*ds, (r+1)*ds), and a polygon covers the pixel when it holds the
pixel's centre ((c + 0.5) * ds, (r + 0.5) * ds). Rings are filled with the even-odd rule, so
a polygon's holes (its interior rings) come out empty in the same pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from helpkit.io import write_text

ROLES = ("tumour", "exclusion", "normal")


@dataclass(frozen=True)
class Polygon:
    """One annotated region in level-0 pixels.

    ``exterior`` is an (n, 2) float array of (x, y) vertices (not closed: the last vertex
    joins the first); ``holes`` are rings of the same form cut out of it. ``role`` is
    'tumour', 'exclusion' (neither tumour nor normal) or 'normal'; ``group`` and ``name``
    are the file's own words (ASAP ``PartOfGroup`` and ``Name``, GeoJSON class and id).
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    role: str = "tumour"
    group: str = ""
    name: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def rings(self) -> list[np.ndarray]:
        return [self.exterior, *self.holes]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the exterior, level-0."""
        (x0, y0), (x1, y1) = self.exterior.min(axis=0), self.exterior.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        """Level-0 area: the exterior's minus its holes' (shoelace)."""
        return _ring_area(self.exterior) - sum(_ring_area(h) for h in self.holes)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def mask_shape(dimensions: tuple[int, int], downsample: float) -> tuple[int, int]:
    """(rows, cols) of a mask of a ``dimensions`` (w, h) slide at ``downsample``: ceil of each side."""
    width, height = dimensions
    return max(1, int(np.ceil(height / downsample - 1e-9))), max(1, int(np.ceil(width / downsample - 1e-9)))


def fill_rings(
    rings: list[np.ndarray], shape: tuple[int, int], downsample: tuple[float, float], out: np.ndarray | None = None
) -> np.ndarray:
    """Rasterise rings (level-0 (x, y) vertices) together under the even-odd rule into a
    bool (rows, cols) mask at ``downsample`` (x, y), OR-ed into ``out`` when given.

    A scanline fill, vectorised over edges: each edge toggles the parity of every pixel
    centre to the right of where it crosses that centre row (half-open in y, so a vertex
    is never counted twice). Work is O(rows crossed x edges + window), whatever the
    vertex count, and only the rings' bounding window is touched.
    """
    rows, cols = shape
    out = np.zeros(shape, dtype=bool) if out is None else out
    dsx, dsy = downsample
    rings = [np.asarray(r, dtype=np.float64) for r in rings if len(r) >= 3]
    if not rings:
        return out
    # Pixel-centre coordinates: the centre of pixel (r, c) sits at (c, r).
    x0 = np.concatenate([r[:, 0] for r in rings]) / dsx - 0.5
    y0 = np.concatenate([r[:, 1] for r in rings]) / dsy - 0.5
    x1 = np.concatenate([np.roll(r[:, 0], -1) for r in rings]) / dsx - 0.5
    y1 = np.concatenate([np.roll(r[:, 1], -1) for r in rings]) / dsy - 0.5
    top = max(0, int(np.ceil(min(y0.min(), y1.min()))))
    bottom = min(rows, int(np.ceil(max(y0.max(), y1.max()))))
    if bottom <= top:
        return out
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    start = np.clip(np.ceil(lo), top, bottom).astype(np.int64)
    stop = np.clip(np.ceil(hi), top, bottom).astype(np.int64)
    counts = np.maximum(stop - start, 0)
    if counts.sum() == 0:
        return out
    edge = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    row = start[edge] + (np.arange(counts.sum()) - first[edge])
    slope = (x1 - x0)[edge] / (y1 - y0)[edge]  # never 0/0: horizontal edges cross no row
    xs = x0[edge] + (row - y0[edge]) * slope
    col = np.clip(np.ceil(xs), 0, cols).astype(np.int64)
    toggles = np.zeros((bottom - top, cols + 1), dtype=np.uint8)
    np.bitwise_xor.at(toggles, (row - top, col), 1)
    inside = np.bitwise_xor.accumulate(toggles, axis=1)[:, :cols].astype(bool)
    out[top:bottom] |= inside
    return out


def fill_polygons(
    polygons: list[Polygon], shape: tuple[int, int], downsample: tuple[float, float], keep_small: bool = True
) -> np.ndarray:
    """Union of ``polygons`` (each with its holes) as a bool mask at ``downsample``.

    With ``keep_small``, a polygon that covers no pixel centre (smaller than a pixel)
    still marks the pixel holding its vertex mean, so tiny lesions survive coarse masks.
    """
    out = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        mine = fill_rings(polygon.rings(), shape, downsample)
        out |= mine
        if keep_small and not mine.any():
            cx, cy = polygon.exterior.mean(axis=0)
            r = min(max(int(cy // downsample[1]), 0), shape[0] - 1)
            c = min(max(int(cx // downsample[0]), 0), shape[1] - 1)
            out[r, c] = True
    return out


def trace_mask(mask: np.ndarray, downsample: float, role: str = "tumour", group: str = "", min_pixels: int = 1,
               tolerance: float = 0.0) -> list[Polygon]:
    """Level-0 polygons, holes included, of each connected component of ``mask`` at ``downsample``.

    Contours run through the midpoints between pixel centres (``skimage.measure.find_contours``
    at 0.5), so :func:`fill_polygons` at the same downsample gives the mask back.
    ``tolerance`` (mask pixels) simplifies the rings (Douglas-Peucker); 0 keeps every vertex,
    a tiny one (0.01) drops only the collinear ones and keeps the mask exact.
    """
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    def ring(component: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
        padded = np.pad(component, 1).astype(np.float32)
        contour = max(find_contours(padded, 0.5), key=len)  # closed: the last vertex repeats the first
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        contour = contour[:-1]
        rows, cols = contour[:, 0] - 1 + offset[0], contour[:, 1] - 1 + offset[1]
        return np.column_stack([(cols + 0.5) * downsample, (rows + 0.5) * downsample])

    labels, n = ndimage.label(mask)
    polygons = []
    for k, window in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[window] == k
        if component.sum() < min_pixels:
            continue
        offset = (window[0].start, window[1].start)
        filled = ndimage.binary_fill_holes(component)
        hole_labels, n_holes = ndimage.label(filled & ~component)
        holes = tuple(ring(hole_labels == h, offset) for h in range(1, n_holes + 1))
        polygons.append(Polygon(ring(filled, offset), holes, role=role, group=group, name=f"Annotation {k - 1}"))
    return polygons


ASAP_GROUP_COLOURS = {"tumour": "#F4FA58", "exclusion": "#64FE2E", "normal": "#0000FF"}


def asap_xml(polygons: list[Polygon], hole_group: str = "Exclusion") -> str:
    """An ASAP XML document of ``polygons``: each ring its own ``Polygon`` annotation (ASAP has
    no holes); a tumour polygon's holes go to ``hole_group`` (CAMELYON16 ``Exclusion``, or
    CAMELYON17 ``normal``), other polygons to their own group."""
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    groups: dict[str, str] = {}
    k = 0
    for polygon in polygons:
        group = polygon.group or {"tumour": "Tumor", "exclusion": "Exclusion", "normal": "normal"}[polygon.role]
        holes = hole_group if polygon.role == "tumour" else group
        for ring, ring_group in [(polygon.exterior, group)] + [(h, holes) for h in polygon.holes]:
            role = polygon.role if ring_group == group else ("normal" if holes.lower() == "normal" else "exclusion")
            groups.setdefault(ring_group, ASAP_GROUP_COLOURS[role])
            lines.append(f'\t\t<Annotation Name="Annotation {k}" Type="Polygon" PartOfGroup={quoteattr(ring_group)} '
                         f'Color="{groups[ring_group]}">')
            lines.append("\t\t\t<Coordinates>")
            lines += [f'\t\t\t\t<Coordinate Order="{i}" X="{x:.4f}" Y="{y:.4f}" />' for i, (x, y) in enumerate(ring)]
            lines += ["\t\t\t</Coordinates>", "\t\t</Annotation>"]
            k += 1
    lines += ["\t</Annotations>", "\t<AnnotationGroups>"]
    for name, colour in groups.items():
        lines.append(f'\t\t<Group Name={quoteattr(name)} PartOfGroup="None" Color="{colour}">')
        lines += ["\t\t\t<Attributes />", "\t\t</Group>"]
    lines += ["\t</AnnotationGroups>", "</ASAP_Annotations>", ""]
    return "\n".join(lines)


def write_asap_xml(path: str | Path, polygons: list[Polygon], hole_group: str = "Exclusion") -> Path:
    """Write :func:`asap_xml` atomically."""
    write_text(path, asap_xml(polygons, hole_group))
    return Path(path)


def geojson(polygons: list[Polygon]) -> dict:
    """A QuPath-style GeoJSON FeatureCollection, one Polygon feature per polygon (holes kept)."""

    def closed(ring: np.ndarray) -> list[list[float]]:
        points = [[float(x), float(y)] for x, y in ring]
        return points + points[:1]

    features = [
        {"type": "Feature",
         "geometry": {"type": "Polygon", "coordinates": [closed(r) for r in p.rings()]},
         "properties": {"objectType": "annotation",
                        "classification": {"name": p.group or {"tumour": "Tumor", "exclusion": "Exclusion",
                                                               "normal": "Normal"}[p.role]}}}
        for p in polygons
    ]
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, polygons: list[Polygon]) -> Path:
    """Write :func:`geojson` atomically."""
    write_text(path, json.dumps(geojson(polygons)))
    return Path(path)
