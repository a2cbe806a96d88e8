"""The layout of one synthetic slide: where tissue, lymphoid follicles and tumour lie.

A plan is a handful of low-resolution arrays (a few hundred nodes a side whatever the
slide size) sampled bilinearly at level-0 coordinates. The renderer and the annotation
mask read the same interpolants, so the mask marks exactly the tumour that is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from helpkit.io import atomic_path
from helpkit.synth.field import Plan2D, value_noise

PLAN_NODES = 512
"""Plan arrays have at most this many nodes a side (the cell grows with the slide)."""

MIN_REGION_NODES = 12
"""Tumour pieces smaller than this many plan nodes are dropped (they would be specks)."""

TUMOUR_INSET = 0.08
"""Tumour stays where the tissue field exceeds this, so it never touches the tissue edge."""


@dataclass
class SlidePlan:
    """Level-0 layout of one slide; every field is positive where its feature is present."""

    width: int
    height: int
    seed: int
    tissue: Plan2D
    """> 0 inside tissue."""
    tumour: Plan2D | None
    """> 0 inside tumour (only where tissue > TUMOUR_INSET); None for negative slides."""
    lymph: Plan2D
    """0..1 weight of dense lymphocyte (follicle) texture."""
    cellular: Plan2D
    """0..1 weight of cellular parenchyma against loose stroma."""
    margin: tuple[int, int]
    """(left, top) widths of the black non-scanned band, level-0 pixels."""

    def in_margin(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """True where level-0 points (broadcast) lie in the non-scanned margin."""
        return (np.asarray(xs) < self.margin[0]) | (np.asarray(ys) < self.margin[1])

    def tumour_mask(self, downsample: int) -> np.ndarray:
        """Boolean tumour mask at ``downsample`` of level 0 (pixel centres sampled)."""
        h, w = -(-self.height // downsample), -(-self.width // downsample)
        mask = np.zeros((h, w), dtype=bool)
        if self.tumour is None:
            return mask
        xs = (np.arange(w) + 0.5) * downsample
        strip = max(1, 4_000_000 // max(w, 1))
        for r in range(0, h, strip):
            ys = (np.arange(r, min(r + strip, h)) + 0.5) * downsample
            mask[r : r + len(ys)] = self.tumour.grid(xs, ys) > 0
        return mask


def _ellipse_distance(
    gx: np.ndarray, gy: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float
) -> np.ndarray:
    """Normalised elliptical distance: 1 on the ellipse's outline."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = gx - cx, gy - cy
    return np.sqrt(((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2)


def make_plan(width: int, height: int, seed: int, positive: bool) -> SlidePlan:
    """Draw a slide layout: irregular tissue pieces, follicles, a margin and tumour if positive."""
    rng = np.random.default_rng([seed, 0x5EED])
    side = max(width, height)
    cell = max(16.0, float(2 ** int(np.ceil(np.log2(side / PLAN_NODES)))))
    ny, nx = int(np.ceil(height / cell)), int(np.ceil(width / cell))
    xs, ys = (np.arange(nx) + 0.5) * cell, (np.arange(ny) + 0.5) * cell
    gx, gy = np.meshgrid(xs, ys)

    # the non-scanned band of an MRXS slide: along the left edge, the top edge, or both
    sides = ("left", "top", "both")[int(rng.integers(3))]
    margin = (
        int(rng.uniform(0.03, 0.08) * width) if sides != "top" else 0,
        int(rng.uniform(0.03, 0.08) * height) if sides != "left" else 0,
    )
    scanned = (gx >= margin[0]) & (gy >= margin[1])
    left, top = margin[0] + 0.06 * width, margin[1] + 0.06 * height
    right, bottom = 0.94 * width, 0.94 * height

    blob = np.full(gx.shape, -1.0)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(left + 0.15 * width, right - 0.15 * width), rng.uniform(
            top + 0.15 * height, bottom - 0.15 * height
        )
        rx, ry = rng.uniform(0.14, 0.32) * width, rng.uniform(0.14, 0.32) * height
        d = _ellipse_distance(gx, gy, cx, cy, rx, ry, rng.uniform(0, np.pi))
        blob = np.maximum(blob, 1.0 - d)
    noise_seed = int(rng.integers(2**31))
    rough = (
        0.5 * (value_noise(noise_seed, xs, ys, side / 5) - 0.5)
        + 0.25 * (value_noise(noise_seed + 1, xs, ys, side / 18) - 0.5)
        + 0.1 * (value_noise(noise_seed + 2, xs, ys, side / 60) - 0.5)
    )
    holes = np.clip(value_noise(noise_seed + 3, xs, ys, side / 25) - 0.72, 0, None) * 2.0
    edge = np.minimum.reduce([gx - left, right - gx, gy - top, bottom - gy]) / (0.05 * side)
    # a soft penalty towards the slide's edges bends outlines inwards; the hard cap after it
    # keeps tissue off the edges and out of the non-scanned margin
    raw = blob + rough - holes - 2.0 * np.clip(1.0 - edge / 3.0, 0, 1) ** 2
    tissue = np.minimum(raw, np.clip(edge, -1, 1))
    tissue = np.where(scanned, tissue, -1.0).astype(np.float32)

    cellular = np.clip((value_noise(noise_seed + 4, xs, ys, side / 10) - 0.25) * 4.0, 0, 1)
    lymph = np.zeros_like(tissue)
    tissue_nodes = np.argwhere(tissue > 0.1)
    for _ in range(int(rng.integers(1, 5))):
        if not len(tissue_nodes):
            break
        i, j = tissue_nodes[rng.integers(len(tissue_nodes))]
        r = rng.uniform(0.03, 0.08) * side
        d = _ellipse_distance(gx, gy, xs[j], ys[i], r, r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi))
        lymph = np.maximum(lymph, np.clip((1.0 - d) * 4.0, 0, 1))

    tumour = _tumour_field(rng, gx, gy, xs, ys, tissue, side, noise_seed + 5) if positive else None
    return SlidePlan(
        width=width,
        height=height,
        seed=seed,
        tissue=Plan2D(tissue, cell),
        tumour=None if tumour is None else Plan2D(tumour, cell),
        lymph=Plan2D(lymph, cell),
        cellular=Plan2D(cellular, cell),
        margin=margin,
    )


def _tumour_field(
    rng: np.random.Generator,
    gx: np.ndarray,
    gy: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    tissue: np.ndarray,
    side: int,
    noise_seed: int,
) -> np.ndarray:
    """Tumour deposits of log-uniform size (micro-metastases to large regions), inside tissue.

    The field is capped by a positive multiple of ``tissue - TUMOUR_INSET`` at every node;
    bilinear interpolation keeps that inequality, so tumour is inside tissue everywhere.
    """
    cell = xs[1] - xs[0] if len(xs) > 1 else side
    deep = np.argwhere(ndimage.distance_transform_edt(tissue > TUMOUR_INSET) > 3)
    if not len(deep):
        deep = np.argwhere(tissue == tissue.max())
    r_min, r_max = max(120.0, 0.012 * side, 3 * cell), 0.2 * side
    # always one micro-metastasis; a quarter of positive slides have nothing else (the hard
    # cases), the others add deposits of log-uniform size from mid-sized to large
    n = int(rng.integers(1, 5))
    r_mid = np.sqrt(r_min * r_max)
    radii = np.exp(rng.uniform(np.log(r_mid), np.log(r_max), size=n))
    radii[0] = r_min * rng.uniform(1.0, 1.6)
    field = np.full(gx.shape, -1.0)
    for r in radii:
        i, j = deep[rng.integers(len(deep))]
        d = _ellipse_distance(gx, gy, xs[j], ys[i], r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
        field = np.maximum(field, 1.0 - d)
    wobble = value_noise(noise_seed, xs, ys, max(r_min, side / 30)) - 0.5
    field = np.minimum(field + 0.3 * wobble, 4.0 * (tissue - TUMOUR_INSET))
    # drop specks of a few nodes: lowering nodes keeps the field under the tissue cap
    labels, _ = ndimage.label(field > 0)
    sizes = np.bincount(labels.ravel())
    specks = (sizes < MIN_REGION_NODES)[labels] & (labels > 0)
    field[specks] = -0.01
    return field.astype(np.float32)


def tumour_regions(mask: np.ndarray, downsample: int) -> list[dict[str, int]]:
    """Connected tumour regions of ``mask`` as level-0 boxes and areas."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    counts = np.bincount(labels.ravel())
    regions = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = box
        regions.append(
            {
                "x": cols.start * downsample,
                "y": rows.start * downsample,
                "w": (cols.stop - cols.start) * downsample,
                "h": (rows.stop - rows.start) * downsample,
                "area": int(counts[k]) * downsample * downsample,
            }
        )
    return regions


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a tumour mask as an 8-bit PNG, 255 for tumour, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(tmp, optimize=False)
