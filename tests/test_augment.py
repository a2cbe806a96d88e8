"""Augmentation presets: determinism, identity and permutation, each jitter does what it says, the
margin read for rescale (slides and cache), overrides from submission.toml and the CLI, the preview."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage, stats
from skimage.color import hed2rgb, hed_from_rgb, rgb2hsv, rgb_from_hed

from helpkit.train.augment import (augment, center_crop, gaussian_blur, hue_saturation_matrix, jpeg_reencode,
                                   standard_normal, tellez_hed_jitter, zoom)
from helpkit.train.augment_spec import (AUGMENTATIONS, DEFAULT_AUGMENT, AugmentConfig, augment_config,
                                        parse_overrides, read_size)

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


def run(images: np.ndarray, config: AugmentConfig, seed: tuple[int, int] = (3, 4), size: int | None = None) -> np.ndarray:
    return augment(tf.constant(images), tf.constant(seed), config, size).numpy()


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
                config.noise, config.blur, config.jpeg, config.rescale) == (0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_none_is_the_identity_and_flips_only_permute_pixels() -> None:
    images = he_patches(8)
    np.testing.assert_array_equal(run(images, AUGMENTATIONS["none"]), images)
    flipped = run(images, AUGMENTATIONS["flips"])
    for before, after in zip(images, flipped, strict=True):
        np.testing.assert_array_equal(np.sort(before.reshape(-1, 3), axis=0), np.sort(after.reshape(-1, 3), axis=0))


def test_none_flips_light_batches_are_bit_identical_to_before() -> None:
    # Digests of these batches from before hue/saturation became a matrix: earlier benchmarks stay comparable.
    digests = {"none": "bf0eaa365b04b57a", "flips": "ff270c30a60953fb", "light": "ed98395f781f4214"}
    images = he_patches(16)
    for name, digest in digests.items():
        assert hashlib.sha256(run(images, AUGMENTATIONS[name]).tobytes()).hexdigest()[:16] == digest, name


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


def test_blur_is_scipys_truncated_gaussian_per_patch() -> None:
    x = tf.random.stateless_uniform((3, 12, 10, 3), (1, 2))
    sigmas = [0.3, 0.7, 1.0]
    # Radius 3 px, reflecting edges without repeating them (scipy's "mirror").
    expected = [ndimage.gaussian_filter(p, (s, s, 0), mode="mirror", truncate=3 / s) for p, s in zip(x.numpy(), sigmas)]
    np.testing.assert_allclose(gaussian_blur(x, tf.constant(sigmas)), np.stack(expected), atol=1e-5)


def test_standard_normal_is_gaussian_and_seeded() -> None:
    draws = standard_normal(tf.constant([101, 99]), tf.constant([1, 2], tf.int64)).numpy()
    assert draws.shape == (101, 99)
    np.testing.assert_array_equal(draws, standard_normal(tf.constant([101, 99]), tf.constant([1, 2], tf.int64)))
    assert stats.kstest(draws.ravel(), "norm").pvalue > 0.01


def test_tellez_matrix_is_deconvolve_scale_reconvolve() -> None:
    x = tf.random.stateless_uniform((4, 8, 8, 3), (1, 2))
    alpha = tf.random.stateless_uniform((4, 3), (3, 4), 0.8, 1.2)
    beta = tf.random.stateless_uniform((4, 3), (5, 6), -0.2, 0.2)
    stains = -np.log(x.numpy() + 2.0) @ hed_from_rgb * alpha.numpy()[:, None, None] + beta.numpy()[:, None, None]
    expected = np.clip(np.exp(-stains @ rgb_from_hed) - 2.0, 0.0, 1.0)
    np.testing.assert_allclose(tellez_hed_jitter(x, alpha, beta), expected, atol=1e-5)


def test_hue_jitter_moves_hue_and_keeps_values_finite() -> None:
    images = he_patches(32)
    hue = AugmentConfig(**{**vars(OFF), "hue": 0.08})
    before = rgb2hsv(images.reshape(-1, 1, 3))[:, 0, 0]
    after = rgb2hsv(run(images, hue).reshape(-1, 1, 3))[:, 0, 0]
    coloured = rgb2hsv(images.reshape(-1, 1, 3))[:, 0, 1] > 0.2
    moved = np.abs((after - before + 0.5) % 1.0 - 0.5)[coloured]
    assert np.median(moved) > 0.01
    assert moved.max() <= 0.08 + 0.03  # the YIQ rotation moves some H&E colours a little further than asked


def test_hue_saturation_matrix_identity_grey_and_mean_hue_shift() -> None:
    np.testing.assert_allclose(hue_saturation_matrix(tf.zeros(1), tf.ones(1))[0], np.eye(3), atol=1e-6)
    images = he_patches(8)
    identity = AugmentConfig(**{**vars(OFF), "hue": 1e-9, "saturation": 1e-9})  # the matrix path at hue 0, saturation 1
    np.testing.assert_array_equal(run(images, identity), images)
    grey = np.random.default_rng(0).uniform(0, 1, (50, 3)) @ hue_saturation_matrix(tf.constant([0.3]), tf.zeros(1))[0]
    np.testing.assert_allclose(grey, np.repeat(grey[:, :1], 3, axis=1), atol=1e-6)
    # Over many colours the mean HSV hue shift is the requested angle, within 2 degrees, both ways.
    pixels = np.random.default_rng(1).uniform(0, 1, (20000, 1, 3))
    hsv = rgb2hsv(pixels)
    coloured = hsv[:, 0, 1] > 0.2
    for turns in (-0.08, -0.02, 0.04, 0.08):
        out = np.clip(pixels @ hue_saturation_matrix(tf.constant([turns]), tf.ones(1))[0].numpy(), 0, 1)
        shift = ((rgb2hsv(out)[:, 0, 0] - hsv[:, 0, 0] + 0.5) % 1.0 - 0.5)[coloured]
        assert abs(shift.mean() - turns) * 360 < 2.0, (turns, shift.mean())


def test_hue_saturation_draws_are_seeded() -> None:
    images = he_patches(8)
    config = AugmentConfig(**{**vars(OFF), "hue": 0.08, "saturation": 0.3})
    np.testing.assert_array_equal(run(images, config), run(images, config))
    assert not np.array_equal(run(images, config), run(images, config, (5, 6)))


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
    for result in (jittered, gaussian_blur(x, tf.constant([1.0, 0.0]))):
        assert np.isfinite(result.numpy()).all()


# --- JPEG re-encoding and random rescale --------------------------------------------------

def test_jpeg_changes_pixels_and_is_deterministic_per_seed() -> None:
    images = he_patches(8)
    jpeg = AugmentConfig(**{**vars(OFF), "jpeg": 30})
    a, b = run(images, jpeg), run(images, jpeg)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(images, jpeg, (5, 6)))
    assert all(np.abs(o.astype(int) - i).mean() > 0.5 for o, i in zip(a, images, strict=True))
    # A lower quality loses more: quality 10 is further from the original than 95.
    batch = tf.constant(images)
    errors = [np.abs(jpeg_reencode(batch, tf.fill((8,), q)).numpy().astype(int) - images).mean() for q in (10, 95)]
    assert errors[0] > 1.5 * errors[1]


def test_read_size_is_the_patch_without_rescale_and_an_even_margin_with_it() -> None:
    assert read_size(64, 0.0) == 64
    assert read_size(64, 0.25) == 80 >= 64 * 1.25
    assert read_size(63, 0.1) == 63 + 8 and (read_size(63, 0.1) - 63) % 2 == 0


def test_rescale_outputs_the_patch_size_and_scale_one_is_the_centred_crop() -> None:
    margin = np.random.default_rng(0).integers(0, 256, (4, 80, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.round(zoom(tf.constant(margin), tf.ones(4), 64).numpy()), margin[:, 8:72, 8:72])
    np.testing.assert_array_equal(center_crop(tf.constant(margin), 64).numpy(), margin[:, 8:72, 8:72])
    assert run(margin, AugmentConfig(**{**vars(OFF), "rescale": 0.25}), size=64).shape == (4, 64, 64, 3)
    for name, config in AUGMENTATIONS.items():  # every preset takes a margin read and gives the model its size
        assert augment(tf.constant(margin), tf.constant((1, 2)), config, 64).shape == (4, 64, 64, 3), name


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25])
def test_zoom_scales_a_known_pattern(scale: float) -> None:
    # A centred bright square of side 32 in an 80 px read: in the 64 px output it spans 32 / scale.
    image = np.zeros((1, 80, 80, 3), np.uint8)
    image[:, 24:56, 24:56] = 255
    out = zoom(tf.constant(image), tf.constant([scale]), 64).numpy()[0, :, :, 0]
    side = (out > 127).sum(axis=1).max()
    assert abs(side - 32 / scale) <= 1, side
    assert (out > 127).sum(axis=0).max() == side  # square stays square and centred
    rows = np.flatnonzero((out > 127).any(axis=1))
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 0.5


def test_rescale_draws_scales_in_its_range() -> None:
    # Squares measured after augment's rescale alone: sides within 32 / [1.25, 0.8], both ways used.
    image = np.zeros((64, 80, 80, 3), np.uint8)
    image[:, 24:56, 24:56] = 255
    zoomed = run(image, AugmentConfig(**{**vars(OFF), "rescale": 0.25}), size=64)
    sides = (zoomed[..., 0] > 127).sum(axis=2).max(axis=1)
    assert sides.min() >= 32 / 1.25 - 1 and sides.max() <= 32 / 0.8 + 1
    assert (sides < 30).any() and (sides > 34).any()


# --- overrides -------------------------------------------------------------------------------

def test_overrides_replace_single_fields_and_name_a_bad_key_or_value() -> None:
    config = augment_config("strong", parse_overrides(["jpeg=0", "rescale=0.1", "symmetries=false"]))
    assert (config.jpeg, config.rescale, config.symmetries, config.blur) == (0, 0.1, False, 1.0)
    assert isinstance(config.jpeg, int)
    for bad, match in ((["nope=1"], "unknown augmentation parameter 'nope'"), (["jpeg=20.5"], "jpeg must be an integer"),
                       (["jpeg=96"], "<= 95"), (["rescale=2"], "<= 1"), (["hed"], "not KEY=VALUE")):
        with pytest.raises(ValueError, match=match):
            augment_config("light", parse_overrides(bad))


def test_cli_augment_param_rejects_a_bad_key_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "helpkit", "train", "--index", str(tmp_path / "i.parquet"),
                          "--out", str(tmp_path / "run"), "--augment-param", "nope=1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "helpkit: error: unknown augmentation parameter 'nope'; AugmentConfig has: " + ", ".join(vars(AugmentConfig()))]


def test_submission_overrides_reach_the_train_config(tiny_competition: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from helpkit import pipeline
    from helpkit.config import ModelSpec, SubmissionConfig
    from helpkit.train import fit

    class Stop(Exception):
        pass

    def fake_train_run(index: pd.DataFrame, out: Path, config: fit.TrainConfig, **kwargs: object) -> None:
        raise Stop(config)

    monkeypatch.setattr(pipeline, "_patch_index", lambda *args: pd.DataFrame())
    monkeypatch.setattr(fit, "train_run", fake_train_run)
    spec = ModelSpec(architecture="simple", name="a", augment="medium", augment_params={"jpeg": 70, "hed_scale": 0.05})
    config = SubmissionConfig(name="t", models=[spec], ensemble={"method": "single", "params": {"model": "a"}})
    with pytest.raises(Stop) as stopped:
        pipeline.train(tiny_competition, tmp_path / "model", config)
    augmentation = stopped.value.args[0].augmentation
    assert augmentation == augment_config("medium", {"jpeg": 70, "hed_scale": 0.05})
    assert (augmentation.jpeg, augmentation.hed_scale, augmentation.rescale) == (70, 0.05, 0.1)


# --- margin reads, cache and preview ---------------------------------------------------------

@pytest.fixture(scope="module")
def few_patches(tiny_competition: Path) -> pd.DataFrame:
    """A handful of index rows of one positive training slide."""
    from helpkit.data import discover
    from helpkit.slide.index import IndexConfig, index_dataset

    slides = discover(tiny_competition, "train")
    positive = slides[slides["label"] == 1].sort_values("slide_id").head(1)
    return index_dataset(positive, IndexConfig(max_per_class=4), progress=False).patches.reset_index(drop=True)


def test_cache_keys_on_the_read_size_and_the_margin_is_centred(few_patches: pd.DataFrame, tmp_path: Path) -> None:
    from helpkit.train.cache import index_key, open_cache
    from helpkit.train.dataset import SlidePatches

    plain = open_cache(few_patches, tmp_path, progress=False)
    margin = open_cache(few_patches, tmp_path, progress=False, read_size=80)
    assert plain.path.name == index_key(few_patches)  # rescale off: the cache of before
    assert margin.path != plain.path and margin.patch_size == 80 and plain.patch_size == 64
    assert open_cache(few_patches, tmp_path, progress=False).patches.shape[1] == 64  # never the margin cache
    np.testing.assert_array_equal(center_crop(tf.constant(margin.patches), 64).numpy(), plain.patches)
    source = SlidePatches(few_patches, read_size=80)
    np.testing.assert_array_equal(source.read(np.arange(len(few_patches)))[0], margin.patches)
    source.close()


def test_patch_dataset_crops_a_margin_source_to_the_model_size(few_patches: pd.DataFrame, tmp_path: Path) -> None:
    from helpkit.train.cache import open_cache
    from helpkit.train.dataset import patch_dataset

    margin = open_cache(few_patches, tmp_path, progress=False, read_size=80)
    rows, labels = np.arange(len(few_patches)), np.zeros(len(few_patches))
    val = np.concatenate([x.numpy() for x, _ in patch_dataset(margin, rows, labels, 4, training=False, patch_size=64)])
    np.testing.assert_array_equal(val, np.asarray(margin.patches)[:, 8:72, 8:72])
    train = patch_dataset(margin, rows, labels, 4, training=True, augmentation=AUGMENTATIONS["strong"], patch_size=64)
    assert {x.shape[1:] for x, _, _ in train} == {(64, 64, 3)}


def test_augment_preview_writes_a_png_of_presets_by_patches(tiny_competition: Path, tmp_path: Path) -> None:
    from helpkit.train.preview import GAP, LABEL_WIDTH, write_preview

    configs = {name: AUGMENTATIONS[name] for name in ("none", "strong")}
    out = write_preview(tiny_competition, tmp_path / "grid.png", configs, n=3)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (LABEL_WIDTH + 3 * (64 + GAP) + GAP, 2 * (64 + GAP) + GAP)


def test_a_fold_trains_on_margin_reads_with_the_model_at_patch_size(tmp_path: Path) -> None:
    from helpkit.train.fit import FoldData, TrainConfig, train_fold

    class MarginSource:  # 80 px reads of 64 px patches, as SlidePatches/the cache give them with rescale 0.25
        patch_size = 80

        def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            patches = np.random.default_rng(0).integers(0, 256, (len(rows), 80, 80, 3), dtype=np.uint8)
            return patches, np.ones(len(rows), bool)

    labels = np.arange(32) % 2
    data = FoldData(MarginSource(), np.arange(16), labels[:16], np.arange(16, 32), labels[16:])
    config = TrainConfig(width=0.25, epochs=1, batch_size=8, augmentation=AUGMENTATIONS["strong"])
    state = train_fold(data, tmp_path / "fold", config, patch_size=64)
    assert state["epochs_done"] == 1
