"""The three patch CNNs: shapes, probability range, .keras round trip, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpkit.errors import HelpkitError
from helpkit.models import ARCHITECTURES, build


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize(("patch_size", "width"), [(32, 0.5), (64, 1.0)])
def test_builds_one_probability_per_patch(name: str, patch_size: int, width: float) -> None:
    model = build(name, patch_size=patch_size, width=width)
    assert model.input.shape[1:] == (patch_size, patch_size, 3)
    assert model.input.dtype == "uint8"
    patches = np.random.default_rng(0).integers(0, 256, (3, patch_size, patch_size, 3), dtype=np.uint8)
    prob = model.predict(patches, verbose=0)
    assert prob.shape == (3, 1)
    assert np.all((prob >= 0) & (prob <= 1))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_width_scales_parameters(name: str) -> None:
    assert build(name, 32, width=0.5).count_params() < build(name, 32, width=1.0).count_params()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_keras_round_trip_predicts_identically(name: str, tmp_path) -> None:
    model = build(name, patch_size=32, width=0.5)
    # Move batch-norm statistics and weights off their initial values so the round trip
    # is checked on state that a lost weight would change.
    for var in model.weights:
        var.assign(keras.ops.convert_to_numpy(var) + np.random.default_rng(1).normal(0, 0.05, var.shape).astype(var.dtype))
    patches = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(model.predict(patches, verbose=0), loaded.predict(patches, verbose=0))


def test_unknown_model_lists_known() -> None:
    with pytest.raises(HelpkitError, match="unknown model 'resnet'.*simple.*unet.*inception"):
        build("resnet")


@pytest.mark.parametrize(("name", "size", "rule"), [("simple", 40, "multiple of 16"),
                                                     ("unet", 36, "multiple of 8"),
                                                     ("inception", 16, "at least 32")])
def test_bad_patch_size_states_rule(name: str, size: int, rule: str) -> None:
    with pytest.raises(HelpkitError, match=rule):
        build(name, patch_size=size)


def test_bad_width() -> None:
    with pytest.raises(HelpkitError, match="width must be positive"):
        build("simple", width=0)
