"""Mixed precision and XLA (helpkit.models.compute), on the CPU: each builds, trains a step and
predicts what float32 without XLA predicts, within ``PREDICTION_TOLERANCE``."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpkit.models.compute import (
    PREDICTION_TOLERANCE,
    best_batch_size,
    build_model,
    forward,
    inference_model,
    is_mixed,
    jit_compile,
)

PATCH = 32


def _data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Bright patches are tumour, dark ones not: a few steps spread the outputs over (0, 1)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n).astype("float32")
    base = np.where(labels[:, None, None, None] == 1, 180, 70)
    patches = np.clip(base + rng.normal(0, 40, (n, PATCH, PATCH, 3)), 0, 255).astype("uint8")
    return patches, labels


def _train(model: keras.Model, steps: int, xla: bool | None = False) -> list[float]:
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", jit_compile=jit_compile(xla))
    x, y = _data()
    history = model.fit(x, y, batch_size=32, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"]


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    """A float32 ``simple`` model trained a few steps, so its probabilities are not all 0.5."""
    keras.utils.set_random_seed(0)
    model = build_model("simple", PATCH)
    _train(model, steps=6)
    probs = forward(model)(_data()[0])
    assert probs.max() - probs.min() > 0.2, "the reference model should separate the two kinds of patch"
    return model


def test_mixed_precision_builds_float16_with_a_float32_output_and_trains_a_step() -> None:
    keras.utils.set_random_seed(0)
    model = build_model("simple", PATCH, mixed_precision=True)
    assert is_mixed(model)
    assert model.get_layer("probability").compute_dtype == "float32" and model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored after the build"
    assert all(v.dtype == "float32" for v in model.trainable_variables), "variables stay float32"
    losses = _train(model, steps=1)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(losses).all()


def test_mixed_precision_predicts_what_float32_predicts(trained: keras.Model) -> None:
    patches = _data()[0]
    reference = forward(trained)(patches)
    mixed = inference_model(trained, "simple", PATCH, mixed_precision=True)
    assert is_mixed(mixed) and not is_mixed(trained)
    got = forward(mixed)(patches)
    assert got.dtype == np.float32
    assert np.abs(got - reference).max() <= PREDICTION_TOLERANCE["mixed_precision"]
    assert inference_model(trained, "simple", PATCH) is trained  # float32 asked: the model itself


def test_xla_trains_a_step_and_predicts_what_no_xla_predicts(trained: keras.Model) -> None:
    keras.utils.set_random_seed(0)
    model = build_model("simple", PATCH)
    assert np.isfinite(_train(model, steps=1, xla=True)).all()
    patches = _data()[0]
    reference = trained.predict_on_batch(patches).reshape(-1)
    assert np.array_equal(forward(trained)(patches), reference), "the compiled forward pass is predict's own graph"
    assert np.abs(forward(trained, xla=True)(patches) - reference).max() <= PREDICTION_TOLERANCE["xla"]


def test_both_together(trained: keras.Model) -> None:
    patches = _data()[0]
    reference = forward(trained)(patches)
    both = forward(inference_model(trained, "simple", PATCH, mixed_precision=True), xla=True)(patches)
    assert np.abs(both - reference).max() <= PREDICTION_TOLERANCE["mixed_precision"]


def test_best_batch_size_is_measured(trained: keras.Model) -> None:
    best, rates = best_batch_size(forward(trained), PATCH, sizes=(8, 32), budget_s=0.2)
    assert best in (8, 32) and rates[best] == max(rates.values()) > 0


def test_heatmaps_with_mixed_precision_and_xla_match_float32(trained: keras.Model, tmp_path) -> None:
    """``helpkit heatmap --mixed-precision`` / ``--xla`` (Options) on a real slide and a real model:
    the same cells, probabilities within tolerance, and their own cache keys."""
    from test_heatmap import GEOMETRY, write_slide

    from helpkit.heatmap.make import Options, SlideRecord, make_heatmaps
    from helpkit.heatmap.store import heatmap_path, read_heatmap
    from helpkit.train import write_run

    assert GEOMETRY.patch_size == PATCH
    slide = SlideRecord("Slide001", write_slide(tmp_path / "Slide001.tiff"), "test", float("nan"))
    run_dir = tmp_path / "run"
    write_run(run_dir, name="m", architecture="simple", geometry=GEOMETRY, width=1.0, splits=[([], [])], config={})
    (run_dir / "fold_0").mkdir()
    trained.save(run_dir / "fold_0" / "model.keras")
    maps = {}
    for name, options in {"float32": Options(), "xla": Options(xla=True),
                          "mixed_precision": Options(mixed_precision=True)}.items():
        out = tmp_path / name
        assert make_heatmaps([run_dir], [slide], out, options)["written"] == 1
        maps[name] = read_heatmap(heatmap_path(out, "m", "Slide001"))
    reference = maps["float32"].prob
    assert np.isfinite(reference).sum() > 50
    for name in ("xla", "mixed_precision"):
        got = maps[name].prob
        assert np.array_equal(np.isfinite(got), np.isfinite(reference))
        assert np.nanmax(np.abs(got - reference)) <= PREDICTION_TOLERANCE[name], name
        assert maps[name].key != maps["float32"].key, "a float32 heatmap is not reused for another precision"
    again = make_heatmaps([run_dir], [slide], tmp_path / "float32", Options(xla=True))
    assert again["written"] == 1, "switching on XLA recomputes rather than reusing the float32 heatmap"


def test_train_fold_in_mixed_precision_with_xla_saves_a_mixed_model(tmp_path) -> None:
    """``helpkit train --mixed-precision --xla`` (TrainConfig): an epoch trains and the saved model
    is mixed, with a float32 output, and loads back as such (inference uses it as it is)."""
    from test_train import array_fold

    from helpkit.train.fit import TrainConfig, train_fold

    config = TrainConfig(model="simple", width=0.25, epochs=1, batch_size=16, mixed_precision=True, xla=True)
    state = train_fold(array_fold(), tmp_path, config, patch_size=PATCH)
    assert state["epochs_done"] == 1 and np.isfinite(state["history"][0]["loss"])
    model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert is_mixed(model) and model.output.dtype == "float32"
    assert inference_model(model, "simple", PATCH, 0.25, mixed_precision=True) is model


def test_engine_batch_size_zero_is_measured_once_and_changes_no_result(tmp_path) -> None:
    """``helpkit heatmap --batch 0``: the engine measures the predictor once per key and the
    heatmap is the one a fixed batch gives, bit for bit."""
    from test_heatmap import GEOMETRY, red_fraction, write_slide

    from helpkit.heatmap import engine
    from helpkit.heatmap.make import tissue_grid
    from helpkit.slide import SlideReader, grid_for, tissue_mask

    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return red_fraction(batch)

    predict.batch_key = ("bench-test",)  # type: ignore[attr-defined]
    with SlideReader(write_slide(tmp_path / "s.tiff")) as reader:
        grid = grid_for(reader, GEOMETRY)
        tissue = tissue_grid(grid, tissue_mask(reader))
        fixed = engine.run_heatmap(reader, red_fraction, grid, tissue, batch_size=64)
        measured = engine.run_heatmap(reader, predict, grid, tissue, batch_size=0)
        chosen = calls[-1]
        assert chosen in engine.AUTO_BATCH_SIZES and set(calls) >= set(engine.AUTO_BATCH_SIZES)
        calls.clear()
        engine.run_heatmap(reader, predict, grid, tissue, batch_size=0)
    assert set(calls) == {chosen}, "measured once per predictor key, then remembered"
    np.testing.assert_array_equal(measured.prob, fixed.prob)
    np.testing.assert_array_equal(measured.missing, fixed.missing)
