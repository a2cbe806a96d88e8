"""Slides: reading (OpenSlide), tissue masks, the patch grid, labels and sampling.

Names are re-exported lazily (PEP 562) so that importing a light submodule such as
``helpkit.slide.slide_defaults`` does not pull in OpenSlide, scipy and scikit-image.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SLIDE_EXTENSIONS": "reader",
    "SlideReader": "reader",
    "is_slide_file": "reader",
    "TissueMask": "tissue",
    "tissue_mask": "tissue",
    "PatchGeometry": "geometry",
    "GridSpec": "grid",
    "grid_for": "grid",
    "patch_table": "grid",
    "AnnotationMask": "annotation",
    "read_annotation_mask": "annotation",
    "label_patches": "sampling",
    "sample_patches": "sampling",
    "IndexConfig": "index",
    "index_slide": "index",
    "index_dataset": "index",
    "write_index": "index",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"helpkit.slide.{_EXPORTS[name]}"), name)
