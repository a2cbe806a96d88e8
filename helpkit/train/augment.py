"""Seeded on-the-fly augmentation of uint8 patch batches, in TensorFlow ops.

Flips and 90-degree rotations (the 8 symmetries of a square: histology has no
orientation), brightness/contrast, and HED stain jitter (Tellez et al. 2018: scale and
shift each stain's optical density). The stain jitter is skimage's colour deconvolution
(``separate_stains``/``combine_stains`` with ``hed_from_rgb``/``rgb_from_hed``) rewritten
in TensorFlow so it runs vectorised inside the tf.data graph, not per patch in Python; a
test checks it against skimage. The ``medium``/``strong`` presets add Tellez et al. 2019's
HED jitter (in their -ln(rgb + 2) space), hue/saturation, brightness factor, Gaussian
noise and blur, all per patch and vectorised over the batch, then JPEG re-encoding (per patch:
TensorFlow's JPEG codec takes one image) and random rescale (a window of the patch read with a
margin, resized back to the model's side in one ``crop_and_resize``). Stateless random ops: the
same seed gives the same batch.

On a CPU the augmentation shares the cores with the training step, so the per-patch linear
jitters are folded into matrices: Tellez's stain scale into one 3x3 per patch, and hue,
saturation, contrast, brightness and brightness factor into one 3x3 plus an offset (one einsum
for the batch instead of TensorFlow's HSV round trip and four elementwise passes).
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
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
"""NTSC's YIQ (column vectors: yiq = RGB_TO_YIQ @ rgb): luma Y and the chroma plane (I, Q)."""


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
    ``beta`` are (B, 3). Deconvolution, scale and reconvolution are linear, so they are one
    3x3 matrix per patch (``hed_from_rgb @ diag(alpha) @ rgb_from_hed``): one einsum, not two.
    """
    to_hed, to_rgb = tf.constant(hed_from_rgb, tf.float32), tf.constant(rgb_from_hed, tf.float32)
    matrix = tf.einsum("ck,bk,kd->bcd", to_hed, alpha, to_rgb)
    log_rgb = tf.einsum("bhwc,bcd->bhwd", tf.math.log(rgb + 2.0), matrix) - (beta @ to_rgb)[:, None, None, :]
    return tf.clip_by_value(tf.exp(log_rgb) - 2.0, 0.0, 1.0)


def hue_saturation_matrix(hue: tf.Tensor, saturation: tf.Tensor) -> tf.Tensor:
    """(B, 3, 3) matrices M, ``rgb @ M``, shifting hue by ``hue`` (B,) turns and scaling saturation by ``saturation`` (B,).

    As NVIDIA DALI's hsv operator: rotate the chroma plane (I, Q) of YIQ by the hue angle and
    scale it by the saturation, keeping luma. One matrix per patch, one einsum for the batch,
    instead of TensorFlow's HSV round trip (four times the cost). An approximation of HSV:
    the YIQ angle is not HSV's hexagonal hue (over uniformly drawn colours the mean shift is the
    requested one within 2 degrees; H&E's pinks and purples move up to a fifth more or less,
    depending on the direction), saturation scales towards
    the grey of equal luma rather than of equal max, and a colour may leave the RGB cube
    (clipped at the end of the augmentation).
    """
    angle = 2.0 * math.pi * hue
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    one, zero = tf.ones_like(hue), tf.zeros_like(hue)
    # Rotating (I, Q) by -angle moves HSV hue forward (red towards yellow); row-vector form.
    chroma = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, cos, -sin], -1),
                       tf.stack([zero, sin, cos], -1)], -2)
    to_yiq, to_rgb = tf.constant(RGB_TO_YIQ.T, tf.float32), tf.constant(np.linalg.inv(RGB_TO_YIQ).T, tf.float32)
    return tf.einsum("ij,bjk,kl->bil", to_yiq, chroma, to_rgb)


def gaussian_blur(x: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Blur float (B, H, W, C) with a per-patch Gaussian of ``sigma`` (B,) pixels (<= 1), reflecting edges.

    Separable 7-tap kernels (rows, then columns) as two depthwise convolutions of the batch
    laid out as one image of B * C channels, each channel with its patch's kernel: one graph
    for the batch whatever the sigmas, about half the cost of summing shifted copies. Sigma 0
    is the identity.
    """
    taps = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    s = tf.maximum(sigma, 1e-3)[:, None]
    weights = tf.exp(-0.5 * tf.square(taps[None, :] / s))
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    b, h, w, c = tf.unstack(tf.shape(x))
    kernels = tf.repeat(tf.transpose(weights), c, axis=1)  # (taps, B * C), channel-major as the layout below
    wide = tf.reshape(tf.transpose(x, (1, 2, 0, 3)), (1, h, w, b * c))
    wide = tf.pad(wide, [[0, 0], [BLUR_RADIUS, BLUR_RADIUS], [BLUR_RADIUS, BLUR_RADIUS], [0, 0]], mode="REFLECT")
    wide = tf.nn.depthwise_conv2d(wide, kernels[:, None, :, None], [1, 1, 1, 1], "VALID")
    wide = tf.nn.depthwise_conv2d(wide, kernels[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.ensure_shape(tf.transpose(tf.reshape(wide, (h, w, b, c)), (2, 0, 1, 3)), x.shape)


def standard_normal(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Standard normal draws of ``shape`` from the stateless ``seed``, by Box-Muller on stateless uniforms.

    Exactly Gaussian, as ``stateless_normal``, at half its CPU cost.
    """
    n = tf.reduce_prod(shape)
    u = tf.random.stateless_uniform((2, (n + 1) // 2), seed)
    radius, angle = tf.sqrt(-2.0 * tf.math.log1p(-u[0])), 2.0 * math.pi * u[1]  # 1 - u in (0, 1]: no log(0)
    return tf.reshape(tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)[:n], shape)


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
    if config.hue or config.saturation or config.brightness_factor:
        x = _linear_jitter(x, seeds, config)
    else:  # light's contrast and brightness, op for op as before, so its batches stay bit-identical
        if config.contrast:
            factor = _uniform(seeds, 2, (b, 1, 1, 1), 1 - config.contrast, 1 + config.contrast)
            mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * factor + mean
        if config.brightness:
            x = x + _uniform(seeds, 3, (b, 1, 1, 1), -config.brightness, config.brightness)
    if config.blur:
        x = gaussian_blur(x, _uniform(seeds, 9, (b,), 0.0, config.blur))
    if config.noise:
        sigma = _uniform(seeds, 10, (b, 1, 1, 1), 0.0, config.noise)
        x = x + sigma * standard_normal(tf.shape(x), seeds[11])
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def _linear_jitter(x: tf.Tensor, seeds: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Hue/saturation, then contrast, brightness and brightness factor, on float (B, H, W, 3), as one ``x @ M + c``.

    Each step is linear per patch: with the colour matrix A, contrast f around the patch mean m
    (the mean of ``x @ A``, from the mean pixel), shift s and factor g the result is
    ``((x @ A - m) * f + m + s) * g = x @ (A f g) + (m (1 - f) + s) g``: one einsum and one add.
    """
    b = tf.shape(x)[0]
    hue = _uniform(seeds, 6, (b,), -config.hue, config.hue)
    matrix = hue_saturation_matrix(hue, _uniform(seeds, 7, (b,), 1 - config.saturation, 1 + config.saturation))
    factor = _uniform(seeds, 2, (b,), 1 - config.contrast, 1 + config.contrast)
    shift = _uniform(seeds, 3, (b,), -config.brightness, config.brightness)
    gain = _uniform(seeds, 8, (b,), 1 - config.brightness_factor, 1 + config.brightness_factor)
    offset = shift
    if config.contrast:
        mean = tf.reduce_mean(tf.einsum("bc,bcd->bd", tf.reduce_mean(x, axis=(1, 2)), matrix), axis=1)
        offset = mean * (1.0 - factor) + shift
    matrix = matrix * (factor * gain)[:, None, None]
    return tf.einsum("bhwc,bcd->bhwd", x, matrix) + (offset * gain)[:, None, None, None]
