"""Heatmaps: full coverage on the right cells, read errors isolated, out of fold by construction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpkit.errors import HelpkitError
from helpkit.heatmap.engine import run_heatmap
from helpkit.heatmap.make import Options, SlideRecord, make_heatmaps, out_of_fold, tissue_grid
from helpkit.heatmap.store import heatmap_path, read_heatmap
from helpkit.slide import SlideReader, grid_for, tissue_mask
from helpkit.slide.geometry import PatchGeometry
from helpkit.train import load_run, write_run

RED = (220, 20, 30)
PINK = (215, 140, 200)
TUMOUR = (256, 128, 512, 320)  # level-0 x0, y0, x1, y1 of the red block
TISSUE = (64, 64, 896, 640)
GEOMETRY = PatchGeometry(mpp=1.0, patch_size=32)
"""Level 1 of the test slides, whose level 0 is 0.5 um/px."""


def write_slide(path: Path, width: int = 1024, height: int = 768, tumour=TUMOUR, levels: int = 5) -> Path:
    """A lossless pyramid (5 levels unless told): white glass, a pink tissue block, a red tumour block."""
    rgb = np.full((height, width, 3), 255, np.uint8)
    x0, y0, x1, y1 = TISSUE
    rgb[y0:y1, x0:x1] = PINK
    if tumour is not None:
        x0, y0, x1, y1 = tumour
        rgb[y0:y1, x0:x1] = RED
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            step = 2**level
            tif.write(rgb[::step, ::step], tile=(64, 64), photometric="rgb", subfiletype=0 if level == 0 else 1,
                      resolution=(1e4 / (0.5 * step),) * 2, resolutionunit="CENTIMETER")
    return path


def red_fraction(batch: np.ndarray) -> np.ndarray:
    """The deterministic 'model': share of a patch's pixels that are tumour red."""
    b = batch.astype(np.int16)
    red = (b[..., 0] > 180) & (b[..., 1] < 80) & (b[..., 2] < 80)
    return red.mean(axis=(1, 2))


def expected_fraction(grid, rect=TUMOUR) -> np.ndarray:
    """Overlap of each cell's level-0 footprint with ``rect``, over the footprint: by geometry alone."""
    rows, cols = grid.shape
    x = grid.origin[0] + np.arange(cols) * grid.stride0
    y = grid.origin[1] + np.arange(rows) * grid.stride0
    p = grid.patch_size0
    ox = np.clip(np.minimum(x + p, rect[2]) - np.maximum(x, rect[0]), 0, None)
    oy = np.clip(np.minimum(y + p, rect[3]) - np.maximum(y, rect[1]), 0, None)
    return np.outer(oy, ox) / p**2


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    return write_slide(tmp_path / "Slide001.tiff")


@pytest.mark.parametrize("stride", [32, 16, 48])
def test_high_cells_fall_on_the_tumour_and_map_to_level0(slide: Path, stride: int) -> None:
    with SlideReader(slide) as reader:
        grid = grid_for(reader, PatchGeometry(mpp=1.0, patch_size=32, stride=stride))
        tissue = np.ones(grid.shape, bool)
        result = run_heatmap(reader, red_fraction, grid, tissue, batch_size=16, workers=3)
    expected = expected_fraction(grid)
    np.testing.assert_allclose(result.prob, expected, atol=1e-6)
    high = np.argwhere(result.prob > 0.5)
    assert len(high) > 0
    for r, c in high:  # every high cell's level-0 centre lies on the tumour
        x, y = grid.cell_xy(r, c)
        cx, cy = x + grid.patch_size0 / 2, y + grid.patch_size0 / 2
        assert TUMOUR[0] <= cx <= TUMOUR[2] and TUMOUR[1] <= cy <= TUMOUR[3]
    assert not result.missing.any() and result.errors == []


def test_full_coverage_of_tissue_cells_only(slide: Path) -> None:
    with SlideReader(slide) as reader:
        grid = grid_for(reader, GEOMETRY)
        tissue = tissue_grid(grid, tissue_mask(reader))
        seen = []

        def predict(batch: np.ndarray) -> np.ndarray:
            seen.append(batch.shape[0])
            return red_fraction(batch)

        result = run_heatmap(reader, predict, grid, tissue, batch_size=10, workers=2)
    assert tissue.sum() > 50 and not tissue.all()
    assert np.isfinite(result.prob[tissue]).all()
    assert np.isnan(result.prob[~tissue]).all()
    assert set(seen) == {10}  # the last batch is padded: one input shape, no retracing
    assert len(seen) == -(-int(tissue.sum()) // 10)


class FlakyReader:
    """Wraps a reader; any region touching the level-0 box ``bad`` raises, like a corrupt tile."""

    def __init__(self, reader: SlideReader, bad: tuple[int, int, int, int]) -> None:
        self.reader, self.bad = reader, bad

    def level_for_mpp(self, mpp):
        return self.reader.level_for_mpp(mpp)

    def read_region_mpp(self, location, mpp, size):
        x, y = location
        ds = mpp / self.reader.base_mpp
        x1, y1 = x + size[0] * ds, y + size[1] * ds
        bx0, by0, bx1, by1 = self.bad
        if x < bx1 and x1 > bx0 and y < by1 and y1 > by0:
            raise HelpkitError(f"cannot read region x={x} y={y}", self.reader.path)
        return self.reader.read_region_mpp(location, mpp, size)


def test_unreadable_region_marks_only_its_cells_missing(slide: Path) -> None:
    bad = (300, 150, 420, 200)
    with SlideReader(slide) as reader:
        grid = grid_for(reader, GEOMETRY)
        tissue = np.ones(grid.shape, bool)
        result = run_heatmap(FlakyReader(reader, bad), red_fraction, grid, tissue, batch_size=32, workers=2)
    rows, cols = grid.shape
    xs = grid.origin[0] + np.arange(cols) * grid.stride0
    ys = grid.origin[1] + np.arange(rows) * grid.stride0
    p = grid.patch_size0
    touched = np.outer((ys < bad[3]) & (ys + p > bad[1]), (xs < bad[2]) & (xs + p > bad[0]))
    assert touched.sum() == 6
    np.testing.assert_array_equal(result.missing, touched)
    assert np.isnan(result.prob[touched]).all()
    np.testing.assert_allclose(result.prob[~touched], expected_fraction(grid)[~touched], atol=1e-6)
    assert len(result.errors) == 6 and all("cannot read region" in e for e in result.errors)


# --- out of fold, skip-if-done, failures: make_heatmaps over run folders ---------------------

SLIDES = ["Slide001", "Slide002", "Slide003", "Slide004"]
TEST_SLIDE = "Slide005"


def fold_code(k: int) -> float:
    return 0.1 * (k + 1)


def constant_predictor(calls: list):
    """Each fold model answers its own code: a heatmap's values say which models made it."""

    def factory(run, folds):
        calls.append((run.name, tuple(folds)))
        return lambda batch: np.full(len(batch), np.mean([fold_code(k) for k in folds]))

    return factory


@pytest.fixture
def dataset(tmp_path: Path):
    slides = [SlideRecord(s, write_slide(tmp_path / f"{s}.tiff", tumour=None), "train", 0.0) for s in SLIDES]
    slides.append(SlideRecord(TEST_SLIDE, write_slide(tmp_path / f"{TEST_SLIDE}.tiff"), "test", float("nan")))
    run_dir = tmp_path / "run_a"
    splits = [([s for s in SLIDES if s not in val], val) for val in (SLIDES[:2], SLIDES[2:])]
    write_run(run_dir, name="a", architecture="simple", geometry=GEOMETRY, width=1.0, splits=splits, config={})
    for k in range(2):
        (run_dir / f"fold_{k}").mkdir()
        (run_dir / f"fold_{k}" / "model.keras").write_bytes(b"stand-in")
    return slides, run_dir


def test_out_of_fold_by_construction(tmp_path: Path, dataset) -> None:
    slides, run_dir = dataset
    calls: list = []
    counts = make_heatmaps([run_dir], slides, tmp_path / "hm", Options(), constant_predictor(calls))
    assert counts == {"written": 5, "skipped": 0, "failed": 0}
    run = load_run(run_dir)
    for slide in SLIDES:
        hm = read_heatmap(heatmap_path(tmp_path / "hm", "a", slide))
        assert len(hm.folds) == 1
        (k,) = hm.folds
        assert slide in run.fold(k).val_slides and slide not in run.fold(k).train_slides
        values = hm.prob[np.isfinite(hm.prob)]
        assert values.size and np.allclose(values, fold_code(k))  # made by fold k's model only
    test = read_heatmap(heatmap_path(tmp_path / "hm", "a", TEST_SLIDE))
    assert test.folds == [0, 1] and np.allclose(test.prob[np.isfinite(test.prob)], (fold_code(0) + fold_code(1)) / 2)
    assert test.split == "test" and np.isnan(test.label)


def test_slide_every_fold_trained_on_gets_an_error_not_a_leak(tmp_path: Path, dataset) -> None:
    slides, run_dir = dataset
    write_run(run_dir, name="a", architecture="simple", geometry=GEOMETRY, width=1.0,
              splits=[(SLIDES, [])], config={})
    assert out_of_fold(load_run(run_dir), SLIDES[0]) == []
    counts = make_heatmaps([run_dir], slides[:1], tmp_path / "hm", Options(), constant_predictor([]))
    assert counts["failed"] == 1
    assert "trained on this slide" in read_heatmap(heatmap_path(tmp_path / "hm", "a", SLIDES[0])).error


def test_skip_if_done_and_force(tmp_path: Path, dataset) -> None:
    slides, run_dir = dataset
    out = tmp_path / "hm"
    make_heatmaps([run_dir], slides, out, Options(), constant_predictor([]))
    calls: list = []
    assert make_heatmaps([run_dir], slides, out, Options(), constant_predictor(calls))["skipped"] == 5
    assert calls == []
    assert make_heatmaps([run_dir], slides, out, Options(stride=16), constant_predictor(calls))["written"] == 5
    assert make_heatmaps([run_dir], slides, out, Options(stride=16, force=True), constant_predictor([]))["written"] == 5
    model = run_dir / "fold_0" / "model.keras"  # a retrained fold 0: its slides and the test slide redo
    later = time.time() + 10
    os.utime(model, (later, later))
    assert make_heatmaps([run_dir], slides, out, Options(stride=16), constant_predictor([])) == {
        "written": 3, "skipped": 2, "failed": 0}


def test_unopenable_slide_gives_error_heatmap_and_failed_row(tmp_path: Path, dataset) -> None:
    from helpkit.features import build_features

    slides, run_dir = dataset
    broken = tmp_path / "Slide009.tiff"
    broken.write_bytes(b"not a slide at all")
    slides = [*slides, SlideRecord("Slide009", broken, "test", float("nan"))]
    counts = make_heatmaps([run_dir], slides, tmp_path / "hm", Options(png=True), constant_predictor([]))
    assert counts == {"written": 5, "skipped": 0, "failed": 1}
    hm = read_heatmap(heatmap_path(tmp_path / "hm", "a", "Slide009"))
    assert hm.error and hm.prob.shape == (0, 0) and hm.folds == [0, 1]
    assert heatmap_path(tmp_path / "hm", "a", TEST_SLIDE).with_suffix(".png").stat().st_size > 1000
    import pandas as pd

    build_features([tmp_path / "hm"], tmp_path / "f.parquet")
    table = pd.read_parquet(tmp_path / "f.parquet").set_index("slide_id")
    assert table.loc["Slide009", "a__failed"] == 1 and np.isnan(table.loc["Slide009", "a__max"])
    assert table.loc[TEST_SLIDE, "a__failed"] == 0 and table.loc[TEST_SLIDE, "a__max"] == pytest.approx(0.15)


# --- the CLI on the shared synthetic competition, with real (constant) Keras fold models ------


def constant_model(value: float):
    """A Keras model whatever the patch answers ``value``: its outputs name the fold that ran."""
    import keras

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(value))(x)
    return keras.Model(inputs, outputs)


def test_cli_heatmap_and_features_out_of_fold(tiny_competition: Path, tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from helpkit.cli import app
    from helpkit.data import discover

    slides = discover(tiny_competition)
    train = sorted(slides.loc[slides.split == "train", "slide_id"])
    halves = [train[::2], train[1::2]]
    run_dir = tmp_path / "const"
    write_run(run_dir, name="const", architecture="test", geometry=PatchGeometry(mpp=0.5, patch_size=32), width=1.0,
              splits=[([s for s in train if s not in val], val) for val in halves], config={})
    for k in range(2):
        (run_dir / f"fold_{k}").mkdir()
        constant_model(fold_code(k)).save(run_dir / f"fold_{k}" / "model.keras")
    out = tmp_path / "hm"
    runner = CliRunner()
    args = ["heatmap", "--model", str(run_dir), "--data", str(tiny_competition), "--out", str(out), "--batch", "64"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 written" in result.output
    assert "6 already current" in runner.invoke(app, args).output
    assert "6 written" in runner.invoke(app, [*args, "--force"]).output

    table_path = tmp_path / "features.parquet"
    assert runner.invoke(app, ["features", str(out), "--out", str(table_path)]).exit_code == 0
    table = pd.read_parquet(table_path).set_index("slide_id")
    for k, val in enumerate(halves):
        for slide in val:
            assert table.loc[slide, "const__fold"] == k
            assert table.loc[slide, "const__max"] == pytest.approx(fold_code(k), abs=1e-6)
    tests = table[table.split == "test"]
    assert len(tests) == 2 and (tests["const__fold"] == -1).all()
    np.testing.assert_allclose(tests["const__mean"], (fold_code(0) + fold_code(1)) / 2, atol=1e-6)
    assert (table["const__tissue_patches"] > 0).all() and (table["const__failed"] == 0).all()
    cell_mm2 = (32 * 0.5 / 1000) ** 2  # a 32 px patch at 0.5 um/px is 16 um a side, whatever the slide's scan
    np.testing.assert_allclose(table["const__tissue_mm2"], table["const__tissue_patches"] * cell_mm2)
    assert "is current" in runner.invoke(app, ["features", str(out), "--out", str(table_path)]).output


# --- slides of any pyramid, and heatmaps keyed by what they were made from ---------------------


def red_predictor(calls: list):
    """Fold models that look at the pixels: a heatmap says what the slide shows."""

    def factory(run, folds):
        calls.append((run.name, tuple(folds)))
        return red_fraction

    return factory


def test_single_level_slide_gets_real_scores_read_like_training(tmp_path: Path, dataset) -> None:
    import pandas as pd

    from helpkit.train.dataset import SlidePatches

    flat = write_slide(tmp_path / "Slide006.tiff", levels=1)  # no level at 1 um/px: every cell is resized
    with SlideReader(flat) as reader:
        assert reader.level_count == 1 and reader.level_for_mpp(GEOMETRY.mpp)[1] == 2.0
        grid = grid_for(reader, GEOMETRY)
        tissue = tissue_grid(grid, tissue_mask(reader))
        seen: dict[tuple[int, int], np.ndarray] = {}
        cells = iter(np.argwhere(tissue))

        def predict(batch: np.ndarray) -> np.ndarray:
            for patch in batch:
                cell = next(cells, None)
                if cell is not None:
                    seen[tuple(cell)] = patch.copy()
            return red_fraction(batch)

        result = run_heatmap(reader, predict, grid, tissue, batch_size=16, workers=1)
    np.testing.assert_allclose(result.prob[tissue], expected_fraction(grid)[tissue], atol=1e-6)
    assert tissue.sum() > 50 and result.prob[tissue].max() == 1.0
    # Training reads the same cells through the same call: the very same pixels.
    rows = [(r, c, *grid.cell_xy(r, c)) for r, c in list(seen)[:40]]
    index = pd.DataFrame({"path": str(flat), "x": [r[2] for r in rows], "y": [r[3] for r in rows],
                          **GEOMETRY.to_dict()})
    source = SlidePatches(index)
    try:
        patches, ok = source.read(np.arange(len(rows)))
    finally:
        source.close()
    assert ok.all()
    for i, (r, c, _, _) in enumerate(rows):
        np.testing.assert_array_equal(patches[i], seen[(r, c)])
    # And through make_heatmaps: a real heatmap, not a failure.
    slides, run_dir = dataset
    record = SlideRecord("Slide006", flat, "test", float("nan"))
    assert make_heatmaps([run_dir], [record], tmp_path / "hm", Options(), red_predictor([]))["written"] == 1
    hm = read_heatmap(heatmap_path(tmp_path / "hm", "a", "Slide006"))
    assert not hm.error and np.nanmax(hm.prob) == 1.0 and hm.geometry == GEOMETRY and hm.key


def test_same_name_new_content_is_recomputed_and_equals_a_fresh_run(tmp_path: Path, dataset) -> None:
    slides, run_dir = dataset
    out = tmp_path / "hm"
    test = slides[-1]
    assert make_heatmaps([run_dir], [test], out, Options(), red_predictor([]))["written"] == 1
    first = read_heatmap(heatmap_path(out, "a", TEST_SLIDE))
    calls: list = []
    assert make_heatmaps([run_dir], [test], out, Options(), red_predictor(calls))["skipped"] == 1 and calls == []
    write_slide(test.path, tumour=(640, 384, 768, 512))  # a second test set: same name, other slide
    assert make_heatmaps([run_dir], [test], out, Options(), red_predictor([]))["written"] == 1
    second = read_heatmap(heatmap_path(out, "a", TEST_SLIDE))
    make_heatmaps([run_dir], [test], tmp_path / "fresh", Options(), red_predictor([]))
    fresh = read_heatmap(heatmap_path(tmp_path / "fresh", "a", TEST_SLIDE))
    assert second.key != first.key and second.key == fresh.key
    assert not np.array_equal(second.prob, first.prob, equal_nan=True)
    np.testing.assert_array_equal(second.prob, fresh.prob)


def test_a_changed_label_is_recomputed(tmp_path: Path, dataset) -> None:
    """labels.csv corrected: the heatmap (which records the label features are fitted on) is redone."""
    slides, run_dir = dataset
    out = tmp_path / "hm"
    make_heatmaps([run_dir], slides[:1], out, Options(), constant_predictor([]))
    relabelled = SlideRecord(slides[0].slide_id, slides[0].path, "train", 1.0)
    assert make_heatmaps([run_dir], [relabelled], out, Options(), constant_predictor([]))["written"] == 1
    assert read_heatmap(heatmap_path(out, "a", slides[0].slide_id)).label == 1.0
