"""Your own Keras model in helpkit: import-model makes a run folder that heatmap and features use
as they use helpkit's own; export copies a run without its cache and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError

PATCH = 32


def own_model(path: Path, outputs: int = 1, activation: str = "sigmoid") -> Path:
    """A Keras model built without helpkit: uint8 RGB patches in, its own scaling inside."""
    import keras

    inputs = keras.Input((PATCH, PATCH, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs_ = keras.layers.Dense(outputs, activation=activation)(x)
    model = keras.Model(inputs, outputs_)
    model.save(path)
    return path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_imported_model_goes_through_heatmap_and_features(tmp_path: Path, tiny_competition: Path) -> None:
    from helpkit.train import load_run

    model = own_model(tmp_path / "mine.keras")
    run_dir = tmp_path / "runs" / "mine"
    out = invoke("import-model", str(model), "--patch-size", str(PATCH), "--mpp", "1.0", "--out", str(run_dir))
    assert "run 'mine'" in out
    run = load_run(run_dir)
    assert run.architecture == "imported" and run.geometry.patch_size == PATCH and run.geometry.mpp == 1.0
    assert [f.index for f in run.folds] == [0] and run.folds[0].model_path.read_bytes() == model.read_bytes()
    assert json.loads((run_dir / "fold_0" / "model.json").read_text())["normalisation"].startswith("uint8 RGB")

    heatmaps = tmp_path / "heatmaps"
    invoke("heatmap", "-m", str(run_dir), "--data", str(tiny_competition), "--out", str(heatmaps))
    written = sorted(p.stem for p in (heatmaps / "mine").glob("*.npz"))
    slides = sorted(p.stem for p in tiny_competition.rglob("*.tiff"))
    assert written == slides
    invoke("features", str(heatmaps), "--out", str(tmp_path / "features.parquet"))
    import pandas as pd

    table = pd.read_parquet(tmp_path / "features.parquet")
    assert len(table) == len(slides) and "mine__max" in table.columns
    assert table["mine__max"].between(0, 1).all()


@pytest.mark.parametrize(("outputs", "activation", "reason"), [
    (2, "softmax", r"returns shape \(3, 2\)"),
    (1, "linear", "probabilities in \\[0, 1\\]|returns values in"),
])
def test_import_refuses_a_model_that_is_not_a_patch_classifier(tmp_path: Path, outputs, activation, reason) -> None:
    from helpkit.slide.geometry import PatchGeometry
    from helpkit.train.export import import_model

    model = own_model(tmp_path / "bad.keras", outputs=outputs, activation=activation)
    if activation == "linear":
        import keras
        import numpy as np

        loaded = keras.models.load_model(model)
        loaded.layers[-1].set_weights([np.full_like(w, 5.0) for w in loaded.layers[-1].get_weights()])
        loaded.save(model)
    with pytest.raises(HelpkitError, match=reason):
        import_model(model, tmp_path / "run", PatchGeometry(patch_size=PATCH))
    with pytest.raises(HelpkitError, match=r"takes input of shape \(None, 32, 32, 3\)"):
        import_model(own_model(tmp_path / "ok.keras"), tmp_path / "run", PatchGeometry(patch_size=64))
    assert not (tmp_path / "run").exists()


def test_export_keeps_what_ships_and_drops_caches_and_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    invoke("import-model", str(own_model(tmp_path / "m.keras")), "--patch-size", str(PATCH), "--mpp", "0.5",
           "--out", str(run_dir))
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "patches.npy").write_bytes(b"x" * 1000)
    for name in ("checkpoint.keras", "state.json", "log.csv", ".model.123-abcdefgh.tmp.keras"):
        (run_dir / "fold_0" / name).write_text("x")
    invoke("export", str(run_dir), str(tmp_path / "shipped"))
    files = sorted(str(p.relative_to(tmp_path / "shipped")) for p in (tmp_path / "shipped").rglob("*") if p.is_file())
    assert files == ["fold_0/log.csv", "fold_0/model.json", "fold_0/model.keras", "run.json"]
    from helpkit.train import load_run

    assert load_run(tmp_path / "shipped").folds[0].model_path.is_file()
    with pytest.raises(HelpkitError, match="not an empty folder"):
        from helpkit.train.export import export_run

        export_run(run_dir, tmp_path / "shipped")


@pytest.mark.slow
def test_train_export_writes_a_run_ready_to_ship(tmp_path: Path, tiny_competition: Path) -> None:
    run_dir, shipped = tmp_path / "run", tmp_path / "shipped"
    out = invoke("train", "--model", "simple", "--width", "0.25", "--folds", "1", "--epochs", "1", "--batch", "32",
                 "--data", str(tiny_competition), "--out", str(run_dir), "--export", str(shipped))
    assert f"-> {shipped}" in out
    assert (run_dir / "fold_0" / "checkpoint.keras").is_file()  # the run keeps what resuming needs
    kept = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file())
    assert kept == ["fold_0/log.csv", "fold_0/model.json", "fold_0/model.keras", "run.json"]
