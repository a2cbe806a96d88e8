"""Seeded on-the-fly augmentation of uint8 patch batches, in TensorFlow ops.

Flips and 90-degree rotations (the 8 symmetries of a square: histology has no
orientation), brightness/contrast, and HED stain jitter (Tellez et al. 2018: scale and
shift each stain's optical density). The stain jitter is skimage's colour deconvolution
(``separate_stains``/``combine_stains`` with ``hed_from_rgb``/``rgb_from_hed``) rewritten
in TensorFlow so it runs vectorised inside the tf.data graph, not per patch in Python; a
test checks it against skimage. The ``medium``/``strong`` presets add Tellez et al. 2019's
HED jitter (in their -ln(rgb + 2) space), HSV hue/saturation, brightness factor, Gaussian
noise and blur, all per patch and vectorised over the batch. Stateless random ops: the same
seed gives the same batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from skimage.color import hed_from_rgb, rgb_from_hed

from helpkit.train.augment_spec import AugmentConfig

LOG_ADJUST = float(np.log(1e-6))
"""skimage's scaling of optical density (and its floor on intensities before the log)."""
BLUR_RADIUS = 3
"""Half-width of the blur kernel in pixels: 3 sigma at the largest supported sigma, 1 px."""


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


def tellez_hed_jitter(rgb: tf.Tensor, alpha: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """Tellez et al.'s HED jitter of float RGB in [0, 1] (B, H, W, 3): stains * alpha + beta, per patch.

    Their stains are -ln(rgb + 2) deconvolved with skimage's ``hed_from_rgb``; ``alpha``,
    ``beta`` are (B, 3).
    """
    stains = tf.einsum("bhwc,cd->bhwd", -tf.math.log(rgb + 2.0), tf.constant(hed_from_rgb, tf.float32))
    stains = stains * alpha[:, None, None, :] + beta[:, None, None, :]
    log_rgb = tf.einsum("bhwc,cd->bhwd", -stains, tf.constant(rgb_from_hed, tf.float32))
    return tf.clip_by_value(tf.exp(log_rgb) - 2.0, 0.0, 1.0)


def gaussian_blur(x: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Blur float (B, H, W, C) with a per-patch Gaussian of ``sigma`` (B,) pixels (<= 1), reflecting edges.

    Separable 7-tap kernels applied as weighted sums of shifted copies (rows, then columns): one
    graph for the batch whatever the sigmas; sigma 0 is the identity.
    """
    taps = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    s = tf.maximum(sigma, 1e-3)[:, None]
    weights = tf.exp(-0.5 * tf.square(taps[None, :] / s))
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    for _ in range(2):  # rows, then (transposed) columns
        padded = tf.pad(x, [[0, 0], [BLUR_RADIUS, BLUR_RADIUS], [0, 0], [0, 0]], mode="REFLECT")
        size = tf.shape(x)[1]
        x = tf.add_n([weights[:, k, None, None, None] * padded[:, k:k + size] for k in range(2 * BLUR_RADIUS + 1)])
        x = tf.transpose(x, (0, 2, 1, 3))
    return x


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


def _colour(config: AugmentConfig) -> bool:
    """Whether ``config`` changes intensities (anything beyond the symmetries)."""
    return any((config.brightness, config.contrast, config.hed, config.hed_scale, config.hed_bias, config.hue,
                config.saturation, config.brightness_factor, config.noise, config.blur))


def augment(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Augment a uint8 batch (B, P, P, 3) with the stateless ``seed`` (int shape [2]); uint8 out."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=12)
    b = tf.shape(images)[0]
    if config.symmetries:
        images = _symmetries(images, seeds[0])
    if not _colour(config):
        return images
    x = tf.cast(images, tf.float32) / 255.0

    def uniform(k: int, shape: tuple, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seeds[k], low, high)

    if config.hed:
        jitter = uniform(1, (2, b, 3), -config.hed, config.hed)
        x = hed_jitter(x, 1.0 + jitter[0], jitter[1])
    if config.hed_scale or config.hed_bias:
        alpha = 1.0 + uniform(4, (b, 3), -config.hed_scale, config.hed_scale)
        x = tellez_hed_jitter(x, alpha, uniform(5, (b, 3), -config.hed_bias, config.hed_bias))
    if config.hue or config.saturation:
        hsv = tf.image.rgb_to_hsv(x)
        hue = tf.math.floormod(hsv[..., 0] + uniform(6, (b, 1, 1), -config.hue, config.hue), 1.0)
        sat = hsv[..., 1] * uniform(7, (b, 1, 1), 1 - config.saturation, 1 + config.saturation)
        x = tf.image.hsv_to_rgb(tf.stack([hue, tf.clip_by_value(sat, 0.0, 1.0), hsv[..., 2]], axis=-1))
    if config.contrast:
        factor = uniform(2, (b, 1, 1, 1), 1 - config.contrast, 1 + config.contrast)
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * factor + mean
    if config.brightness:
        x = x + uniform(3, (b, 1, 1, 1), -config.brightness, config.brightness)
    if config.brightness_factor:
        x = x * uniform(8, (b, 1, 1, 1), 1 - config.brightness_factor, 1 + config.brightness_factor)
    if config.blur:
        x = gaussian_blur(x, uniform(9, (b,), 0.0, config.blur))
    if config.noise:
        sigma = uniform(10, (b, 1, 1, 1), 0.0, config.noise)
        x = x + sigma * tf.random.stateless_normal(tf.shape(x), seeds[11])
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
