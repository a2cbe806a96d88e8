"""Slides: reading (OpenSlide), tissue masks, the patch grid, labels and sampling."""

from helpkit.slide.grid import GridSpec, grid_for, patch_table
from helpkit.slide.reader import SLIDE_EXTENSIONS, SlideReader, is_slide_file
from helpkit.slide.tissue import TissueMask, tissue_mask

__all__ = [
    "SLIDE_EXTENSIONS",
    "GridSpec",
    "SlideReader",
    "TissueMask",
    "grid_for",
    "is_slide_file",
    "patch_table",
    "tissue_mask",
]
