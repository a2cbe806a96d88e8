"""Labelling, sampling and the patch index, on the synthetic competition's ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.grid import grid_for
from helpkit.slide.index import INDEX_COLUMNS, IndexConfig, index_geometry, index_slide, write_index
from helpkit.slide.reader import SlideReader
from helpkit.slide.sampling import label_patches, sample_patches
from helpkit.slide.tissue import saturation, tissue_mask


@pytest.fixture(scope="module")
def truth(tiny_competition: Path) -> dict[str, dict]:
    slides = json.loads((tiny_competition / "synth.json").read_text())["slides"]
    return {s["slide_id"]: s for s in slides}


def train_slides(truth: dict[str, dict], label: int) -> list[dict]:
    return [s for s in truth.values() if s["split"] == "train" and s["label"] == label]


def test_labelling_rules() -> None:
    cells = pd.DataFrame({"tissue_frac": [1.0, 0.4, 0.9, 0.8, 0.6, 1.0],
                          "tumour_frac": [0.0, 0.0, 0.5, 0.2, 1.0, np.nan]})
    labelled = label_patches(cells, tumour_threshold=0.5, min_tissue=0.5)
    assert list(labelled.index) == [0, 2, 3, 4, 5]
    assert list(labelled["label"]) == [0, 1, -1, 1, -1]


def cells(n_tumour: int, n_normal: int, n_ambiguous: int = 0) -> pd.DataFrame:
    labels = [1] * n_tumour + [0] * n_normal + [-1] * n_ambiguous
    return pd.DataFrame({"label": np.random.default_rng(1).permutation(labels), "row": range(len(labels))})


def test_sampling_balances_caps_and_drops_ambiguous() -> None:
    patches = cells(30, 200, 10)
    balanced = sample_patches(patches, slide_id="S", seed=0)
    assert balanced["label"].value_counts().to_dict() == {1: 30, 0: 30}
    capped = sample_patches(patches, slide_id="S", max_per_class=20, balance=False, seed=0)
    assert capped["label"].value_counts().to_dict() == {1: 20, 0: 20}
    assert list(capped.index) == sorted(capped.index), "grid order kept"
    negative = sample_patches(cells(0, 50), slide_id="S", max_per_class=40, seed=0)
    assert len(negative) == 40 and set(negative["label"]) == {0}
    unknown = sample_patches(cells(0, 0, 25), slide_id="S", max_per_class=10, annotated=False, seed=0)
    assert len(unknown) == 10 and set(unknown["label"]) == {-1}


def test_sampling_is_reproducible_with_a_seed() -> None:
    patches = cells(40, 400)
    runs = [sample_patches(patches, slide_id=s, max_per_class=25, seed=k).index for s, k in
            [("A", 7), ("A", 7), ("A", 8), ("B", 7)]]
    assert list(runs[0]) == list(runs[1])
    assert list(runs[0]) != list(runs[2]) and list(runs[0]) != list(runs[3])


def test_tissue_mask_excludes_margin_and_glass(tiny_competition: Path, truth: dict[str, dict]) -> None:
    assert any(s["margin"]["left"] + s["margin"]["top"] > 0 for s in truth.values())
    for slide in truth.values():
        with SlideReader(tiny_competition / slide["path"]) as reader:
            tissue = tissue_mask(reader, 8.0)  # 1 um/px slides: downsample 8
            thumb = reader.read_level(reader.best_level_for_downsample(tissue.downsample))
        mask, ds = tissue.mask, tissue.downsample
        left, top = (int(slide["margin"][k] // ds) for k in ("left", "top"))
        assert not mask[:, :left].any() and not mask[:top].any(), "black margin is not tissue"
        scanned = np.zeros_like(mask)
        scanned[top + 1:, left + 1:] = True  # one pixel in: JPEG blurs the margin's edge
        glass = scanned & (saturation(thumb) < 0.03) & (thumb.min(axis=2) > 200)
        stained = scanned & (saturation(thumb) > 0.25)
        assert 0.1 < mask.mean() < 0.9
        assert (mask & glass).sum() <= 0.01 * glass.sum(), "white glass is not tissue"
        assert (stained & ~mask).sum() <= 0.02 * stained.sum(), "stained tissue is found"


def test_grid_is_level0_and_round_trips_with_read_region(tiny_competition: Path, truth: dict[str, dict]) -> None:
    path = tiny_competition / train_slides(truth, 1)[0]["path"]
    index = index_slide(path, tiny_competition / train_slides(truth, 1)[0]["mask_path"], 1).patches
    direct = openslide.OpenSlide(path)
    with SlideReader(path) as reader:
        grid = grid_for(reader, PatchGeometry())
        for _, patch in index.sample(5, random_state=0).iterrows():
            assert grid.cell_xy(patch["row"], patch["col"]) == (patch["x"], patch["y"])
            ours = reader.read_region_mpp((patch["x"], patch["y"]), 2.0, (64, 64))  # level 1 (1 um/px slides) as it is
            theirs = np.asarray(direct.read_region((int(patch["x"]), int(patch["y"])), 1, (64, 64)))[..., :3]
            np.testing.assert_array_equal(ours, theirs)
            level0 = reader.read_region((patch["x"], patch["y"]), 0, (128, 128)).astype(float)
            halved = level0.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
            shifted = reader.read_region((patch["x"] + 64, patch["y"]), 0, (128, 128)).astype(float)
            assert np.abs(ours - halved).mean() < 0.5 * np.abs(ours - shifted.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))).mean()


def inside_any(x: float, y: float, regions: list[dict]) -> bool:
    return any(r["x"] <= x < r["x"] + r["w"] and r["y"] <= y < r["y"] + r["h"] for r in regions)


def test_tumour_patches_fall_inside_written_tumour_regions(tiny_competition: Path, truth: dict[str, dict]) -> None:
    for slide in train_slides(truth, 1):
        result = index_slide(tiny_competition / slide["path"], tiny_competition / slide["mask_path"], 1)
        tumour = result.patches[result.patches["label"] == 1]
        assert result.n_tumour > 0 and len(tumour) == min(result.n_tumour, result.n_normal)
        half = 64  # patch_size0 / 2: test the patch centre
        assert all(inside_any(x + half, y + half, slide["regions"]) for x, y in zip(tumour["x"], tumour["y"]))
        normal = result.patches[result.patches["label"] == 0]
        assert not any(inside_any(x + half, y + half, slide["regions"]) and f > 0
                       for x, y, f in zip(normal["x"], normal["y"], normal["tumour_frac"]))
    for slide in train_slides(truth, 0):
        result = index_slide(tiny_competition / slide["path"], None, 0)
        assert result.n_tumour == 0 and set(result.patches["label"]) == {0}


def test_index_slide_output_and_seed(tiny_competition: Path, truth: dict[str, dict]) -> None:
    slide = train_slides(truth, 1)[0]
    args = (tiny_competition / slide["path"], tiny_competition / slide["mask_path"], 1)
    first = index_slide(*args, config=IndexConfig(max_per_class=5, seed=3)).patches
    again = index_slide(*args, config=IndexConfig(max_per_class=5, seed=3)).patches
    other = index_slide(*args, config=IndexConfig(max_per_class=5, seed=4)).patches
    assert list(first.columns) == INDEX_COLUMNS
    pd.testing.assert_frame_equal(first, again)
    assert not first[["row", "col"]].equals(other[["row", "col"]])
    assert set(first["slide_label"]) == {1} and set(first["mpp"]) == {2.0} and set(first["patch_size"]) == {64}
    assert index_geometry(first) == PatchGeometry()
    with pytest.raises(HelpkitError, match="positive slide has no tumour mask"):
        index_slide(args[0], None, 1)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_index_round_trips(tmp_path: Path, suffix: str) -> None:
    table = pd.DataFrame({c: [1, 2] for c in INDEX_COLUMNS})
    path = write_index(table, tmp_path / f"index{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(back.columns) == INDEX_COLUMNS and len(back) == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.fixture
def layout_with_bad_slide(tmp_path: Path, tiny_competition: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_competition / "train", root / "train")
    (root / "train/image/negative/Slide099.svs").write_text("not a slide\n")
    return root


def test_cli_index_continues_past_bad_slides(layout_with_bad_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "index.parquet"
    result = CliRunner().invoke(app, ["index", str(layout_with_bad_slide), "--out", str(out),
                                      "--max-per-class", "8"])
    assert result.exit_code == 0, result.output
    assert "failed: Slide099" in result.output and "Slide099.svs" in result.output
    index = pd.read_parquet(out)
    assert list(index.columns) == INDEX_COLUMNS
    assert sorted(index["slide_id"].unique()) == ["Slide001", "Slide002", "Slide003", "Slide004"]
    assert index.groupby(["slide_id", "label"]).size().max() <= 8


def test_cli_index_fails_when_every_slide_fails(tmp_path: Path) -> None:
    test = tmp_path / "test"
    test.mkdir()
    for name in ("Slide001.svs", "Slide002.tiff"):
        (test / name).write_bytes(b"II*\0garbage")
    result = CliRunner().invoke(app, ["index", str(test), "--split", "test", "--out", str(tmp_path / "i.parquet")])
    assert result.exit_code == 1
    assert "none of the 2 slides could be indexed" in result.output
    assert not (tmp_path / "i.parquet").exists()
