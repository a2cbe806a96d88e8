"""Seeded on-the-fly augmentation of uint8 patch batches, in TensorFlow ops.

Flips and 90-degree rotations (the 8 symmetries of a square: histology has no
orientation), brightness/contrast, and HED stain jitter (Tellez et al. 2018: scale and
shift each stain's optical density). The stain jitter is skimage's colour deconvolution
(``separate_stains``/``combine_stains`` with ``hed_from_rgb``/``rgb_from_hed``) rewritten
in TensorFlow so it runs vectorised inside the tf.data graph, not per patch in Python; a
test checks it against skimage. Stateless random ops: the same seed gives the same batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from skimage.color import hed_from_rgb, rgb_from_hed

from helpkit.train.augment_spec import AugmentConfig

LOG_ADJUST = float(np.log(1e-6))
"""skimage's scaling of optical density (and its floor on intensities before the log)."""


def hed_jitter(rgb: tf.Tensor, alpha: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """Jitter float RGB in [0, 1] (B, H, W, 3) in HED space: stains * alpha + beta, per patch.

    ``alpha``, ``beta`` are (B, 3). Same arithmetic as skimage's rgb2hed/hed2rgb.
    """
    to_hed = tf.constant(hed_from_rgb, tf.float32)
    to_rgb = tf.constant(rgb_from_hed, tf.float32)
    optical = tf.math.log(tf.maximum(rgb, 1e-6)) / LOG_ADJUST
    stains = tf.maximum(tf.einsum("bhwc,cd->bhwd", optical, to_hed), 0.0)
    stains = stains * alpha[:, None, None, :] + beta[:, None, None, :]
    log_rgb = tf.einsum("bhwc,cd->bhwd", stains * -LOG_ADJUST, to_rgb)
    return tf.clip_by_value(tf.exp(-log_rgb), 0.0, 1.0)


def symmetry_maps(patch_size: int) -> np.ndarray:
    """(8, P*P) pixel orders: each of the square's 8 symmetries as one flat permutation."""
    grid = np.arange(patch_size * patch_size).reshape(patch_size, patch_size)
    maps = []
    for transposed in (grid, grid.T):
        for rotated in (transposed, transposed[::-1], transposed[:, ::-1], transposed[::-1, ::-1]):
            maps.append(rotated.ravel())
    return np.stack(maps).astype(np.int32)


def _symmetries(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random one of the 8 square symmetries per patch, as a single gather.

    One gather of precomputed pixel orders instead of chained flips and transposes
    selected with tf.where: one copy of the batch instead of six (much faster on CPU).
    """
    b, p = tf.shape(images)[0], images.shape[1]
    which = tf.random.stateless_uniform((b,), seed, 0, 8, dtype=tf.int32)
    orders = tf.gather(tf.constant(symmetry_maps(p)), which)
    flat = tf.reshape(images, (b, p * p, 3))
    return tf.reshape(tf.gather(flat, orders, axis=1, batch_dims=1), (b, p, p, 3))


def augment(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Augment a uint8 batch (B, P, P, 3) with the stateless ``seed`` (int shape [2]); uint8 out."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    b = tf.shape(images)[0]
    if config.symmetries:
        images = _symmetries(images, seeds[0])
    if not (config.brightness or config.contrast or config.hed):
        return images
    x = tf.cast(images, tf.float32) / 255.0
    if config.hed:
        jitter = tf.random.stateless_uniform((2, b, 3), seeds[1], -config.hed, config.hed)
        x = hed_jitter(x, 1.0 + jitter[0], jitter[1])
    if config.contrast:
        factor = tf.random.stateless_uniform((b, 1, 1, 1), seeds[2], 1 - config.contrast, 1 + config.contrast)
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * factor + mean
    if config.brightness:
        x = x + tf.random.stateless_uniform((b, 1, 1, 1), seeds[3], -config.brightness, config.brightness)
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
