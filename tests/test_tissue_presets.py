"""Tissue masks against the generator's own tissue, on every synth preset and every --shift.

For each case a few small slides (2048 px a side at the competition's base mpp) are written
with ``make_slide`` and read back through ``SlideReader``; ``tissue_mask`` is compared with the
plan's truth tissue (the tissue field less ice-crystal holes and the non-scanned margin) at the
mask's resolution. A one-pixel band on either side of the truth outline is ignored: pixels
there are part tissue and part glass, and the optics blur them. Recall and precision must be
>= 0.95 pooled over a case's slides and >= 0.9 on each slide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from helpkit.slide.reader import SlideReader
from helpkit.slide.tissue import tissue_mask
from helpkit.synth.competition import make_slide, slide_plan, slide_side
from helpkit.synth.presets import PRESETS

SIZE = 2048
SEEDS = (11, 12, 13)
CASES = [(name, 0.0) for name in PRESETS] + [("default", shift) for shift in (1.0, 2.0, 3.0)]


def slide_counts(path: Path, preset: str, shift: float, seed: int) -> np.ndarray:
    """(true positive, false positive, false negative) tissue-mask pixels of one generated slide,
    the outline band left out; positives (with tumour) and negatives (with mimics) alternate."""
    spec, positive = PRESETS[preset], seed % 2 == 1
    make_slide(path, SIZE, seed, positive, shift, spec=spec, mimics=not positive, workers=1)
    with SlideReader(path) as reader:
        found = tissue_mask(reader)
    side = slide_side(SIZE, spec.mpp)
    plan = slide_plan(side, side, seed, positive, spec, mimics=not positive)
    ds = int(round(found.downsample))
    truth = plan.tissue_mask(ds)
    assert ds == found.downsample and truth.shape == found.mask.shape
    outline = ndimage.binary_dilation(truth) & ~ndimage.binary_erosion(truth, border_value=1)
    mask, truth = found.mask[~outline], truth[~outline]
    return np.array([(mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()])


def recall_precision(counts: np.ndarray) -> tuple[float, float]:
    tp, fp, fn = counts
    return tp / max(tp + fn, 1), tp / max(tp + fp, 1)


@pytest.mark.parametrize(("preset", "shift"), CASES, ids=[f"{p}-shift{s:g}" for p, s in CASES])
def test_tissue_mask_matches_the_generated_tissue(tmp_path: Path, preset: str, shift: float) -> None:
    per_slide = [slide_counts(tmp_path / f"{seed}.tiff", preset, shift, seed) for seed in SEEDS]
    pooled = recall_precision(np.sum(per_slide, axis=0))
    worst = np.min([recall_precision(c) for c in per_slide], axis=0)
    assert min(pooled) >= 0.95, f"pooled recall, precision {pooled}"
    assert worst.min() >= 0.9, f"worst slide's recall, precision {tuple(worst)}"
