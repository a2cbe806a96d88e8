"""Tissue masks from a low-resolution level: where on the slide there is anything to look at.

Vectorised throughout (numpy + scipy.ndimage): saturation, a black-margin cut, an Otsu
threshold, then small specks removed and small holes filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from helpkit.slide.geometry import MPP_TOLERANCE, TISSUE_MPP
from helpkit.slide.reader import SlideReader


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask; pixel (r, c) covers level-0 pixels [c*ds, (c+1)*ds) x [r*ds, (r+1)*ds)."""

    mask: np.ndarray
    downsample: float


def _extremes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel brightest and darkest channel (element-wise on channel views: several times
    faster than ``rgb.max(axis=2)``, whose reduction runs over a 3-long axis)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(red, green), blue), np.minimum(np.minimum(red, green), blue)


def _saturation(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    hi32 = hi.astype(np.float32)
    return np.divide(hi32 - lo, hi32, out=np.zeros_like(hi32), where=hi > 0)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max of an (H, W, 3) uint8 image as float32 in [0, 1]; 0 for black."""
    return _saturation(*_extremes(rgb))


def _drop_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Remove connected components of at most ``max_size`` pixels.

    scipy.ndimage rather than skimage.morphology.remove_small_objects, whose size keyword
    changed name across the scikit-image versions helpkit supports.
    """
    if max_size <= 0 or not mask.any():
        return mask
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]


def tissue_from_rgb(
    rgb: np.ndarray,
    *,
    black_value: int = 50,
    min_saturation: float = 0.04,
    max_saturation: float = 0.2,
    min_object_pixels: int = 64,
    max_hole_pixels: int = 64,
) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Pixels whose brightest channel is below ``black_value`` (non-scanned margins, as in
    MRXS) are never tissue. The rest is thresholded on saturation with Otsu's method, the
    threshold clamped to [min_saturation, max_saturation] so an all-background or
    all-tissue thumbnail still splits sensibly; white background has almost no saturation.
    Then components of at most ``min_object_pixels`` are removed and holes of at most
    ``max_hole_pixels`` filled.
    """
    hi, lo = _extremes(rgb)
    sat = _saturation(hi, lo)
    scanned = hi >= black_value
    if not scanned.any():
        return np.zeros(sat.shape, dtype=bool)
    values = sat[scanned]
    threshold = threshold_otsu(values) if np.ptp(values) > 0 else max_saturation
    threshold = float(np.clip(threshold, min_saturation, max_saturation))
    mask = scanned & (sat > threshold)
    mask = _drop_small(mask, min_object_pixels)
    return ~_drop_small(~mask, max_hole_pixels) & scanned


def tissue_level(reader: SlideReader, mpp: float = TISSUE_MPP) -> int:
    """The coarsest level at or finer than ``mpp`` microns per pixel, allowing 1% for rounding:
    a pyramid of odd sizes has downsamples like 32.01, which should count as 32."""
    return reader.best_level_for_downsample(mpp / reader.base_mpp * (1 + MPP_TOLERANCE))


def tissue_mask(
    reader: SlideReader,
    mpp: float = TISSUE_MPP,
    *,
    min_object_area0: float = 256.0**2,
    max_hole_area0: float = 256.0**2,
    **thresholds: float,
) -> TissueMask:
    """The tissue mask of a slide at about ``mpp`` microns per pixel, from the level
    :func:`tissue_level` picks; a level eight or more times finer (a slide with few levels, a
    single-level slide) is first reduced by the whole factor, area-averaged, which bounds its
    memory. A level within 8x of ``mpp`` is used as it is (a small pyramid's coarsest).

    Object and hole sizes are level-0 areas, so the result does not depend on which
    level the slide happens to have; ``thresholds`` go to :func:`tissue_from_rgb`.
    """
    level = tissue_level(reader, mpp)
    ds = reader.level_downsamples[level]
    rgb = reader.read_level(level)
    factor = int(mpp / reader.base_mpp * (1 + MPP_TOLERANCE) / ds)
    if factor >= 8:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
        ds *= factor
    mask = tissue_from_rgb(
        rgb,
        min_object_pixels=int(min_object_area0 / ds**2),
        max_hole_pixels=int(max_hole_area0 / ds**2),
        **thresholds,  # type: ignore[arg-type]
    )
    return TissueMask(mask=mask, downsample=ds)
