"""Pieces every architecture shares: uint8 input with normalisation, conv blocks, and the
reduction of a per-pixel tumour map to one patch probability.

Only built-in Keras layers are used (no Lambda, no custom classes), so a saved ``.keras``
model loads anywhere with plain ``keras.models.load_model`` and no helpkit import.
"""

from __future__ import annotations

import keras
from keras import layers

from helpkit.errors import HelpkitError


BN_MOMENTUM = 0.9
"""Batch-norm moving statistics follow the weights within ~10 steps, not Keras' ~100: with
short CPU budgets (tens of steps per epoch) the default left inference-mode validation far
behind training (patch AUC 0.6 on held-out slides while the same weights scored 1.0 later)."""


def check_patch_size(name: str, patch_size: int, multiple: int, minimum: int) -> None:
    """Raise a HelpkitError stating the rule if ``patch_size`` does not fit the architecture."""
    if not isinstance(patch_size, int) or patch_size < minimum or patch_size % multiple:
        raise HelpkitError(
            f"model '{name}' cannot take patch size {patch_size!r}: "
            f"it must be a multiple of {multiple} and at least {minimum}"
        )


def filters(base: int, width: float) -> int:
    """``base`` channels scaled by ``width``, never below 4."""
    return max(4, int(round(base * width)))


def patch_input(patch_size: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The raw uint8 RGB input and its normalised float view in [-1, 1].

    Normalising inside the model means a saved model takes raw patches straight from a
    slide; no caller can forget or double the scaling.
    """
    inputs = keras.Input((patch_size, patch_size, 3), dtype="uint8", name="patch")
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    return inputs, scaled


def conv_bn(x: keras.KerasTensor, channels: int, kernel: int | tuple[int, int], name: str,
            strides: int = 1) -> keras.KerasTensor:
    """Convolution, batch normalisation, ReLU: the unit all three architectures stack."""
    x = layers.Conv2D(channels, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def centre_mean_probability(pixel_logits: keras.KerasTensor, patch_size: int) -> keras.KerasTensor:
    """Reduce a (P, P, 1) per-pixel logit map to one patch probability.

    Mean of the logits over the central half of the patch (a quarter of the side cropped
    on each border), then a sigmoid. Why the centre mean and not the global max: patch
    labels come from the tumour fraction of the patch and heatmaps place each probability
    at the patch centre, so the centre is what the label describes; the border sees half a
    receptive field of padding. A max is brittle (one noisy pixel saturates it) and sends
    the whole gradient through a single pixel, which trains slowly from patch labels.
    """
    crop = patch_size // 4
    x = layers.Cropping2D(crop, name="centre_crop")(pixel_logits)
    x = layers.GlobalAveragePooling2D(name="centre_mean")(x)
    return layers.Activation("sigmoid", dtype="float32", name="probability")(x)
