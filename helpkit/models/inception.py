"""Inception-v3-style network: a stem, mixed blocks with parallel 1x1/3x3/5x5/pool
branches, a grid reduction, factorised 1x7/7x1 blocks, then a patch probability.

Widths are Inception-v3's divided by ``4 / width``: the reference team halved every width
(``width=2.0`` here); the default quarter trains on a CPU in minutes at 64-pixel patches.
"""

from __future__ import annotations

import keras
from keras import layers

from helpkit.models.blocks import check_patch_size, conv_bn, filters, patch_input

MULTIPLE, MINIMUM = 16, 32
"""Stem (/8) and one grid reduction (/2): the side must divide by 16, at least a 2x2 map."""

DIVISOR = 4.0
"""Inception-v3 widths are divided by this at ``width=1.0``."""


def _mixed_a(x: keras.KerasTensor, w: float, pool_channels: int, name: str) -> keras.KerasTensor:
    """Inception-v3 'mixed 5b-5d': 1x1, 5x5, double 3x3 and pooled branches."""
    b1 = conv_bn(x, filters(64, w), 1, name=f"{name}_1x1")
    b5 = conv_bn(x, filters(48, w), 1, name=f"{name}_5x5a")
    b5 = conv_bn(b5, filters(64, w), 5, name=f"{name}_5x5b")
    b3 = conv_bn(x, filters(64, w), 1, name=f"{name}_3x3a")
    b3 = conv_bn(b3, filters(96, w), 3, name=f"{name}_3x3b")
    b3 = conv_bn(b3, filters(96, w), 3, name=f"{name}_3x3c")
    bp = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv_bn(bp, filters(pool_channels, w), 1, name=f"{name}_poolproj")
    return layers.Concatenate(name=name)([b1, b5, b3, bp])


def _reduction(x: keras.KerasTensor, w: float, name: str) -> keras.KerasTensor:
    """Inception-v3 'mixed 6a': halve the grid with strided 3x3 and pooled branches."""
    b3 = conv_bn(x, filters(384, w), 3, name=f"{name}_3x3", strides=2)
    bd = conv_bn(x, filters(64, w), 1, name=f"{name}_dbla")
    bd = conv_bn(bd, filters(96, w), 3, name=f"{name}_dblb")
    bd = conv_bn(bd, filters(96, w), 3, name=f"{name}_dblc", strides=2)
    bp = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=name)([b3, bd, bp])


def _mixed_factorised(x: keras.KerasTensor, w: float, mid: int, name: str) -> keras.KerasTensor:
    """Inception-v3 'mixed 6b-6e': 7x7 convolutions factorised into 1x7 and 7x1."""
    b1 = conv_bn(x, filters(192, w), 1, name=f"{name}_1x1")
    b7 = conv_bn(x, filters(mid, w), 1, name=f"{name}_7a")
    b7 = conv_bn(b7, filters(mid, w), (1, 7), name=f"{name}_7b")
    b7 = conv_bn(b7, filters(192, w), (7, 1), name=f"{name}_7c")
    bd = conv_bn(x, filters(mid, w), 1, name=f"{name}_d7a")
    bd = conv_bn(bd, filters(mid, w), (7, 1), name=f"{name}_d7b")
    bd = conv_bn(bd, filters(192, w), (1, 7), name=f"{name}_d7c")
    bp = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv_bn(bp, filters(192, w), 1, name=f"{name}_poolproj")
    return layers.Concatenate(name=name)([b1, b7, bd, bp])


def build_inception(patch_size: int = 64, width: float = 1.0) -> keras.Model:
    """Build the Inception-style network for ``patch_size`` patches, widths scaled by ``width``."""
    check_patch_size("inception", patch_size, MULTIPLE, MINIMUM)
    w = width / DIVISOR
    inputs, x = patch_input(patch_size)
    x = conv_bn(x, filters(32, w), 3, name="stem1", strides=2)
    x = conv_bn(x, filters(32, w), 3, name="stem2")
    x = conv_bn(x, filters(64, w), 3, name="stem3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool1")(x)
    x = conv_bn(x, filters(80, w), 1, name="stem4")
    x = conv_bn(x, filters(192, w), 3, name="stem5")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool2")(x)
    x = _mixed_a(x, w, 32, name="mixed0")
    x = _mixed_a(x, w, 64, name="mixed1")
    x = _reduction(x, w, name="mixed2")
    x = _mixed_factorised(x, w, 128, name="mixed3")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name="inception")
