"""Synthetic competition presets: bounded looks, exact quotas, and every preset's slides
(mpp, JPEG, deposit classes planned and measured, labels.csv with size classes)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.data import read_labels, read_size_classes
from helpkit.layouts import size_class
from helpkit.synth import make_competition, make_slide
from helpkit.synth.artefacts import ArtefactRates
from helpkit.synth.competition import MPP, deposit_shares, draw_split, largest_deposit_um, quotas, slide_plan, slide_side
from helpkit.synth.plan import min_size, tumour_regions
from helpkit.synth.presets import PRESETS, DepositMix, SplitSpec, get_preset
from helpkit.synth.stain import BOUNDS, StainSpace, draw_look
from helpkit.synth.tissue_render import render_tile

LOOK_BOUNDS = {"h_gain": "h_gain", "e_gain": "e_gain", "white": "white", "hue_degrees": "hue",
               "saturation": "saturation", "brightness": "brightness"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_looks_stay_inside_the_bounds_at_every_shift(name: str) -> None:
    spec = PRESETS[name]
    for shift in (0, 0.5, 1, 1.5, 3, 10):
        space = spec.stain.shifted(shift)
        for seed in range(300):
            look = draw_look(seed, space, spec.mpp)
            for attr, bound in LOOK_BOUNDS.items():
                low, high = BOUNDS[bound]
                assert low <= getattr(look, attr) <= high, (name, shift, seed, attr)
            assert min(look.h_gain, look.e_gain, look.saturation, look.brightness, look.white) > 0
            assert 0 <= look.blur0 * spec.mpp <= BOUNDS["blur_um"][1] + 1e-9
            # glass stays bright and neutral-ish: no setting turns the background dark
            assert look.background().min() > 180


def test_shift_moves_the_centre_towards_the_bounds_and_stops_there() -> None:
    space = StainSpace()
    half, full = space.shifted(0.5), space.shifted(1)
    assert full == space.shifted(3) == space.shifted(10)
    assert full.hue == BOUNDS["hue"][0] and full.h_gain == BOUNDS["h_gain"][1]
    assert full.e_gain == BOUNDS["e_gain"][0] and full.saturation == BOUNDS["saturation"][0]
    assert half.hue == pytest.approx(space.hue / 2 + BOUNDS["hue"][0] / 2)
    assert space.shifted(0) == space
    with pytest.raises(HelpkitError, match="shift must be >= 0"):
        space.shifted(-1)


def test_blur_is_in_microns_and_faded_slides_have_weaker_stains() -> None:
    space = StainSpace(blur_um=0.5, blur_spread=0.0, blur_tail=0.0, faded=0.3)
    looks = [draw_look(seed, space, 0.25) for seed in range(1000)]
    assert [look.blur0 for look in looks] == pytest.approx([2.0] * 1000)  # 0.5 um at 0.25 um/px
    faded = np.array([look.faded for look in looks])
    assert 0.25 < faded.mean() < 0.35
    h = np.array([look.h_gain for look in looks])
    assert h[faded].mean() < 0.85 * h[~faded].mean()


def test_quotas_round_by_largest_remainder() -> None:
    assert quotas(10, {"mimics": 0.3, "plain": 0.7}) == {"mimics": 3, "plain": 7}
    assert quotas(5, asdict(DepositMix(0.55, 0.30, 0.15))) == {"macro": 3, "micro": 1, "itc": 1}  # 2.75, 1.5, 0.75
    assert quotas(0, asdict(DepositMix())) == {"macro": 0, "micro": 0, "itc": 0}
    for n in range(1, 40):
        counts = quotas(n, asdict(DepositMix(0.2, 0.45, 0.35)))
        assert sum(counts.values()) == n
        assert all(abs(counts[k] - n * s) < 1 for k, s in (("macro", 0.2), ("micro", 0.45), ("itc", 0.35)))


def test_a_split_draws_exact_quotas_in_shuffled_order() -> None:
    spec = SplitSpec("t", "test", mimics=0.3)
    slides = draw_split(np.random.default_rng(0), "test", 20, spec, 8192)
    positives = [s for s in slides if s.label]
    negatives = [s for s in slides if not s.label]
    assert len(positives) == len(negatives) == 10
    assert sum(s.mimics for s in negatives) == 3 and not any(s.mimics for s in positives)
    assert [sum(s.deposit == k for s in positives) for k in ("macro", "micro", "itc")] == [6, 3, 1]
    assert all(s.deposit is None for s in negatives)
    other = draw_split(np.random.default_rng(1), "test", 20, spec, 8192)
    assert [s.label for s in other] != [s.label for s in slides]


def test_presets_are_typed_specs_with_their_numbers_in_one_place() -> None:
    assert set(PRESETS) >= {"default", "stain", "scanner", "frozen", "small-mets", "help22"}
    for name, spec in PRESETS.items():
        assert spec.name == name and spec.description
        json.dumps(asdict(spec))  # synth.json records the whole spec
    assert PRESETS["scanner"].mpp == 0.5 and PRESETS["default"].mpp == 1.0
    assert PRESETS["small-mets"].deposits.macro < PRESETS["default"].deposits.macro
    frozen, default = PRESETS["frozen"].artefacts, PRESETS["default"].artefacts
    assert all(getattr(frozen, f.name) > getattr(default, f.name) for f in fields(frozen))
    with pytest.raises(HelpkitError, match="unknown synth preset 'nope'.*default.*help22"):
        get_preset("nope")
    with pytest.raises(HelpkitError, match="sum to 1"):
        DepositMix(0.5, 0.5, 0.5)


def test_cli_lists_the_presets_and_rejects_unknown_names(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for name in PRESETS:
        assert name in result.output
    bad = runner.invoke(app, ["synth", str(tmp_path / "c"), "--phase2", "nope"])
    assert isinstance(bad.exception, HelpkitError) and "choose one of default" in str(bad.exception)
    assert not (tmp_path / "c").exists()


def _first_luma_step(path: Path) -> int:
    """The first entry of the luminance quantisation table of the first level-0 tile."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tif.filehandle.seek(page.dataoffsets[0])
        data = tif.filehandle.read(page.databytecounts[0])
    return Image.open(io.BytesIO(data)).quantization[0][0]


def _libjpeg_step(quality: int) -> int:
    """That entry as libjpeg scales it (base 16) for ``quality``."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return max(1, (16 * scale + 50) // 100)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_writes_a_slide_openslide_reads_with_its_mpp(name: str, tmp_path: Path) -> None:
    spec = PRESETS[name]
    truth = make_slide(tmp_path / "s.tiff", 1536, seed=4, positive=True, spec=spec, deposit="micro",
                       mask_path=tmp_path / "m.png")
    side = slide_side(1536, spec.mpp)
    assert (truth["width"], truth["mpp"], truth["preset"]) == (side, spec.mpp, name)
    with openslide.OpenSlide(tmp_path / "s.tiff") as slide:
        assert slide.dimensions == (side, side)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(spec.mpp)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(spec.mpp)
    assert _first_luma_step(tmp_path / "s.tiff") == _libjpeg_step(spec.jpeg_quality)
    assert truth["deposit"] == truth["size_class"] == "micro"
    assert truth["largest_deposit_um"] == largest_deposit_um(truth["regions"], spec.mpp)
    assert set(truth["artefacts"]) == {f.name for f in fields(spec.artefacts)}
    json.dumps(truth)  # synth.json records it as is


@pytest.mark.parametrize("deposit", ["itc", "micro", "macro"])
def test_planned_deposit_classes_are_the_measured_ones(deposit: str) -> None:
    """Measured on the tumour mask as make_slide measures it, at both scanner resolutions."""
    for name in ("default", "scanner"):
        spec = PRESETS[name]
        side = slide_side(4096, spec.mpp)
        for seed in range(3):
            plan = slide_plan(side, side, seed, True, spec, deposit)
            regions = tumour_regions(plan.tumour_mask(16), 16)
            assert size_class(largest_deposit_um(regions, spec.mpp) / 1000) == deposit, (name, seed)


def test_shares_of_deposits_too_big_for_the_slide_go_to_the_next_class() -> None:
    spec = PRESETS["default"]
    assert slide_side(4096, spec.mpp) >= min_size("macro", spec.mpp)  # 4 mm at the base 1 um/px
    assert deposit_shares(spec, 4096) == asdict(spec.deposits)
    assert deposit_shares(spec, 2048) == pytest.approx({"macro": 0, "micro": 0.90, "itc": 0.10})
    assert deposit_shares(spec, 640) == pytest.approx({"macro": 0, "micro": 0, "itc": 1})
    assert deposit_shares(PRESETS["scanner"], 2048) == deposit_shares(spec, 2048)  # same tissue


@pytest.fixture(scope="module")
def phase2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_competition(tmp_path_factory.mktemp("p2"), n_train=2, n_test=12, size=1536, seed=2,
                            phase2="help22", shift=3)


def test_a_phase2_split_holds_its_exact_quotas_and_measured_classes(phase2: Path) -> None:
    meta = json.loads((phase2 / "synth.json").read_text())
    params, slides = meta["params"], meta["slides"]
    assert (params["phase1"], params["phase2"]) == ("default", "help22")
    assert params["presets"]["help22"] == json.loads(json.dumps(asdict(PRESETS["help22"])))
    test = [s for s in slides if s["split"] == "test"]
    positives = [s for s in test if s["label"]]
    negatives = [s for s in test if not s["label"]]
    assert len(positives) == len(negatives) == 6
    assert {s["preset"] for s in test} == {"help22"} and {s["mpp"] for s in slides} == {MPP}
    assert sum(s["mimics"] for s in negatives) == quotas(6, {"m": 0.3, "p": 0.7})["m"] == 2
    shares = deposit_shares(PRESETS["help22"], 1536)
    assert params["deposit_shares"]["test"] == shares
    expected = quotas(6, shares)  # not from the JSON: its keys are sorted, and ties go in order
    assert {k: sum(s["deposit"] == k for s in positives) for k in expected} == expected
    for s in test:
        assert s["size_class"] == (s["deposit"] if s["label"] else "negative")
        assert s["size_class"] == size_class(s["largest_deposit_um"] / 1000)
    assert read_labels(phase2 / "labels.csv").to_dict() == {s["slide_id"]: s["label"] for s in test}
    assert read_size_classes(phase2 / "labels.csv").to_dict() == {s["slide_id"]: s["size_class"] for s in test}
    rows = [line.split(",") for line in (phase2 / "labels.csv").read_text().splitlines()]
    assert rows[0] == ["slide_id", "label", "size_class"]
    assert {r[0]: r[2] for r in rows[1:]} == {s["slide_id"]: s["size_class"] for s in test}


def test_pen_strokes_over_glass_are_drawn_not_skipped_as_glass_tiles(tmp_path: Path) -> None:
    """Glass tiles are written as one constant tile unless an artefact's box reaches them."""
    spec = SplitSpec("pen", "pen strokes", artefacts=ArtefactRates(pen=3))
    make_slide(tmp_path / "s.tiff", 2048, seed=2, positive=False, spec=spec)
    plan, look = slide_plan(2048, 2048, 2, False, spec), draw_look(2, spec.stain, spec.mpp)
    glass, inked = look.background().astype(int), 0
    with openslide.OpenSlide(tmp_path / "s.tiff") as slide:
        for ty in range(plan.margin[1] // 256 * 256 + 256, 2048, 256):
            for tx in range(plan.margin[0] // 256 * 256 + 256, 2048, 256):
                if plan.tissue.window_max(tx, ty, tx + 256, ty + 256) > 0:
                    continue
                drawn = render_tile(plan, look, 1, tx, ty, 256).astype(int)
                if np.abs(drawn - glass).max() > 30:
                    inked += 1
                    written = np.asarray(slide.read_region((tx, ty), 0, (256, 256)).convert("RGB")).astype(int)
                    assert np.abs(written - drawn).mean() < 3, (tx, ty)
    assert inked > 0


def test_data_is_reused_only_if_drawn_now_with_the_same_parameters(phase2: Path, monkeypatch) -> None:
    from helpkit.synth import competition, is_current

    params = dict(n_train=2, n_test=12, size=1536, seed=2, phase2="help22", shift=3)
    assert is_current(phase2, **params)
    assert not is_current(phase2, **(params | {"seed": 3}))
    assert not is_current(phase2, **(params | {"phase2": None}))
    assert not is_current(phase2.parent / "missing", **params)
    calibrated = replace(PRESETS["help22"], mimics=0.5)  # a recalibrated preset redraws
    monkeypatch.setitem(PRESETS, "help22", calibrated)
    assert not is_current(phase2, **params)
    monkeypatch.undo()
    monkeypatch.setattr(competition, "generator_version", lambda: "another renderer")
    assert not is_current(phase2, **params)
