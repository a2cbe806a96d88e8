"""Training: slide folds, the input pipeline, augmentation, resume, time budget, run folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from skimage.color import hed2rgb, rgb2hed

from helpkit.errors import HelpkitError
from helpkit.slide.geometry import PatchGeometry
from helpkit.train import load_run
from helpkit.train.augment import AugmentConfig, augment, hed_jitter, symmetry_maps
from helpkit.train.augment_spec import AUGMENTATIONS
from helpkit.train.dataset import SlidePatches, patch_dataset
from helpkit.train.fit import FoldData, TrainConfig, train_fold, train_run
from helpkit.train.folds import slide_folds

SMALL = TrainConfig(model="simple", width=0.25, folds=2, epochs=2, batch_size=16)


class ArraySource:
    """Patches from memory: a PatchSource without slides; rows in ``bad`` fail to read."""

    def __init__(self, n: int, patch_size: int = 32, bad: tuple[int, ...] = ()) -> None:
        rng = np.random.default_rng(0)
        self.patches = rng.integers(0, 256, (n, patch_size, patch_size, 3), dtype=np.uint8)
        self.patch_size = patch_size
        self.bad = np.array(bad, dtype=np.int64)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.patches[rows], ~np.isin(rows, self.bad)


def array_fold(n: int = 64) -> FoldData:
    labels = (np.arange(n) % 2).astype(np.int8)
    rows = np.arange(n)
    return FoldData(ArraySource(n), rows[: n // 2], labels[: n // 2], rows[n // 2:], labels[n // 2:])


@pytest.fixture(scope="module")
def tiny_index(tiny_competition: Path) -> pd.DataFrame:
    from helpkit.data import discover
    from helpkit.slide.index import index_dataset

    slides = discover(tiny_competition)
    return index_dataset(slides[slides["split"] == "train"], progress=False).patches


# --- folds -----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_folds_never_share_a_slide_and_are_stratified(k: int) -> None:
    labels = pd.Series([1, 0] * 6, index=[f"S{i:02d}" for i in range(12)])
    folds = slide_folds(labels, k, seed=0)
    assert len(folds) == k
    for train, val in folds:
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(labels.index)
        assert set(labels[val]) == {0, 1}
    if k > 1:
        validated = sorted(s for _, val in folds for s in val)
        assert validated == sorted(labels.index)  # every slide validated exactly once


def test_folds_are_seeded() -> None:
    labels = pd.Series([1, 0] * 6, index=[f"S{i:02d}" for i in range(12)])
    assert slide_folds(labels, 3, seed=7) == slide_folds(labels.sample(frac=1, random_state=1), 3, seed=7)
    assert slide_folds(labels, 3, seed=7) != slide_folds(labels, 3, seed=8)


def test_folds_need_slides_of_both_classes() -> None:
    with pytest.raises(HelpkitError, match="have 1 positive and 3 negative"):
        slide_folds(pd.Series([1, 0, 0, 0], index=list("abcd")), 2)


# --- pipeline --------------------------------------------------------------------------

def test_same_seed_same_first_batch() -> None:
    source, labels = ArraySource(100), np.arange(100) % 2

    def first(seed: int) -> list[np.ndarray]:
        ds = patch_dataset(source, np.arange(100), labels, 16, training=True, seed=seed)
        return [t.numpy() for t in next(iter(ds))]

    a, b, c = first(3), first(3), first(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8 and a[1].shape == (16, 1) and a[2].shape == (16,)


def test_failed_patches_are_skipped_and_class_weights_balance() -> None:
    labels = (np.arange(40) < 10).astype(int)  # 10 positive, 30 negative
    ds = patch_dataset(ArraySource(40, bad=(3, 17)), np.arange(40), labels, 8, training=True, seed=0)
    batches = list(ds)
    assert sum(len(b[1]) for b in batches) == 38
    y = np.concatenate([b[1].numpy().ravel() for b in batches])
    w = np.concatenate([b[2].numpy() for b in batches])
    assert w[y == 1][0] == pytest.approx(40 / 20) and w[y == 0][0] == pytest.approx(40 / 60)


def test_validation_pipeline_keeps_order_and_pixels() -> None:
    source = ArraySource(20)
    ds = patch_dataset(source, np.arange(20), np.zeros(20), 8, training=False)
    images = np.concatenate([x.numpy() for x, _ in ds])
    np.testing.assert_array_equal(images, source.patches)


def test_slide_reads_skip_and_count_then_fail_above_fraction(tiny_index: pd.DataFrame) -> None:
    index = tiny_index.copy()
    index.loc[0, "path"] = "/nonexistent/slide.tiff"
    source = SlidePatches(index)
    patches, ok = source.read(np.arange(4))
    assert ok.tolist() == [False, True, True, True] and source.failures == 1
    assert patches[1].std() > 0  # a real patch, not the white filler
    index.loc[: len(index) // 2, "path"] = "/nonexistent/slide.tiff"
    source = SlidePatches(index)
    with pytest.raises(HelpkitError, match=r"patch reads failed, more than 5%.*slide file not found"):
        source.read(np.arange(len(index)))
    source.close()


def test_empty_index_is_an_error(tmp_path: Path, tiny_index: pd.DataFrame) -> None:
    with pytest.raises(HelpkitError, match="patch index is empty"):
        train_run(tiny_index.iloc[:0], tmp_path / "run", SMALL)


# --- augmentation ----------------------------------------------------------------------

def test_hed_jitter_matches_skimage() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    alpha = np.array([[1.05, 0.95, 1.0], [0.97, 1.03, 1.01]], np.float32)
    beta = np.array([[0.01, -0.02, 0.0], [0.0, 0.02, -0.01]], np.float32)
    expected = np.stack([np.clip(hed2rgb(rgb2hed(rgb[i]) * alpha[i] + beta[i]), 0, 1) for i in range(2)])
    got = hed_jitter(tf.constant(rgb / 255.0, tf.float32), alpha, beta).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_symmetry_maps_are_the_eight_rotations_and_flips() -> None:
    grid = np.arange(25).reshape(5, 5)
    produced = {tuple(grid.ravel()[order]) for order in symmetry_maps(5)}
    expected = {tuple(np.rot90(g, k).ravel()) for g in (grid, grid[:, ::-1]) for k in range(4)}
    assert produced == expected


def test_symmetries_only_move_pixels_and_are_seeded() -> None:
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    only_geometry = AugmentConfig(brightness=0, contrast=0, hed=0)
    out = augment(images, tf.constant([1, 2]), only_geometry).numpy()
    for before, after in zip(images.numpy(), out, strict=True):
        np.testing.assert_array_equal(np.sort(before.ravel()), np.sort(after.ravel()))
    assert not np.array_equal(out, images.numpy())
    full = AugmentConfig()
    np.testing.assert_array_equal(augment(images, tf.constant([5, 6]), full), augment(images, tf.constant([5, 6]), full))


# --- fitting: resume, time budget ------------------------------------------------------

class Interrupt(keras.callbacks.Callback):
    """Simulates a kill right after the checkpoint of ``epoch``; records epochs begun."""

    def __init__(self, epoch: int | None) -> None:
        super().__init__()
        self.epoch = epoch
        self.begun: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.begun.append(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_continues_from_saved_epoch(tmp_path: Path) -> None:
    data = array_fold()
    killed = Interrupt(epoch=0)
    with pytest.raises(KeyboardInterrupt):
        train_fold(data, tmp_path, SMALL, patch_size=32, extra_callbacks=[killed])
    assert killed.begun == [0]
    assert json.loads((tmp_path / "state.json").read_text())["epochs_done"] == 1
    resumed = Interrupt(epoch=None)
    state = train_fold(data, tmp_path, SMALL, patch_size=32, extra_callbacks=[resumed])
    assert resumed.begun == [1]
    assert state["epochs_done"] == 2 and state["stopped"] == "epochs"
    assert pd.read_csv(tmp_path / "log.csv")["epoch"].tolist() == [0, 1]
    again = Interrupt(epoch=None)  # a finished fold is left alone
    train_fold(data, tmp_path, SMALL, patch_size=32, extra_callbacks=[again])
    assert again.begun == []


def test_time_budget_stops_and_leaves_a_loadable_model(tmp_path: Path) -> None:
    data = array_fold(256)
    config = TrainConfig(model="simple", width=0.25, epochs=50, batch_size=8)
    state = train_fold(data, tmp_path, config, patch_size=32, deadline=time.monotonic() + 1.0)
    assert state["stopped"] == "time_budget" and state["epochs_done"] < 50
    model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert model.predict(data.source.patches[:2], verbose=0).shape == (2, 1)


# --- whole runs on slides --------------------------------------------------------------

def test_train_run_writes_run_folder(tmp_path: Path, tiny_index: pd.DataFrame) -> None:
    out = tmp_path / "run"
    run = train_run(tiny_index, out, TrainConfig(model="simple", width=0.25, folds=1, epochs=1, batch_size=32),
                    name="tiny")
    assert run == load_run(out)
    other = tiny_index.assign(mpp=1.0)  # the same folds on other patches: not into the same folder
    with pytest.raises(HelpkitError, match="trained on other patches"):
        train_run(other, out, TrainConfig(model="simple", width=0.25, folds=1, epochs=1, batch_size=32), name="tiny")
    flips = TrainConfig(model="simple", width=0.25, folds=1, epochs=1, batch_size=32, augmentation=AUGMENTATIONS["flips"])
    with pytest.raises(HelpkitError, match=r"another recipe \(augmentation.brightness 0.08 -> 0.0"):
        train_run(tiny_index, out, flips, name="tiny")  # finished folds would be passed off as the new recipe
    assert run.name == "tiny" and run.geometry == PatchGeometry() and run.patch_size == 64 and len(run.folds) == 1
    for fold in run.folds:
        meta = json.loads((fold.model_path.parent / "model.json").read_text())
        assert meta["geometry"] == {"mpp": 2.0, "patch_size": 64, "stride": 64, "tissue_mpp": 8.0}
        assert meta["train_slides"] == fold.train_slides and meta["val_slides"] == fold.val_slides
        assert not set(fold.train_slides) & set(fold.val_slides)
        assert meta["architecture"] == "simple" and meta["fold"] == fold.index
        assert len(meta["metrics"]["history"]) == 1 and 0 <= meta["metrics"]["val_auc"] <= 1
        assert set(fold.train_slides) | set(fold.val_slides) == set(tiny_index["slide_id"])
        model = run.load_model(fold.index)
        assert model.predict(np.zeros((2, 64, 64, 3), np.uint8), verbose=0).shape == (2, 1)


def test_failing_slide_mid_training_is_a_clear_error(tmp_path: Path, tiny_index: pd.DataFrame) -> None:
    index = tiny_index.copy()
    first_slide = index["slide_id"] == index["slide_id"].iloc[0]
    index.loc[first_slide, "path"] = str(tmp_path / "gone.tiff")
    config = TrainConfig(model="simple", width=0.25, folds=2, epochs=1, batch_size=32, cache=False)
    with pytest.raises(HelpkitError, match="patch reads failed"):
        train_run(index, tmp_path / "run", config)


def test_cli_bad_model_is_one_line(tmp_path: Path, tiny_index: pd.DataFrame) -> None:
    index_path = tmp_path / "index.parquet"
    tiny_index.to_parquet(index_path)
    helpkit = Path(sys.executable).with_name("helpkit")
    result = subprocess.run([str(helpkit), "train", "--model", "resnet", "--index", str(index_path),
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "helpkit: error: unknown model 'resnet' (known: simple, unet, inception)")


def test_cli_tumour_threshold_labels_the_data_it_indexes(tiny_competition: Path, tmp_path: Path) -> None:
    """``helpkit train --data --tumour-threshold``: the index it trains on labels partly-tumour cells as
    tumour; with --index (whose labels are fixed) a threshold is a one-line error, as is one out of (0, 1]."""
    from helpkit.cli.train import _index_from_data

    low = _index_from_data(tiny_competition, PatchGeometry(), None, 0, tumour_threshold=0.05)
    default = _index_from_data(tiny_competition, PatchGeometry(), None, 0)
    assert (low.query("label == 1")["tumour_frac"] >= 0.05).all()
    assert len(low.query("label == 1 and tumour_frac < 0.5")) > 0
    assert (default.query("label == 1")["tumour_frac"] >= 0.5).all()
    helpkit = Path(sys.executable).with_name("helpkit")
    index_path = tmp_path / "index.parquet"
    default.to_parquet(index_path)
    for args, message in [(["--index", str(index_path), "--tumour-threshold", "0.1"], "keeps its own labels"),
                          (["--data", str(tiny_competition), "--tumour-threshold", "0"], "above 0 and at most 1")]:
        result = subprocess.run([str(helpkit), "train", *args, "--out", str(tmp_path / "run")],
                                capture_output=True, text=True)
        assert result.returncode == 2
        assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_simple_model_separates_tumour_on_held_out_slides(tmp_path: Path) -> None:
    """Acceptance: on a synthetic competition (8 training slides) the simple model, trained
    for a short budget, reaches validation patch AUC >= 0.90 on held-out slides."""
    from helpkit.data import discover
    from helpkit.slide.index import index_dataset
    from helpkit.synth import make_competition

    root = make_competition(tmp_path / "competition", n_train=8, n_test=1, size=4096, seed=0)
    slides = discover(root)
    index = index_dataset(slides[slides["split"] == "train"], progress=False).patches
    run = train_run(index, tmp_path / "run", TrainConfig(model="simple", folds=2, epochs=30), time_budget_s=300)
    for fold in run.folds:
        metrics = json.loads((fold.model_path.parent / "model.json").read_text())["metrics"]
        assert metrics["val_auc"] >= 0.90, (fold.index, metrics["val_auc"])
