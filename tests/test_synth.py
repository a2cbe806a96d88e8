"""Synthetic competition: layout, OpenSlide compatibility, masks against ground truth,
determinism, the appearance shift, and bad arguments."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.synth import make_competition, make_slide
from helpkit.synth.field import Plan2D
from helpkit.synth.plan import make_plan
from helpkit.synth.stain import look_for
from helpkit.synth.tiff import pyramid_shapes
from helpkit.synth.tissue_render import KINDS, NucleusKind, _stamp, _stamp_half, render_tile, stamp_border


def _synth(root: Path) -> dict:
    return json.loads((root / "synth.json").read_text())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def test_layout_matches_synth_json(tiny_competition: Path) -> None:
    meta = _synth(tiny_competition)
    slides = meta["slides"]
    assert meta["params"]["n_train"] == 4 and meta["params"]["n_test"] == 2
    ids = [s["slide_id"] for s in slides]
    assert len(set(ids)) == len(ids) == 6
    assert [s["split"] for s in slides] == ["train"] * 4 + ["test"] * 2
    assert ids == sorted(ids)
    for split in ("train", "test"):
        assert {s["label"] for s in slides if s["split"] == split} == {0, 1}
    for s in slides:
        group = "positive" if s["label"] else "negative"
        if s["split"] == "train":
            assert s["path"] == f"train/image/{group}/{s['slide_id']}.tiff"
            assert s["mask_path"] == f"train/mask/{group}/{s['slide_id']}.png"
        else:
            assert s["path"] == f"test/{s['slide_id']}.tiff"
            assert s["mask_path"] == f"truth/mask/{s['slide_id']}.png"
        assert (tiny_competition / s["path"]).is_file()
        assert (tiny_competition / s["mask_path"]).is_file()
    written = sorted(p.relative_to(tiny_competition).as_posix() for p in tiny_competition.rglob("*.*"))
    expected = sorted([s["path"] for s in slides] + [s["mask_path"] for s in slides] + ["labels.csv", "synth.json"])
    assert written == expected


def test_labels_csv_holds_the_test_labels(tiny_competition: Path) -> None:
    lines = (tiny_competition / "labels.csv").read_text().splitlines()
    assert lines[0] == "slide_id,label,size_class"
    rows = {line.split(",")[0]: line.split(",")[1:] for line in lines[1:]}
    truth = {s["slide_id"]: [str(s["label"]), s["size_class"]] for s in _synth(tiny_competition)["slides"]
             if s["split"] == "test"}
    assert rows == truth


def test_slides_open_in_openslide_with_levels_and_mpp(tiny_competition: Path) -> None:
    for s in _synth(tiny_competition)["slides"]:
        with openslide.OpenSlide(tiny_competition / s["path"]) as slide:
            assert slide.level_dimensions == ((2048, 2048), (1024, 1024), (512, 512), (256, 256))
            assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 8.0))
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(1.0)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(1.0)
            assert slide.properties["openslide.level[0].tile-width"] == "256"
            top = np.asarray(slide.read_region((0, 0), 3, (256, 256)).convert("RGB")).astype(int)
            assert top.std() > 10  # real content, not a blank page
            # the black non-scanned band sits where synth.json says, and nowhere else
            left, top_rows = s["margin"]["left"] // 8, s["margin"]["top"] // 8
            assert left or top_rows
            black = top.sum(-1) < 30
            band = np.zeros_like(black)
            band[:, : left + 1] = band[: top_rows + 1, :] = True  # +1: the band's edge pixel
            inner = np.zeros_like(band)
            inner[:, : max(left - 1, 0)] = inner[: max(top_rows - 1, 0), :] = True
            assert black[inner].all() and not black[~band].any()


@pytest.mark.parametrize("downsample", [1, 2, 8])
def test_tiles_join_without_seams(downsample: int) -> None:
    """Each pixel is a function of its level-0 position: four tiles equal one big tile."""
    plan = make_plan(4096, 4096, seed=7, positive=True)
    look = look_for(7, shift=0.0)
    dep = plan.tumour.items[0]
    x0, y0 = int(dep.cx) - 128 * downsample, int(dep.cy) - 128 * downsample
    big = render_tile(plan, look, downsample, x0, y0, 256)
    step = 128 * downsample
    quads = [[render_tile(plan, look, downsample, x0 + c * step, y0 + r * step, 128) for c in (0, 1)] for r in (0, 1)]
    stitched = np.concatenate([np.concatenate(row, axis=1) for row in quads], axis=0)
    assert np.array_equal(stitched, big)
    assert big.std() > 10


@pytest.mark.parametrize("downsample", [1, 2, 4])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_largest_nuclei_at_tile_edges_stay_inside_the_stamp_border(kind: NucleusKind, downsample: int) -> None:
    """Worst case for the stamp border: the biggest, most irregular nuclei of a kind centred
    just outside every edge and corner of a tile."""
    size, border = 64, stamp_border(downsample)
    h_map = np.zeros((size + 2 * border, size + 2 * border), np.float32)
    reach = _stamp_half(kind, downsample) * downsample
    near = np.arange(0.0, 4.0, 0.25) * downsample  # just inside the farthest reach
    far = size * downsample
    span = np.concatenate([-reach + near, [0.0, far / 2, far], far + reach - near])
    cx, cy = (a.ravel() for a in np.meshgrid(span, span))
    worst = np.full((len(cx), 8), 65535 / 65536, np.float32)  # largest hashed values: max size, aspect, wobble
    _stamp(kind, np.column_stack([worst, cx, cy]), 0.0, 0.0, downsample, h_map, border)
    assert h_map[border:-border, border:-border].any()


def test_plan_window_bound_and_point_sampling_agree() -> None:
    rng = np.random.default_rng(0)
    field = Plan2D(rng.normal(size=(40, 30)), 16)
    for _ in range(200):
        x0, y0, w = *rng.uniform(-100, 700, 2), rng.uniform(1, 300)
        xs, ys = np.linspace(x0, x0 + w - 1e-3, 37), np.linspace(y0, y0 + w - 1e-3, 29)
        grid = field.grid(xs, ys)
        assert grid.max() <= field.window_max(x0, y0, x0 + w, y0 + w) + 1e-6
        gx, gy = np.meshgrid(xs, ys)
        assert np.allclose(field.points(gx.ravel(), gy.ravel()).reshape(grid.shape), grid, atol=1e-5)


def test_pyramid_halves_down_to_one_tile() -> None:
    shapes = pyramid_shapes(100_000, 60_000)
    assert shapes[0] == (100_000, 60_000)
    assert max(shapes[-1]) <= 256 < max(shapes[-2])
    assert all(b == (a[0] // 2, a[1] // 2) for a, b in zip(shapes, shapes[1:], strict=False))


def test_masks_are_the_regions_and_tumour_lies_in_tissue(tiny_competition: Path) -> None:
    meta = _synth(tiny_competition)
    ds = meta["params"]["mask_downsample"]
    for s in meta["slides"]:
        mask = _mask(tiny_competition / s["mask_path"])
        assert mask.shape == (2048 // ds, 2048 // ds)
        if not s["label"]:
            assert not mask.any() and s["regions"] == []
            continue
        assert s["regions"], f"{s['slide_id']} is positive without tumour"
        covered = np.zeros_like(mask)
        for r in s["regions"]:
            box = mask[r["y"] // ds : (r["y"] + r["h"]) // ds, r["x"] // ds : (r["x"] + r["w"]) // ds]
            assert box.any()
            covered[r["y"] // ds : (r["y"] + r["h"]) // ds, r["x"] // ds : (r["x"] + r["w"]) // ds] = True
        assert not (mask & ~covered).any()
        assert sum(r["area"] for r in s["regions"]) == mask.sum() * ds * ds
        # every mask pixel shows stained tissue: neither glass nor the black margin
        with openslide.OpenSlide(tiny_competition / s["path"]) as slide:
            level = slide.get_best_level_for_downsample(ds)
            factor = ds // int(slide.level_downsamples[level])
            image = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("L"))
        cells = image.reshape(mask.shape[0], factor, mask.shape[1], factor).mean(axis=(1, 3))
        glass = np.percentile(image, 99)
        assert (cells[mask] < glass - 15).all() and (cells[mask] > 60).all()


def test_tumour_nuclei_are_larger_than_normal_nuclei(tiny_competition: Path) -> None:
    """At the patch level (downsample 2), tumour nuclei cover more pixels each."""
    meta = _synth(tiny_competition)
    tumour_sizes, normal_sizes = [], []
    for s in meta["slides"]:
        if not s["label"]:
            continue
        with openslide.OpenSlide(tiny_competition / s["path"]) as slide:
            image = np.asarray(slide.read_region((0, 0), 1, (1024, 1024)).convert("RGB")).astype(int)
        mask = np.kron(_mask(tiny_competition / s["mask_path"]), np.ones((8, 8), bool))
        tissue = ndimage.binary_erosion(image.sum(-1) < 600, iterations=4) & (image.sum(-1) > 60)
        # haematoxylin absorbs red; smoothing fills the pale centres of vesicular nuclei
        nuclei = ndimage.gaussian_filter(image[..., 0].astype(float), 1.0) < 185
        labels, n = ndimage.label(nuclei)
        sizes = np.bincount(labels.ravel())
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            centre = ((box[0].start + box[0].stop) // 2, (box[1].start + box[1].stop) // 2)
            if tissue[centre]:
                (tumour_sizes if mask[centre] else normal_sizes).append(sizes[k])
    assert len(tumour_sizes) > 20 and len(normal_sizes) > 20
    assert np.median(tumour_sizes) > 1.5 * np.median(normal_sizes)


def test_same_seed_same_bytes_and_other_seed_other_bytes(tmp_path: Path) -> None:
    args = dict(n_train=2, n_test=1, size=1024, shift=0.5)
    a = make_competition(tmp_path / "a", seed=3, **args)
    b = make_competition(tmp_path / "b", seed=3, **args)
    c = make_competition(tmp_path / "c", seed=4, **args)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert _digest(a / f) == _digest(b / f), f
    tiffs = [f for f in files if f.suffix == ".tiff"]
    assert all(_digest(a / f) != _digest(c / f) for f in tiffs if (c / f).exists())


def test_thread_count_does_not_change_bytes(tmp_path: Path) -> None:
    make_slide(tmp_path / "one.tiff", 1024, seed=9, positive=True, workers=1)
    make_slide(tmp_path / "four.tiff", 1024, seed=9, positive=True, workers=4)
    assert _digest(tmp_path / "one.tiff") == _digest(tmp_path / "four.tiff")


def _level1(path: Path) -> np.ndarray:
    """Level-1 RGB as float."""
    with openslide.OpenSlide(path) as slide:
        return np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]).convert("RGB")).astype(float)


def test_shift_moves_colour_statistics(tmp_path: Path) -> None:
    base = make_slide(tmp_path / "base.tiff", 1024, seed=5, positive=False, shift=0.0)
    moved = make_slide(tmp_path / "moved.tiff", 1024, seed=5, positive=False, shift=1.0)
    assert base["regions"] == moved["regions"] == []
    rgb0, rgb1 = _level1(tmp_path / "base.tiff"), _level1(tmp_path / "moved.tiff")
    # same seed, same layout: compare the same tissue pixels, found on the unshifted slide
    tissue = (rgb0.sum(-1) > 60) & (rgb0.sum(-1) < 600)
    assert tissue.mean() > 0.05
    saturation = [np.mean(rgb.max(-1) - rgb.min(-1), where=tissue) for rgb in (rgb0, rgb1)]
    assert saturation[1] < 0.85 * saturation[0]
    assert np.abs(rgb0[tissue].mean(0) - rgb1[tissue].mean(0)).max() > 5

    # blur: horizontally neighbouring tissue pixels correlate more
    def neighbour_corr(rgb: np.ndarray) -> float:
        pair = tissue[:, 1:] & tissue[:, :-1]
        return float(np.corrcoef(rgb[:, 1:, 0][pair], rgb[:, :-1, 0][pair])[0, 1])

    assert neighbour_corr(rgb1) > neighbour_corr(rgb0) + 0.03


def test_mask_downsample_and_regions_follow_the_option(tmp_path: Path) -> None:
    truth = make_slide(tmp_path / "s.tiff", 1024, seed=2, positive=True, mask_path=tmp_path / "m.png", mask_downsample=8)
    mask = _mask(tmp_path / "m.png")
    assert mask.shape == (128, 128) and mask.any()
    assert sum(r["area"] for r in truth["regions"]) == mask.sum() * 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_train=1), "at least 2 training slides"),
        (dict(n_test=0), "at least 1 test slide"),
        (dict(size=512), "too small"),
        (dict(seed=-1), "seed must be >= 0"),
    ],
)
def test_bad_arguments_raise_helpkit_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = dict(n_train=2, n_test=1, size=1024, seed=0) | kwargs
    with pytest.raises(HelpkitError, match=message):
        make_competition(tmp_path / "bad", **args)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_rewrite_replaces_an_earlier_competition_but_not_other_folders(tmp_path: Path) -> None:
    make_competition(tmp_path / "c", n_train=3, n_test=1, size=1024, seed=0)
    make_competition(tmp_path / "c", n_train=2, n_test=1, size=1024, seed=0)
    assert len(list((tmp_path / "c").rglob("*.tiff"))) == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(HelpkitError, match="not empty"):
        make_competition(tmp_path / "other", n_train=2, n_test=1, size=1024, seed=0)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_cli_writes_a_competition_and_reports_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "c"), "--train", "2", "--test", "1", "--size", "1024",
                                 "--seed", "1", "--shift", "0.5"])
    assert result.exit_code == 0, result.output
    assert "Slide003" in result.output
    assert _synth(tmp_path / "c")["params"]["shift"] == 0.5
    bad = runner.invoke(app, ["synth", str(tmp_path / "d"), "--train", "1"])
    assert isinstance(bad.exception, HelpkitError)


# --- the CAMELYON layouts ---


@pytest.fixture(scope="module")
def camelyon16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_competition(tmp_path_factory.mktemp("c16"), n_train=4, n_test=2, size=1024, seed=3,
                            layout="camelyon16")


def test_camelyon16_layout_annotations_and_reference(camelyon16: Path) -> None:
    from helpkit.data import discover, read_labels
    from helpkit.layouts import read_reference
    from helpkit.slide.annotation import read_annotation
    from helpkit.synth.competition import slide_plan
    from helpkit.synth.presets import PRESETS

    truth = json.loads((camelyon16 / "synth.json").read_text())
    slides = {s["slide_id"]: s for s in truth["slides"]}
    records = discover(camelyon16).set_index("slide_id")
    assert set(records.index) == set(slides)
    assert {i for i in records.index if records.loc[i, "split"] == "test"} == {"test_001", "test_002"}
    assert all(i.startswith("tumor_" if records.loc[i, "label"] == 1 else ("normal_", "test_"))
               for i in records.index)
    exclusions = 0
    for slide_id, s in slides.items():
        if not s["label"]:
            assert s["annotation"] is None and s["size_class"] == "negative"
            continue
        assert s["size_class"] in ("itc", "micro", "macro")
        annotation = read_annotation(camelyon16 / s["annotation"], (s["width"], s["height"]))
        plan = slide_plan(s["width"], s["height"], s["seed"], True, PRESETS[s["preset"]], s["deposit"], s["mimics"])
        mask = plan.tumour_mask(s["mask_downsample"])
        tumour, exclusion = annotation.tumour(s["mask_downsample"]), annotation.exclusion(s["mask_downsample"])
        # the polygons trace the generator's mask: tumour is the mask less what is excluded
        np.testing.assert_array_equal(tumour, mask & ~exclusion)
        exclusions += s["exclusion"] is not None
        if s["exclusion"] is not None:
            assert (exclusion & mask).any()
    assert exclusions >= 1
    reference = read_reference(camelyon16 / "testing/reference.csv")
    test_ids = sorted(i for i, s in slides.items() if s["split"] == "test")
    assert list(reference.index) == test_ids
    assert read_labels(camelyon16 / "testing/reference.csv").to_dict() == {i: slides[i]["label"] for i in test_ids}
    assert reference["size_class"].to_dict() == {i: slides[i]["size_class"] for i in test_ids}


def test_camelyon17_layout_stages(tmp_path: Path) -> None:
    from helpkit.data import discover
    from helpkit.layouts import pn_stage, read_stage_csv

    root = make_competition(tmp_path, n_train=6, n_test=2, size=1024, seed=1, layout="camelyon17")
    truth = json.loads((root / "synth.json").read_text())
    records = discover(root).set_index("slide_id")
    assert list(records.index[:6]) == [f"patient_000_node_{n}" for n in range(5)] + ["patient_001_node_0"]
    assert (root / "training/center_1/patient_001_node_0.tif").is_file()
    stages = read_stage_csv(root / "training/stage_labels.csv")
    for s in truth["slides"]:
        assert records.loc[s["slide_id"], "label"] == (s["label"] if s["split"] == "train" else -1)
        if s["split"] == "train":
            assert stages.slides[s["slide_id"]] == s["size_class"]
    nodes = [stages.slides[f"patient_000_node_{n}"] for n in range(5)]
    assert stages.patients["patient_000"] == pn_stage(nodes) == truth["stages"]["patient_000"]
    assert set(read_stage_csv(root / "test_stage_labels.csv").patients.index) == {"patient_100"}


def test_cli_synth_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--train", "2", "--test", "1", "--size", "1024",
                                      "--layout", "camelyon16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d/testing/reference.csv").is_file() and "tumor_001" in result.output
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "e"), "--size", "1024", "--layout", "camelyon18"])
    assert isinstance(result.exception, HelpkitError)
    assert "unknown synthetic layout 'camelyon18'" in str(result.exception)
