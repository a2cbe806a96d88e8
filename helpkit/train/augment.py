"""Seeded on-the-fly augmentation of uint8 patch batches, in TensorFlow ops.

Flips and 90-degree rotations (the 8 symmetries of a square: histology has no
orientation), brightness/contrast, and HED stain jitter (Tellez et al. 2018: scale and
shift each stain's optical density). The stain jitter is skimage's colour deconvolution
(``separate_stains``/``combine_stains`` with ``hed_from_rgb``/``rgb_from_hed``) rewritten
in TensorFlow so it runs vectorised inside the tf.data graph, not per patch in Python; a
test checks it against skimage. The ``medium``/``strong`` presets add Tellez et al. 2019's
HED jitter (in their -ln(rgb + 2) space), HSV hue/saturation, brightness factor, Gaussian
noise and blur, all per patch and vectorised over the batch, then JPEG re-encoding (per patch:
TensorFlow's JPEG codec takes one image) and random rescale (a window of the patch read with a
margin, resized back to the model's side in one ``crop_and_resize``). Stateless random ops: the
same seed gives the same batch.
"""

from __future__ import annotations

import math

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


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """The central ``size`` x ``size`` of each patch of (B, R, R, C): the patch inside a margin read."""
    m = (images.shape[1] - size) // 2
    return images[:, m:m + size, m:m + size]


def zoom(images: tf.Tensor, scale: tf.Tensor, size: int) -> tf.Tensor:
    """Per patch, the centred window of ``size * scale`` pixels resized (bilinear) to ``size``: float (B, size, size, C).

    ``images`` (B, R, R, C) are read with a margin (R >= size, same centre); ``scale`` (B,) is
    clipped to R / size so the window stays inside. Scale 1 samples exactly the centred crop.
    """
    r = images.shape[1]
    half = (size - 1) / 2 * tf.minimum(tf.cast(scale, tf.float32), r / size)  # centre to outer pixel centres
    low, high = ((r - 1) / 2 - half) / (r - 1), ((r - 1) / 2 + half) / (r - 1)
    boxes = tf.stack([low, low, high, high], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(tf.shape(images)[0]), (size, size))


def jpeg_reencode(images: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    """Each uint8 patch of (B, P, P, 3) JPEG-encoded at its ``quality`` (B,) and decoded (a loop:
    the codec takes one image; about 0.1 ms a 64 px patch on one CPU core)."""
    out = tf.map_fn(lambda pair: tf.image.adjust_jpeg_quality(pair[0], pair[1]), (images, quality),
                    fn_output_signature=tf.uint8)
    return tf.ensure_shape(out, images.shape)


def _uniform(seeds: tf.Tensor, k: int, shape: tuple, low: float, high: float) -> tf.Tensor:
    """Uniform draws in [low, high) from the ``k``-th of ``seeds``: one seed per jitter, so each is reproducible alone."""
    return tf.random.stateless_uniform(shape, seeds[k], low, high)


def _colour(config: AugmentConfig) -> bool:
    """Whether ``config`` changes intensities on the float path (beyond symmetries, rescale and JPEG)."""
    return any((config.brightness, config.contrast, config.hed, config.hed_scale, config.hed_bias, config.hue,
                config.saturation, config.brightness_factor, config.noise, config.blur))


def augment(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig = AugmentConfig(),
            patch_size: int | None = None) -> tf.Tensor:
    """Augment a uint8 batch (B, R, R, 3) with the stateless ``seed`` (int shape [2]); uint8 (B, P, P, 3) out.

    ``patch_size`` P (default R) is the model's side: patches read with a margin (R > P, see
    ``augment_spec.read_size``) are zoomed into P (``config.rescale``) or else cropped to their centre.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=14)
    b = tf.shape(images)[0]
    size = patch_size or images.shape[1]

    if config.rescale:
        bound = math.log1p(config.rescale)  # log-uniform: zooming in and out equally likely
        scale = tf.exp(_uniform(seeds, 12, (b,), -bound, bound))
        images = tf.cast(tf.round(zoom(images, scale, size)), tf.uint8)
    elif images.shape[1] != size:
        images = center_crop(images, size)
    if config.symmetries:
        images = _symmetries(images, seeds[0])
    if _colour(config):
        images = _colour_jitter(images, seeds, config)
    if config.jpeg:
        quality = tf.random.stateless_uniform((b,), seeds[13], config.jpeg, 96, dtype=tf.int32)
        images = jpeg_reencode(images, quality)
    return images


def _colour_jitter(images: tf.Tensor, seeds: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """The float-path jitters of ``config`` on a uint8 batch, each drawn from its own of ``seeds``."""
    b = tf.shape(images)[0]
    x = tf.cast(images, tf.float32) / 255.0

    if config.hed:
        jitter = _uniform(seeds, 1, (2, b, 3), -config.hed, config.hed)
        x = hed_jitter(x, 1.0 + jitter[0], jitter[1])
    if config.hed_scale or config.hed_bias:
        alpha = 1.0 + _uniform(seeds, 4, (b, 3), -config.hed_scale, config.hed_scale)
        x = tellez_hed_jitter(x, alpha, _uniform(seeds, 5, (b, 3), -config.hed_bias, config.hed_bias))
    if config.hue or config.saturation:
        hsv = tf.image.rgb_to_hsv(x)
        hue = tf.math.floormod(hsv[..., 0] + _uniform(seeds, 6, (b, 1, 1), -config.hue, config.hue), 1.0)
        sat = hsv[..., 1] * _uniform(seeds, 7, (b, 1, 1), 1 - config.saturation, 1 + config.saturation)
        x = tf.image.hsv_to_rgb(tf.stack([hue, tf.clip_by_value(sat, 0.0, 1.0), hsv[..., 2]], axis=-1))
    if config.contrast:
        factor = _uniform(seeds, 2, (b, 1, 1, 1), 1 - config.contrast, 1 + config.contrast)
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * factor + mean
    if config.brightness:
        x = x + _uniform(seeds, 3, (b, 1, 1, 1), -config.brightness, config.brightness)
    if config.brightness_factor:
        x = x * _uniform(seeds, 8, (b, 1, 1, 1), 1 - config.brightness_factor, 1 + config.brightness_factor)
    if config.blur:
        x = gaussian_blur(x, _uniform(seeds, 9, (b,), 0.0, config.blur))
    if config.noise:
        sigma = _uniform(seeds, 10, (b, 1, 1, 1), 0.0, config.noise)
        x = x + sigma * tf.random.stateless_normal(tf.shape(x), seeds[11])
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
