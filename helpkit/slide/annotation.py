"""Tumour annotation masks: PNGs at a downsample of level 0, non-zero = tumour."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from helpkit.errors import HelpkitError


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
