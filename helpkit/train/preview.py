"""A picture of the augmentation presets on real patches: one row per preset, the same patches
in every column, augmented exactly as training does (``augment`` with a margin read for rescale),
so users see on their own slides what ``--augment`` and ``augment_params`` do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image, ImageDraw

from helpkit.errors import HelpkitError
from helpkit.slide.geometry import PatchGeometry
from helpkit.train.augment import augment
from helpkit.train.augment_spec import AugmentConfig, read_size
from helpkit.train.dataset import SlidePatches

LABEL_WIDTH = 64
"""Pixels of the column that names each row's preset."""
GAP = 2
"""White pixels between patches."""


def preview_index(data: str | Path, n: int, geometry: PatchGeometry = PatchGeometry(),
                  layout: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Index rows of ``n`` tissue patches of ``data``'s first two slides, positive slides first; half
    of them tumour where there is tumour."""
    from helpkit.data import discover
    from helpkit.slide.index import IndexConfig, index_dataset

    slides = discover(data, layout=layout).sort_values(["label", "slide_id"], ascending=[False, True])
    result = index_dataset(slides.head(2), IndexConfig(geometry=geometry, max_per_class=n, seed=seed), progress=False)
    patches = result.patches
    if patches.empty:
        raise HelpkitError("no tissue patches to preview", data)
    order = np.argsort(-patches["label"].to_numpy(), kind="stable")  # tumour, normal, then unlabelled
    half = patches.iloc[order].head(n // 2)
    rest = patches.drop(half.index).sample(frac=1.0, random_state=seed)
    return pd.concat([half, rest]).head(n).reset_index(drop=True)


def preset_grid(patches: np.ndarray, patch_size: int, configs: dict[str, AugmentConfig], seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3) image: a row per named config of ``patches`` (n, R, R, 3) augmented to ``patch_size``.

    Every row uses the same seed, so the symmetries match from row to row and only the jitters differ.
    """
    step = patch_size + GAP
    n = len(patches)
    grid = np.full((len(configs) * step + GAP, LABEL_WIDTH + n * step + GAP, 3), 255, np.uint8)
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for row, (name, config) in enumerate(configs.items()):
        out = augment(tf.constant(patches), tf.constant([seed, 0]), config, patch_size).numpy()
        for col, patch in enumerate(out):
            canvas.paste(Image.fromarray(patch), (LABEL_WIDTH + GAP + col * step, GAP + row * step))
        draw.text((4, GAP + row * step + patch_size // 2 - 6), name, fill=(0, 0, 0))
    return np.asarray(canvas)


def write_preview(data: str | Path, out: str | Path, configs: dict[str, AugmentConfig], n: int = 8,
                  geometry: PatchGeometry = PatchGeometry(), layout: str | None = None, seed: int = 0) -> Path:
    """Write the grid of ``configs`` on ``n`` patches of ``data`` to the PNG ``out``; returns ``out``."""
    index = preview_index(data, n, geometry, layout, seed)
    source = SlidePatches(index, read_size=read_size(geometry.patch_size, max(c.rescale for c in configs.values())))
    try:
        patches, ok = source.read(np.arange(len(index)))
    finally:
        source.close()
    if not ok.any():
        raise HelpkitError(f"no patch could be read ({source.last_error})", data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(preset_grid(patches[ok], geometry.patch_size, configs, seed)).save(out, format="PNG", optimize=True)
    return out
