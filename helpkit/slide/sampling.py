"""Labelling rules for grid cells and seedable, balanced sampling of them per slide."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from helpkit.slide.slide_defaults import MIN_TISSUE, TUMOUR_THRESHOLD


def label_patches(
    patches: pd.DataFrame, tumour_threshold: float = TUMOUR_THRESHOLD, min_tissue: float = MIN_TISSUE
) -> pd.DataFrame:
    """Keep cells with ``tissue_frac >= min_tissue`` and add ``label``.

    label 1 (tumour) when ``tumour_frac >= tumour_threshold``, 0 (normal) when
    ``tumour_frac == 0``, -1 otherwise: partly tumour (ambiguous) or not annotated (NaN).
    """
    kept = patches[patches["tissue_frac"] >= min_tissue]
    tumour = kept["tumour_frac"].to_numpy()
    with np.errstate(invalid="ignore"):
        label = np.where(tumour >= tumour_threshold, 1, np.where(tumour == 0, 0, -1))
    return kept.assign(label=label.astype(np.int8))


def slide_rng(seed: int, slide_id: str) -> np.random.Generator:
    """A generator that depends on the seed and the slide only, not on the order slides come in."""
    return np.random.default_rng([seed, zlib.crc32(slide_id.encode("utf-8"))])


def sample_patches(
    patches: pd.DataFrame,
    *,
    slide_id: str,
    max_per_class: int | None = None,
    balance: bool = True,
    annotated: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Sample one slide's labelled cells; same seed and slide, same rows (kept in grid order).

    On an ``annotated`` slide ambiguous cells (label -1) are dropped; with ``balance`` a
    slide that has both classes keeps as many normal cells as tumour cells; every class is
    capped at ``max_per_class``. On a slide without annotation (a test slide) every cell
    has label -1 and is kept, capped like one class.
    """
    labels = patches["label"].to_numpy()
    classes = [1, 0] if annotated else [-1]
    counts = {c: int((labels == c).sum()) for c in classes}
    present = [c for c in classes if counts[c] > 0]
    take = dict(counts)
    if balance and len(present) > 1:
        take = dict.fromkeys(present, min(counts[c] for c in present))
    if max_per_class is not None:
        take = {c: min(n, max_per_class) for c, n in take.items()}
    rng = slide_rng(seed, slide_id)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=take[c], replace=False) if take[c] < counts[c]
        else np.flatnonzero(labels == c)
        for c in classes
    ]
    return patches.iloc[np.sort(np.concatenate(chosen))]
