"""The inference stage: reads the model dir only, and keys its scratch by what the slides hold."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit import pipeline
from helpkit.config import ModelSpec, SubmissionConfig
from helpkit.io import write_json
from helpkit.slide.geometry import PatchGeometry
from helpkit.train import write_run

CONFIG = SubmissionConfig(name="t", models=[ModelSpec(architecture="simple", name="a")],
                          ensemble={"method": "single", "params": {"model": "a"}})


def looking_model():
    """A Keras 'fold model' whose output depends on the pixels (mean red minus green, squashed)."""
    import keras

    inputs = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 25.5)(inputs))
    dense = keras.layers.Dense(1, activation="sigmoid")
    outputs = dense(x)
    dense.set_weights([np.array([[1.0], [-1.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model_dir(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the train stage leaves, without the training: two fold models, heatmaps, the ensemble."""
    from helpkit.data import discover
    from helpkit.ensemble import fit_ensemble
    from helpkit.features import build_features
    from helpkit.heatmap.make import Options, make_heatmaps, slide_records

    out = tmp_path_factory.mktemp("model")
    train = sorted(discover(tiny_competition, "train")["slide_id"])
    halves = [train[::2], train[1::2]]
    run_dir = out / "runs" / "a"
    write_run(run_dir, name="a", architecture="simple", geometry=PatchGeometry(), width=1.0,
              splits=[([s for s in train if s not in val], val) for val in halves], config={})
    for k in range(2):
        (run_dir / f"fold_{k}").mkdir()
        looking_model().save(run_dir / f"fold_{k}" / "model.keras")
    make_heatmaps([run_dir], slide_records(tiny_competition, "train"), out / "heatmaps", Options())
    build_features([out / "heatmaps"], out / "features_oof.parquet")
    fit_ensemble(pd.read_parquet(out / "features_oof.parquet"), "single", out / "ensemble", model="a")
    write_json(out / pipeline.PIPELINE_FILE, {"runs": {"a": "runs/a"}})
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def forbid_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make every way helpkit creates files or folders fail under ``folder``, like a read-only mount."""
    folder = folder.resolve()
    real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

    def inside(path) -> bool:
        return path is not None and Path(path).resolve().is_relative_to(folder)

    def mkstemp(*args, **kwargs):
        if inside(kwargs.get("dir")):
            raise OSError(30, "Read-only file system", kwargs["dir"])
        return real_mkstemp(*args, **kwargs)

    def mkdir(self, *args, **kwargs):
        if inside(self):
            raise OSError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_second_test_set_with_the_same_names_gets_its_own_predictions(
    model_dir: Path, tiny_competition: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase1 = tiny_competition / "test"
    names = sorted(p.name for p in phase1.iterdir())
    phase2 = tmp_path / "phase2"  # the same file names, other slides (as helpkit synth --seed/--shift makes)
    phase2.mkdir()
    train = sorted((tiny_competition / "train" / "image").rglob("*.tiff"))
    for name, source in zip(names, train[1:]):
        shutil.copyfile(source, phase2 / name)
    before = snapshot(model_dir)
    forbid_writes_under(monkeypatch, model_dir)
    work = tmp_path / "work"
    first = pipeline.infer(phase1, model_dir, tmp_path / "1.csv", CONFIG, work_dir=work)
    second = pipeline.infer(phase2, model_dir, tmp_path / "2.csv", CONFIG, work_dir=work)
    fresh = pipeline.infer(phase2, model_dir, tmp_path / "fresh.csv", CONFIG, work_dir=tmp_path / "other-work")
    assert list(first.index) == list(second.index) == [Path(n).stem for n in names]
    assert not np.allclose(first.to_numpy(), second.to_numpy())
    pd.testing.assert_series_equal(second, fresh)
    assert (tmp_path / "2.csv").read_text() == (tmp_path / "fresh.csv").read_text()
    assert snapshot(model_dir) == before, "the inference stage wrote under the model dir"


def test_scratch_defaults_to_the_system_temp_dir(
    model_dir: Path, tiny_competition: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    (tmp_path / "systmp").mkdir()
    before = snapshot(model_dir)
    pipeline.infer(tiny_competition / "test", model_dir, tmp_path / "out.csv", CONFIG)
    assert pipeline.default_work_dir() == tmp_path / "systmp" / "helpkit-inference"
    assert list((tmp_path / "systmp" / "helpkit-inference").glob("*/heatmaps/a/*.npz"))
    assert snapshot(model_dir) == before


def test_tumour_threshold_labels_small_deposits_into_an_index_of_its_own(tiny_competition: Path, tmp_path: Path) -> None:
    """A lower tumour_threshold turns partly-tumour cells (the ones isolated tumour cells and small
    deposits make) into positives, in its own index file, beside the default one."""
    from helpkit.data import discover

    slides = discover(tiny_competition, "train")
    default, low = ModelSpec(architecture="simple"), ModelSpec(architecture="simple", tumour_threshold=0.05)
    assert pipeline._index_path(tmp_path, default).name == f"index_{default.geometry.key()}.parquet"
    assert pipeline._index_path(tmp_path, low).name == f"index_{low.geometry.key()}_tumour0.05.parquet"
    counts = {}
    for spec in (default, low):
        index = pipeline._patch_index(slides, spec, 0, tmp_path)
        assert pipeline._index_path(tmp_path, spec).is_file()
        tumour = index[index["label"] == 1]
        counts[spec.tumour_threshold] = len(tumour)
        assert (tumour["tumour_frac"] >= spec.tumour_threshold).all()
    partly = pipeline._patch_index(slides, low, 0, tmp_path).query("label == 1 and tumour_frac < 0.5")
    assert len(partly) > 0 and counts[0.05] >= counts[0.5]
