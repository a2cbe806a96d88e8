"""Slides: reading (OpenSlide), tissue masks, the patch grid, labels and sampling.

Names are re-exported lazily (PEP 562) so that importing a light submodule such as
``helpkit.slide.slide_defaults`` does not pull in OpenSlide, scipy and scikit-image.
"""

from __future__ import annotations

from helpkit.lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _EXPORTS)
