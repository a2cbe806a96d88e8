"""The simple fully convolutional network, as in the reference team's model.

Four stride-2 convolutions (1/16 resolution), a 1x1 score layer, and a transposed
convolution back to a per-pixel tumour map (layer ``pixel_logits``), reduced to one patch
probability by the centre mean (see ``blocks.centre_mean_probability``).
"""

from __future__ import annotations

import keras
from keras import layers

from helpkit.models.blocks import centre_mean_probability, check_patch_size, conv_bn, filters, patch_input

MULTIPLE, MINIMUM = 16, 32
"""Four stride-2 convolutions: the side must divide by 16 and leave at least a 2x2 map."""


def build_simple(patch_size: int = 64, width: float = 1.0) -> keras.Model:
    """Build the simple FCN for ``patch_size`` patches with channels scaled by ``width``."""
    check_patch_size("simple", patch_size, MULTIPLE, MINIMUM)
    inputs, x = patch_input(patch_size)
    for i, base in enumerate((16, 32, 64, 96)):
        x = conv_bn(x, filters(base, width), 3, name=f"down{i + 1}", strides=2)
        x = conv_bn(x, filters(base, width), 3, name=f"conv{i + 1}")
    score = layers.Conv2D(1, 1, name="score")(x)
    pixel_logits = layers.Conv2DTranspose(1, 32, strides=16, padding="same", name="pixel_logits")(score)
    outputs = centre_mean_probability(pixel_logits, patch_size)
    return keras.Model(inputs, outputs, name="simple")
