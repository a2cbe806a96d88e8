"""U-Net: an encoder-decoder with skip connections producing a per-pixel tumour map.

Three 2x poolings down, a bottleneck, three transposed-convolution steps up with the
encoder features concatenated back in; the per-pixel map (layer ``pixel_logits``) is
reduced to one patch probability by the centre mean (see ``blocks.centre_mean_probability``).
"""

from __future__ import annotations

import keras
from keras import layers

from helpkit.models.blocks import centre_mean_probability, check_patch_size, conv_bn, filters, patch_input

MULTIPLE, MINIMUM = 8, 32
"""Three 2x poolings: the side must divide by 8 and leave at least a 4x4 bottleneck."""

BASES = (8, 16, 32)
BOTTLENECK = 64


def _double_conv(x: keras.KerasTensor, channels: int, name: str) -> keras.KerasTensor:
    x = conv_bn(x, channels, 3, name=f"{name}a")
    return conv_bn(x, channels, 3, name=f"{name}b")


def build_unet(patch_size: int = 64, width: float = 1.0) -> keras.Model:
    """Build the U-Net for ``patch_size`` patches with channels scaled by ``width``."""
    check_patch_size("unet", patch_size, MULTIPLE, MINIMUM)
    inputs, x = patch_input(patch_size)
    skips = []
    for i, base in enumerate(BASES):
        x = _double_conv(x, filters(base, width), name=f"enc{i + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = _double_conv(x, filters(BOTTLENECK, width), name="bottleneck")
    for i, base in reversed(list(enumerate(BASES))):
        x = layers.Conv2DTranspose(filters(base, width), 2, strides=2, name=f"up{i + 1}")(x)
        x = layers.Concatenate(name=f"skip{i + 1}")([x, skips[i]])
        x = _double_conv(x, filters(base, width), name=f"dec{i + 1}")
    pixel_logits = layers.Conv2D(1, 1, name="pixel_logits")(x)
    outputs = centre_mean_probability(pixel_logits, patch_size)
    return keras.Model(inputs, outputs, name="unet")
