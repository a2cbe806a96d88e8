"""A PNG of a heatmap over the slide's thumbnail, for a person to check where the model looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpkit.heatmap.store import Heatmap
from helpkit.io import atomic_path

THUMBNAIL_SIDE = 1024
"""Longest side, in pixels, of the thumbnail the heatmap is drawn on."""


def thumbnail(reader, max_side: int = THUMBNAIL_SIDE) -> tuple[np.ndarray, float]:
    """An RGB thumbnail of at most ``max_side`` pixels a side, and its level-0 downsample.

    Reads the finest pyramid level no larger than 4x ``max_side`` (the coarsest if none is),
    then shrinks it with PIL: never a large level in memory.
    """
    from PIL import Image

    fitting = [i for i, (w, h) in enumerate(reader.level_dimensions) if max(w, h) <= 4 * max_side]
    level = fitting[0] if fitting else reader.level_count - 1
    image = Image.fromarray(reader.read_level(level))
    image.thumbnail((max_side, max_side))
    downsample = reader.dimensions[0] / image.width
    return np.asarray(image), downsample


def draw_heatmap(ax, heatmap: Heatmap, downsample: float):
    """Draw ``heatmap`` (jet colour map, half transparent) on a matplotlib ``ax`` holding a thumbnail.

    Each cell is drawn as a stride-sized square centred on its patch, so overlapping
    strides do not smear; ``downsample`` maps level-0 pixels to thumbnail pixels. Returns
    the image drawn (for a colour bar), or None for a heatmap without cells.
    """
    if not heatmap.prob.size:
        return None
    rows, cols = heatmap.prob.shape
    x0 = heatmap.origin[0] + (heatmap.patch_size0 - heatmap.stride0) / 2
    y0 = heatmap.origin[1] + (heatmap.patch_size0 - heatmap.stride0) / 2
    extent = np.array([x0, x0 + cols * heatmap.stride0, y0 + rows * heatmap.stride0, y0]) / downsample
    return ax.imshow(
        np.ma.masked_invalid(heatmap.prob), cmap="jet", vmin=0, vmax=1, alpha=0.5,
        extent=tuple(extent), interpolation="nearest",
    )


def write_overlay(path: str | Path, heatmap: Heatmap, thumb: np.ndarray, downsample: float) -> None:
    """Write a PNG of ``heatmap`` over ``thumb`` (see ``draw_heatmap``) with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = thumb.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / w), dpi=100)
    ax.imshow(thumb)
    shown = draw_heatmap(ax, heatmap, downsample)
    if shown is not None:
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="tumour probability")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"{heatmap.slide_id} · {heatmap.model}" + (f" · {heatmap.error}" if heatmap.error else ""))
    ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
