"""Patch CNNs: ``simple`` (FCN), ``unet`` and ``inception``, built by name.

Every model takes raw uint8 RGB patches (normalisation inside) and outputs one tumour
probability per patch, shape (batch, 1), so later stages treat them alike. Importing this
package imports Keras: CLI modules import it inside command bodies.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from helpkit.errors import HelpkitError
from helpkit.models.inception import build_inception
from helpkit.models.simple import build_simple
from helpkit.models.unet import build_unet
from helpkit.slide.geometry import PATCH_SIZE

ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "simple": build_simple,
    "unet": build_unet,
    "inception": build_inception,
}
"""Builders by name, each ``(patch_size, width) -> keras.Model``."""


def build(name: str, patch_size: int = PATCH_SIZE, width: float = 1.0) -> keras.Model:
    """An uncompiled model ``name`` for ``patch_size`` uint8 patches, channels scaled by ``width``.

    Unknown names, patch sizes the architecture cannot take, and non-positive widths raise
    a HelpkitError that states what is allowed.
    """
    if name not in ARCHITECTURES:
        raise HelpkitError(f"unknown model '{name}' (known: {', '.join(ARCHITECTURES)})")
    if not width > 0:
        raise HelpkitError(f"model width must be positive, got {width!r}")
    return ARCHITECTURES[name](patch_size=patch_size, width=width)


__all__ = ["ARCHITECTURES", "build"]
