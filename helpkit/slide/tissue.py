"""Tissue masks from a low-resolution level: where on the slide there is anything to look at.

Tissue absorbs light; glass does not. The mask thresholds optical density (OD) against the
slide's own glass white, estimated from the thumbnail, so it holds across stain strength,
hue, fading, brightness and white balance. The threshold adapts to each slide (the glass
noise or the triangle threshold, capped by Otsu's, on the OD histogram). A mask covering
almost nothing or almost everything is implausible: then the saturation criterion (Otsu on
HSV saturation, the former method) and last a fixed OD floor are tried, and
``TissueMask.method`` says which one made the mask. Black non-scanned margins and pen ink
(green, blue, black) on glass are never tissue; tissue under ink is. Small specks are removed
and small holes filled. Vectorised throughout (numpy + scipy.ndimage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from helpkit.slide.geometry import MPP_TOLERANCE, TISSUE_MPP
from helpkit.slide.reader import SlideReader, log

OD_MIN_THRESHOLD = 0.02
"""Lowest adaptive OD threshold (mean over channels): scanner noise and JPEG on glass stay below."""

OD_MAX_THRESHOLD = 0.15
"""Highest adaptive OD threshold: pale tissue (fat, loose stroma, faded stain) stays above."""

OD_FLOOR = 0.04
"""The last fallback's fixed OD threshold."""

MIN_FRACTION, MAX_FRACTION = 0.002, 0.97
"""A mask covering less or more of the scanned area than this is implausible."""

WHITE_QUANTILE = 0.99
"""The glass white is the median colour of scanned pixels at least this bright (by quantile)."""

MIN_WHITE, MAX_WHITE_SATURATION = 120.0, 0.3
"""A white estimate darker (in any channel) or more coloured than this is tissue, not glass."""

INK_OD = 0.25
"""Green or blue ink cores: strongest channel OD above this (paler pixels are too noisy to tell)."""

INK_RIM_OD = 0.05
"""Ink rims (grown from cores): strongest channel OD above this."""

INK_BLACK_OD = 0.8
"""Black ink cores: neutral pixels whose strongest channel OD exceeds this."""

INK_TISSUE_OD = 0.08
"""Green-channel OD beyond the ink's own that marks tissue under ink."""

INK_QUANTILE = 0.25
"""Percentile of g / r over an ink's core taken as the ink's own (low: ink on glass)."""

CLEAN_AREA_UM2 = 64.0**2
"""Default area of the specks removed and holes filled, square microns (a 64 um square)."""

_SAMPLE_PIXELS = 1 << 20
"""Whites and thresholds are estimated on a strided sample of at most about this many pixels."""


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask; pixel (r, c) covers level-0 pixels [c*ds, (c+1)*ds) x [r*ds, (r+1)*ds)."""

    mask: np.ndarray
    downsample: float
    method: str = "od"
    """Criterion that made the mask: 'od' (adaptive optical density), or a fallback taken because
    it covered almost nothing or almost everything: 'saturation', then 'od-floor'."""
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The RGB the mask was found in (same grid), for what else is estimated from a slide's tissue
    at this resolution (``helpkit.slide.stain_normalise.slide_stains``) without reading it again."""

    @property
    def fallback(self) -> bool:
        """True when the adaptive OD mask was implausible and a fallback made this one."""
        return self.method != "od"


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


def _sample(rgb: np.ndarray) -> np.ndarray:
    """A strided view of at most about ``_SAMPLE_PIXELS`` pixels."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / _SAMPLE_PIXELS)))
    return rgb[::step, ::step]


def background_white(rgb: np.ndarray, black_value: int = 50) -> np.ndarray | None:
    """The glass white of an RGB thumbnail, float32 (3,) per channel, or None when no glass shows.

    The median colour of the brightest ``1 - WHITE_QUANTILE`` of scanned pixels (brightest
    channel >= ``black_value``); None when that colour is too dark or too coloured to be glass
    (a thumbnail all tissue, or all margin).
    """
    rgb = _sample(rgb)
    scanned = _extremes(rgb)[0] >= black_value
    if not scanned.any():
        return None
    pixels = rgb[scanned]
    brightness = pixels.sum(axis=1, dtype=np.int32)
    counts = np.cumsum(np.bincount(brightness, minlength=766))
    cut = int(np.searchsorted(counts, WHITE_QUANTILE * counts[-1]))
    white = np.median(pixels[brightness >= cut], axis=0).astype(np.float32)
    if white.min() < MIN_WHITE or (white.max() - white.min()) / white.max() > MAX_WHITE_SATURATION:
        return None
    return white


def _channel_od(pixels: np.ndarray, white: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel optical density log(white / I) of (..., 3) uint8 pixels, float32 each
    (negative where brighter than the white)."""
    levels = np.log(np.maximum(np.arange(256, dtype=np.float32), 0.5))
    od_r, od_g, od_b = (np.log(np.float32(w)) - levels[pixels[..., c]] for c, w in enumerate(white))
    return od_r, od_g, od_b


def _mean_od(pixels: np.ndarray, white: np.ndarray) -> np.ndarray:
    od_r, od_g, od_b = _channel_od(pixels, white)
    return (od_r + od_g + od_b) / 3


def _darker_than(rgb: np.ndarray, white: np.ndarray, od: float) -> np.ndarray:
    """Where the mean OD exceeds ``od``: the channel product below the white's times exp(-3 od),
    in float32, exact for products of three uint8 values (no logarithm per pixel)."""
    product = rgb[..., 0].astype(np.float32) * rgb[..., 1] * rgb[..., 2]
    return product < np.float32(np.prod(white.astype(np.float64)) * np.exp(-3 * od))


def _ink(rgb: np.ndarray, lo: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Pen ink over glass. H&E absorbs green most; blue ink absorbs red most and blue least,
    green ink absorbs green less than red or blue, black ink all channels alike. Each ink's
    dense core is grown by two pixels over its paler rim. Ink and stain ODs add, so under ink
    of OD direction (r, g, b) tissue shows as ``od_g - (g / r) od_r > INK_TISSUE_OD``; g / r
    of each ink is a low percentile over its core (lowest on glass, where it covers nothing)."""
    ink = np.zeros(lo.shape, dtype=bool)
    idx = np.flatnonzero(lo < float(white.max()) * np.exp(-INK_RIM_OD))
    od_r, od_g, od_b = _channel_od(rgb.reshape(-1, 3)[idx], white)
    strongest = np.maximum(np.maximum(od_r, od_g), od_b)
    blue = (od_r > 1.2 * od_g) & (od_b < od_g)
    green = ~blue & (od_g < 0.8 * np.maximum(od_r, od_b))
    black = ~green & ~blue & (np.minimum(np.minimum(od_r, od_g), od_b) > 0.85 * strongest)
    for kind, core_od in ((green, INK_OD), (blue, INK_OD), (black, INK_BLACK_OD)):
        core = kind & (strongest > core_od)
        if not core.any():
            continue
        ratio = np.quantile(od_g[core] / np.maximum(od_r[core], 1e-3), INK_QUANTILE)
        grown, rim = np.zeros_like(ink), np.zeros_like(ink)
        grown.flat[idx[core]], rim.flat[idx[kind]] = True, True
        kind = ndimage.binary_dilation(grown, iterations=2, mask=rim).flat[idx]
        ink.flat[idx[kind & (od_g - ratio * od_r <= INK_TISSUE_OD)]] = True
    return ink


def _triangle(counts: np.ndarray, centres: np.ndarray) -> float:
    """Triangle threshold (Zack et al. 1977) on the high side of the histogram's peak: the bin
    farthest below the line from the peak to the histogram's last bin."""
    peak, end = int(np.argmax(counts)), len(counts) - 1
    if end == peak:
        return float(centres[peak])
    x = np.arange(peak, end + 1)
    line = counts[peak] + (counts[end] - counts[peak]) * (x - peak) / (end - peak)
    return float(centres[peak + int(np.argmax(line - counts[peak:]))])


def _od_threshold(values: np.ndarray) -> float:
    """Adaptive threshold on the OD of scanned pixels, from one histogram.

    Otsu's threshold splits glass from tissue but sits too high when tissue spreads over a wide
    OD range (faded, grey, thin sections); the glass class below it gives the glass noise: its
    median plus twice the median's distance to its 1st percentile (tissue only adds OD, so the
    low side is glass alone). The threshold is that noise bound or the triangle threshold,
    whichever is higher, but never above Otsu's, clamped to [OD_MIN_THRESHOLD, OD_MAX_THRESHOLD].
    """
    if not values.size:
        return OD_MAX_THRESHOLD
    low = min(float(values.min()), 0.0)
    counts, edges = np.histogram(np.clip(values, low, 1.0), bins=1024, range=(low, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    if np.count_nonzero(counts) < 2:
        return OD_MAX_THRESHOLD
    otsu = float(threshold_otsu(hist=(counts, centres)))
    below = np.cumsum(counts * (centres < otsu))
    median, first = (centres[np.searchsorted(below, q * below[-1])] for q in (0.5, 0.01))
    noise = median + 2 * (median - first)
    t = min(otsu, max(noise, _triangle(counts, centres)))
    return float(np.clip(t, OD_MIN_THRESHOLD, OD_MAX_THRESHOLD))


def _plausible(mask: np.ndarray, scanned_count: int) -> bool:
    return MIN_FRACTION * scanned_count <= mask.sum() <= MAX_FRACTION * scanned_count


def _saturation_mask(sat: np.ndarray, scanned: np.ndarray, low: float, high: float) -> np.ndarray:
    values = sat[scanned]
    threshold = threshold_otsu(values) if np.ptp(values) > 0 else high
    return scanned & (sat > float(np.clip(threshold, low, high)))


def _margin(hi: np.ndarray, black_value: int) -> np.ndarray:
    """The non-scanned margin: pixels whose brightest channel is below ``black_value``, in
    regions touching the thumbnail's edge (dense ink or folds inside the slide are darker than
    that too, but are not margin)."""
    dark = hi < black_value
    if not dark.any():
        return dark
    labels, n = ndimage.label(dark)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    keep[0] = False
    return keep[labels]


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


def find_tissue(
    rgb: np.ndarray,
    *,
    black_value: int = 50,
    min_saturation: float = 0.04,
    max_saturation: float = 0.2,
    min_object_pixels: int = 64,
    max_hole_pixels: int = 64,
) -> tuple[np.ndarray, str]:
    """Boolean tissue mask of an RGB thumbnail and the criterion that made it (see the module).

    Pixels whose brightest channel is below ``black_value`` in regions touching the edge
    (non-scanned margins, as in MRXS) are never tissue. Without visible glass the white is
    taken as 255. The saturation fallback clamps Otsu's threshold to [``min_saturation``,
    ``max_saturation``]. Components of at most ``min_object_pixels`` are removed and holes of
    at most ``max_hole_pixels`` filled.
    """
    hi, lo = _extremes(rgb)
    scanned = ~_margin(hi, black_value)
    n_scanned = int(scanned.sum())
    if not n_scanned:
        return np.zeros(scanned.shape, dtype=bool), "od"
    white = background_white(rgb, black_value)
    white = np.full(3, 255.0, np.float32) if white is None else white
    usable = scanned & ~_ink(rgb, lo, white)
    sample = _sample(rgb)[_sample(usable)]
    method = "od"
    mask = usable & _darker_than(rgb, white, _od_threshold(_mean_od(sample, white)))
    if not _plausible(mask, n_scanned):
        method = "saturation"
        mask = _saturation_mask(_saturation(hi, lo), usable, min_saturation, max_saturation)
    if not _plausible(mask, n_scanned):
        method = "od-floor"
        mask = usable & _darker_than(rgb, white, OD_FLOOR)
    mask = _drop_small(mask, min_object_pixels)
    return ~_drop_small(~mask, max_hole_pixels) & usable, method


def tissue_from_rgb(rgb: np.ndarray, **options: float) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail: :func:`find_tissue` (same keyword options)
    without the criterion."""
    return find_tissue(rgb, **options)[0]  # type: ignore[arg-type]


def tissue_level(reader: SlideReader, mpp: float = TISSUE_MPP) -> int:
    """The coarsest level at or finer than ``mpp`` microns per pixel, allowing 1% for rounding:
    a pyramid of odd sizes has downsamples like 32.01, which should count as 32."""
    return reader.best_level_for_downsample(mpp / reader.base_mpp * (1 + MPP_TOLERANCE))


def tissue_mask(
    reader: SlideReader,
    mpp: float = TISSUE_MPP,
    *,
    min_object_area0: float | None = None,
    max_hole_area0: float | None = None,
    **thresholds: float,
) -> TissueMask:
    """The tissue mask of a slide at about ``mpp`` microns per pixel, from the level
    :func:`tissue_level` picks; a level eight or more times finer (a slide with few levels, a
    single-level slide) is first reduced by the whole factor, area-averaged, which bounds its
    memory. A level within 8x of ``mpp`` is used as it is (a small pyramid's coarsest).

    Object and hole sizes are level-0 areas (default: ``CLEAN_AREA_UM2`` at the slide's
    mpp), so the result does not depend on which level the slide happens to have;
    ``thresholds`` go to :func:`find_tissue`.
    """
    default_area0 = CLEAN_AREA_UM2 / reader.base_mpp**2
    min_object_area0 = default_area0 if min_object_area0 is None else min_object_area0
    max_hole_area0 = default_area0 if max_hole_area0 is None else max_hole_area0
    level = tissue_level(reader, mpp)
    ds = reader.level_downsamples[level]
    rgb = reader.read_level(level)
    factor = int(mpp / reader.base_mpp * (1 + MPP_TOLERANCE) / ds)
    if factor >= 8:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
        ds *= factor
    mask, method = find_tissue(
        rgb,
        min_object_pixels=int(min_object_area0 / ds**2),
        max_hole_pixels=int(max_hole_area0 / ds**2),
        **thresholds,  # type: ignore[arg-type]
    )
    if method != "od":
        log.warning("%s: tissue found by the %s fallback (the optical-density mask covered almost nothing "
                    "or almost everything)", reader.path, method)
    return TissueMask(mask=mask, downsample=ds, method=method, image=rgb)
