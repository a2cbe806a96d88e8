"""Slide-level features of one heatmap: the numbers a stacker learns a slide's label from.

Every statistic is over the *valid* cells: tissue cells that were read (not missing) and
have a finite probability. Areas are in grid cells ("patches") unless named ``_mm2``.
Components are 8-connected regions of cells at or above a threshold (scikit-image's
``label``/``regionprops``). With no valid cell every statistic is NaN and counts are 0; with
no component the component features are 0 (no tumour region: nothing inside it).

One line per feature (``T`` is each of ``THRESHOLDS``, written as a percentage, e.g. 50):

- ``max``: highest probability on the slide.
- ``mean``: mean probability over tissue.
- ``std``: standard deviation of the probability over tissue.
- ``q50``, ``q90``, ``q95``, ``q99``: quantiles of the probability over tissue.
- ``logit_max_minus_q50``: logit of the max minus the median logit over tissue: how far the
  hottest cell stands above the slide's own typical tissue, unchanged when a stain shift
  adds a constant to every cell's logit (probabilities are clipped to [1e-6, 1 - 1e-6]).
- ``logit_max_minus_q90``: the same above the 90th percentile of the logits.
- ``logit_max_z``: (logit of the max - mean logit) / std of the logits (0 when the std is 0);
  unchanged also when the shift scales every logit.
- ``n_above_T``: number of tissue cells with probability >= T/100.
- ``frac_above_T``: that number over the number of valid tissue cells.
- ``cc_T_count``: number of connected components of cells >= T/100.
- ``cc_T_largest_area``: cells in the largest such component.
- ``cc_T_largest_max``: highest probability inside the largest component.
- ``cc_T_largest_mean``: mean probability inside the largest component.
- ``cc_T_largest_major_axis``: major axis length (cells) of the ellipse with the largest
  component's second moments.
- ``tissue_patches``: number of tissue cells of the grid (missing ones included).
- ``tissue_mm2``: tissue area in mm^2 (cells x stride0^2 x mpp^2); NaN when mpp is unknown.
- ``missing_frac``: fraction of tissue cells that could not be read.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from skimage.measure import label, regionprops

from helpkit.heatmap.store import Heatmap

THRESHOLDS = (0.5, 0.9)
QUANTILES = (50, 90, 95, 99)
_CC_FEATURES = ("count", "largest_area", "largest_max", "largest_mean", "largest_major_axis")
CALIBRATION_FEATURES = ("logit_max_minus_q50", "logit_max_minus_q90", "logit_max_z")
"""The features a shift of every cell's logit leaves unchanged (per-slide calibration)."""
_LOGIT_CLIP = 1e-6


def _pct(threshold: float) -> int:
    return round(threshold * 100)


FEATURE_NAMES: list[str] = [
    "max",
    "mean",
    "std",
    *(f"q{q}" for q in QUANTILES),
    *CALIBRATION_FEATURES,
    *(f"{kind}_above_{_pct(t)}" for t in THRESHOLDS for kind in ("n", "frac")),
    *(f"cc_{_pct(t)}_{name}" for t in THRESHOLDS for name in _CC_FEATURES),
    "tissue_patches",
    "tissue_mm2",
    "missing_frac",
]
"""Every feature ``slide_features`` returns, in column order."""


def _components(prob: np.ndarray, valid: np.ndarray, threshold: float) -> dict[str, float]:
    """Connected-component features of the cells of ``prob`` at or above ``threshold``."""
    above = valid & (np.nan_to_num(prob, nan=-np.inf) >= threshold)
    labels = label(above, connectivity=2)
    regions = regionprops(labels, intensity_image=np.nan_to_num(prob, nan=0.0))
    if not regions:
        return dict.fromkeys(_CC_FEATURES, 0.0)
    largest = max(regions, key=lambda r: r.area)
    return {
        "count": float(len(regions)),
        "largest_area": float(largest.area),
        "largest_max": float(largest.intensity_max),
        "largest_mean": float(largest.intensity_mean),
        "largest_major_axis": float(largest.axis_major_length),
    }


def _calibration(values: np.ndarray) -> dict[str, float]:
    """``CALIBRATION_FEATURES`` of a slide's valid probabilities (at least one)."""
    logits = special.logit(np.clip(values, _LOGIT_CLIP, 1 - _LOGIT_CLIP))
    top, (q50, q90) = logits.max(), np.percentile(logits, (50, 90))
    std = logits.std()
    return {"logit_max_minus_q50": top - q50, "logit_max_minus_q90": top - q90,
            "logit_max_z": (top - logits.mean()) / std if std > 0 else 0.0}


def slide_features(heatmap: Heatmap) -> dict[str, float]:
    """All ``FEATURE_NAMES`` of one heatmap; a failed heatmap gives all NaN."""
    if heatmap.failed:
        return dict.fromkeys(FEATURE_NAMES, np.nan)
    prob = np.asarray(heatmap.prob, dtype=np.float64)
    tissue = np.asarray(heatmap.tissue, dtype=bool)
    valid = tissue & ~np.asarray(heatmap.missing, dtype=bool) & np.isfinite(prob)
    values = prob[valid]
    n_tissue = int(tissue.sum())
    out: dict[str, float] = {}
    if values.size:
        out |= {"max": values.max(), "mean": values.mean(), "std": values.std()}
        out |= {f"q{q}": v for q, v in zip(QUANTILES, np.percentile(values, QUANTILES))}
        out |= _calibration(values)
    else:
        out |= dict.fromkeys(["max", "mean", "std", *(f"q{q}" for q in QUANTILES), *CALIBRATION_FEATURES], np.nan)
    for t in THRESHOLDS:
        n_above = int((values >= t).sum())
        out[f"n_above_{_pct(t)}"] = float(n_above)
        out[f"frac_above_{_pct(t)}"] = n_above / values.size if values.size else np.nan
        for name, value in _components(prob, valid, t).items():
            out[f"cc_{_pct(t)}_{name}"] = value
    out["tissue_patches"] = float(n_tissue)
    mpp = heatmap.mpp
    out["tissue_mm2"] = n_tissue * heatmap.stride0**2 * mpp[0] * mpp[1] / 1e6 if mpp else np.nan
    out["missing_frac"] = float(heatmap.missing[tissue].sum()) / n_tissue if n_tissue else np.nan
    return {name: float(out[name]) for name in FEATURE_NAMES}
