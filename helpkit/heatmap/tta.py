"""Test-time augmentation (TTA) of the heatmap engine: each patch scored as the mean over its
symmetric copies, by name (``TTAS``).

A tissue patch has no up, down, left or right, so a model's score should not change when the
patch is flipped or turned; averaging over those copies smooths what it learnt by chance.
``tta_predict`` wraps a predict function (``helpkit.heatmap.engine.PredictFn``): each batch
goes through the model once per transform, at the same batch size (a compiled model never
retraces), so ``flips`` costs about 4x and ``d4`` 8x the model time. Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.heatmap.engine import PredictFn
from helpkit.heatmap.tta_spec import DEFAULT_TTA, TTAS

Transform = Callable[[np.ndarray], np.ndarray]
"""(B, P, P, C) -> the same batch, each patch flipped or turned."""

def _flip(rows: bool, cols: bool, transpose: bool = False) -> Transform:
    """Top-bottom (``rows``) and/or left-right (``cols``) flip of every patch, after swapping
    its axes when ``transpose``: with the flips, transposes give the 90-degree rotations."""

    def transform(batch: np.ndarray) -> np.ndarray:
        out = batch.transpose(0, 2, 1, 3) if transpose else batch
        out = out[:, ::-1] if rows else out
        return np.ascontiguousarray(out[:, :, ::-1] if cols else out)

    return transform


_FLIPS = [(False, False), (False, True), (True, False), (True, True)]


def tta_transforms(name: str) -> list[Transform]:
    """The transforms of TTA ``name``, identity first: 1 (none), 4 (flips: a group, so the mean
    is flip-invariant) or 8 (d4: the square's symmetry group, so the mean is invariant to
    flips and 90-degree rotations). A name not in ``TTAS`` is a HelpkitError."""
    if name not in TTAS:
        raise HelpkitError(f"unknown TTA {name!r}; expected one of {', '.join(TTAS)}")
    if name == "none":
        return [_flip(False, False)]
    turns = (False, True) if name == "d4" else (False,)
    return [_flip(r, c, t) for t in turns for r, c in _FLIPS]


def tta_predict(predict: PredictFn, name: str) -> PredictFn:
    """``predict`` averaged over the transforms of TTA ``name``, one model call per transform;
    ``none`` returns ``predict`` itself. The wrapper's ``batch_key`` adds the name to the
    model's, so ``measured_batch_size`` measures each TTA on its own."""
    transforms = tta_transforms(name)
    if name == DEFAULT_TTA:
        return predict

    def averaged(batch: np.ndarray) -> np.ndarray:
        outs = [np.asarray(predict(t(batch)), dtype=np.float32).reshape(-1) for t in transforms]
        return np.mean(outs, axis=0)

    averaged.batch_key = (getattr(predict, "batch_key", id(predict)), "tta", name)  # type: ignore[attr-defined]
    return averaged
