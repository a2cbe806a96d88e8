"""Augmentation presets: determinism, identity and permutation, and that each jitter does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage.color import hed2rgb, rgb2hsv

from helpkit.train.augment import augment, gaussian_blur, tellez_hed_jitter
from helpkit.train.augment_spec import AUGMENTATIONS, DEFAULT_AUGMENT, AugmentConfig

OFF = AugmentConfig(symmetries=False, brightness=0.0, contrast=0.0, hed=0.0)
"""Everything off: each test switches on what it measures."""


def he_patches(n: int = 32, p: int = 24, seed: int = 0) -> np.ndarray:
    """Synthetic H&E uint8 patches: eosin stroma and haematoxylin nuclei on white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:p, :p]
    out = []
    for _ in range(n):
        hed = np.zeros((p, p, 3))
        hed[..., 1] = rng.uniform(0.02, 0.05) * (rng.random((p, p)) < rng.uniform(0.5, 1.0))
        for _ in range(rng.integers(2, 6)):
            cy, cx, r = rng.uniform(0, p, 2).tolist() + [rng.uniform(2, 5)]
            hed[..., 0] += rng.uniform(0.05, 0.12) * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
        out.append(np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8))
    return np.stack(out)


def run(images: np.ndarray, config: AugmentConfig, seed: tuple[int, int] = (3, 4)) -> np.ndarray:
    return augment(tf.constant(images), tf.constant(seed), config).numpy()


def high_frequency(images: np.ndarray) -> float:
    """Mean squared difference of horizontally adjacent pixels."""
    x = images.astype(float)
    return float(np.mean(np.diff(x, axis=2) ** 2))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_presets_are_seeded_uint8_and_finite(name: str) -> None:
    images = he_patches(8)
    a, b = run(images, AUGMENTATIONS[name]), run(images, AUGMENTATIONS[name])
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    if name != "none":
        assert not np.array_equal(a, run(images, AUGMENTATIONS[name], (5, 6)))


def test_light_stays_the_default_and_new_fields_are_off_by_default() -> None:
    assert DEFAULT_AUGMENT == "light"
    assert AUGMENTATIONS["light"] == AugmentConfig(symmetries=True, brightness=0.08, contrast=0.15, hed=0.04)
    for name in ("none", "flips", "light"):
        config = AUGMENTATIONS[name]
        assert (config.hed_scale, config.hed_bias, config.hue, config.saturation, config.brightness_factor,
                config.noise, config.blur) == (0, 0, 0, 0, 0, 0, 0)


def test_none_is_the_identity_and_flips_only_permute_pixels() -> None:
    images = he_patches(8)
    np.testing.assert_array_equal(run(images, AUGMENTATIONS["none"]), images)
    flipped = run(images, AUGMENTATIONS["flips"])
    for before, after in zip(images, flipped, strict=True):
        np.testing.assert_array_equal(np.sort(before.reshape(-1, 3), axis=0), np.sort(after.reshape(-1, 3), axis=0))


def test_colour_spread_grows_light_medium_strong() -> None:
    # 64 copies of one patch: the spread of per-patch mean RGB is the augmentation's alone.
    images = np.repeat(he_patches(1), 64, axis=0)
    spread = {name: run(images, AUGMENTATIONS[name]).reshape(64, -1, 3).mean(axis=1).std(axis=0).mean()
              for name in ("none", "light", "medium", "strong")}
    assert spread["none"] < 1e-9
    assert spread["light"] < spread["medium"] < spread["strong"], spread


def test_blur_lowers_and_noise_raises_high_frequency_energy() -> None:
    images = he_patches(16)
    assert high_frequency(run(images, AugmentConfig(**{**vars(OFF), "blur": 1.0}))) < 0.8 * high_frequency(images)
    # Noise of sigma U(0, 0.1) adds 2 E[sigma^2] 255^2 = 430 on average (less where it clips).
    assert high_frequency(run(images, AugmentConfig(**{**vars(OFF), "noise": 0.1}))) > high_frequency(images) + 150


def test_zero_sigma_blur_is_the_identity() -> None:
    x = tf.random.stateless_uniform((2, 9, 9, 3), (1, 2))
    np.testing.assert_allclose(gaussian_blur(x, tf.zeros(2)), x, atol=1e-6)


def test_hue_jitter_moves_hue_and_keeps_values_finite() -> None:
    images = he_patches(32)
    hue = AugmentConfig(**{**vars(OFF), "hue": 0.08})
    before = rgb2hsv(images.reshape(-1, 1, 3))[:, 0, 0]
    after = rgb2hsv(run(images, hue).reshape(-1, 1, 3))[:, 0, 0]
    coloured = rgb2hsv(images.reshape(-1, 1, 3))[:, 0, 1] > 0.2
    moved = np.abs((after - before + 0.5) % 1.0 - 0.5)[coloured]
    assert np.median(moved) > 0.01
    assert moved.max() <= 0.08 + 0.01


def test_strong_on_graph_changes_every_patch() -> None:
    images = tf.constant(he_patches(8))
    strong = AUGMENTATIONS["strong"]
    out = tf.function(lambda batch, s: augment(batch, s, strong))(images, tf.constant([1, 1])).numpy()
    assert out.dtype == np.uint8
    assert all(not np.array_equal(o, i) for o, i in zip(out, images.numpy(), strict=True))


def test_float_paths_stay_finite_on_black_and_white() -> None:
    # A NaN would vanish in the uint8 cast: check the float steps on the extremes directly.
    x = tf.constant(np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3))]), tf.float32)
    jittered = tellez_hed_jitter(x, tf.constant([[1.2, 0.8, 1.2]] * 2), tf.constant([[-0.2, 0.2, 0.2]] * 2))
    hsv = tf.image.rgb_to_hsv(x)
    for result in (jittered, gaussian_blur(x, tf.constant([1.0, 0.0])), tf.image.hsv_to_rgb(hsv)):
        assert np.isfinite(result.numpy()).all()
