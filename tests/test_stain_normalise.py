"""Stain normalisation: Macenko and Reinhard against hand-computed cases and scikit-image's HED
matrix, identity, errors, and a tiny run trained and scored with Macenko end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.color import hed2rgb, rgb2lab, rgb_from_hed

from helpkit.errors import HelpkitError
from helpkit.slide.stain_normalise import (
    BACKGROUND,
    StainStats,
    estimate_stains,
    fit_reference,
    normalise,
    normalised_predict,
)

H1, E1 = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
H2, E2 = np.array([0.55, 0.75, 0.37]), np.array([0.25, 0.85, 0.46])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def concentrations(n: int = 20_000, seed: int = 0) -> np.ndarray:
    """(n, 2) H and E amounts: mixtures plus a tenth of pure H and a tenth of pure E pixels."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.1, 1.0, (n, 2))
    c[: n // 10, 1] = 0
    c[n // 10: n // 5, 0] = 0
    return c


def render(c: np.ndarray, h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """uint8 pixels of optical density ``c @ [h, e]``, with the module's I = Io exp(-OD) - 1."""
    od = c @ np.stack([unit(h), unit(e)])
    return np.clip(np.rint(BACKGROUND * np.exp(-od) - 1), 0, 255).astype(np.uint8)


def skimage_he(n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Pixels made by scikit-image from H and E only (no DAB), in a realistic OD range."""
    rng = np.random.default_rng(seed)
    hed = np.zeros((n, 3))
    hed[:, :2] = rng.uniform(0, 0.08, (n, 2))
    return np.rint(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


# --- hand-computed ---------------------------------------------------------------------------

def test_macenko_recovers_known_vectors_and_maps_analytically() -> None:
    c = concentrations()
    stats = estimate_stains(render(c, H1, E1), "macenko")
    assert np.dot(stats.stains[0], unit(H1)) > 0.999 and np.dot(stats.stains[1], unit(E1)) > 0.999
    np.testing.assert_allclose(stats.max_concentrations, np.percentile(c, 99, axis=0), rtol=0.03)

    reference = StainStats("macenko", stains=(tuple(unit(H2)), tuple(unit(E2))), max_concentrations=(0.8, 0.5))
    out = normalise(render(c, H1, E1), stats, reference)
    scaled = c * np.asarray(reference.max_concentrations) / np.asarray(stats.max_concentrations)
    expected = BACKGROUND * np.exp(-scaled @ np.stack([unit(H2), unit(E2)])) - 1
    assert np.abs(out - np.clip(expected, 0, 255)).max() <= 3


def test_reinhard_output_has_the_reference_lab_moments() -> None:
    source = render(concentrations(seed=1), H1, E1)
    target = render(concentrations(seed=2) * [1.3, 0.6], H2, E2)
    reference = estimate_stains(target, "reinhard")
    out = normalise(source, estimate_stains(source, "reinhard"), reference)
    lab = rgb2lab(out.reshape(-1, 1, 3)).reshape(-1, 3)
    np.testing.assert_allclose(lab.mean(axis=0), reference.mean, atol=1.0)
    np.testing.assert_allclose(lab.std(axis=0), reference.std, rtol=0.05)


# --- against scikit-image ----------------------------------------------------------------------

def test_macenko_vectors_match_skimage_hed() -> None:
    stats = estimate_stains(skimage_he(), "macenko")
    assert np.dot(stats.stains[0], unit(rgb_from_hed[0])) > 0.99
    assert np.dot(stats.stains[1], unit(rgb_from_hed[1])) > 0.99


# --- identity, background, errors, round trips --------------------------------------------------

@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_own_stats_change_a_slide_by_a_few_grey_levels_and_glass_stays_white(method: str) -> None:
    pixels = skimage_he()
    stats = estimate_stains(pixels, method)
    assert np.abs(normalise(pixels, stats, stats).astype(int) - pixels).max() <= 3
    other = estimate_stains(render(concentrations(), H2, E2), method)
    glass = np.full((4, 8, 8, 3), 255, np.uint8)
    assert normalise(glass, stats, other).min() >= 250


def test_too_few_tissue_pixels_is_a_clear_error() -> None:
    mostly_glass = np.full((10_000, 3), 250, np.uint8)
    mostly_glass[:50] = render(concentrations(50), H1, E1)
    for method in ("macenko", "reinhard"):
        with pytest.raises(HelpkitError, match="slide7.tif: too few tissue pixels"):
            estimate_stains(mostly_glass[:400] if method == "reinhard" else mostly_glass, method, source="slide7.tif")
    with pytest.raises(HelpkitError, match="unknown stain normalisation 'vahadane'"):
        estimate_stains(mostly_glass, "vahadane")


def test_stats_round_trip_and_reference_is_the_median() -> None:
    stats = [estimate_stains(render(concentrations(seed=s) * g, H1 + d, E1), "macenko")
             for s, g, d in ((0, 1.0, 0.0), (1, 1.2, 0.05), (2, 0.9, -0.05))]
    for s in stats:
        assert StainStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    reference = fit_reference(stats)
    np.testing.assert_allclose(np.linalg.norm(reference.stains, axis=1), 1.0)
    np.testing.assert_allclose(reference.max_concentrations,
                               np.median([s.max_concentrations for s in stats], axis=0))
    with pytest.raises(HelpkitError, match="different methods"):
        fit_reference([stats[0], estimate_stains(skimage_he(), "reinhard")])
    with pytest.raises(HelpkitError, match="stain.json: .*wrong numbers"):
        StainStats.from_dict({"method": "macenko", "stains": [[1, 0, 0]]}, "stain.json")


def test_per_batch_cost_is_small() -> None:
    """A 64-patch batch of 64 x 64 pixels: Macenko is one lookup, one 3x3 product and one exp."""
    import time

    batch = np.broadcast_to(skimage_he(64 * 64)[None].reshape(1, 64, 64, 3), (64, 64, 64, 3)).copy()
    stats = estimate_stains(batch.reshape(-1, 3), "macenko")
    started = time.perf_counter()
    normalise(batch, stats, stats)
    assert time.perf_counter() - started < 0.5


def test_normalised_predict_feeds_the_model_normalised_patches() -> None:
    pixels = skimage_he(64 * 64).reshape(1, 64, 64, 3)
    source = estimate_stains(pixels.reshape(-1, 3), "macenko")
    reference = estimate_stains(render(concentrations(), H2, E2), "macenko")
    model = lambda batch: batch.reshape(len(batch), -1).mean(axis=1)  # noqa: E731
    model.batch_key = "model"  # type: ignore[attr-defined]
    wrapped = normalised_predict(model, source, reference)
    np.testing.assert_array_equal(wrapped(pixels), model(normalise(pixels, source, reference)))
    assert wrapped.batch_key == ("model", "stain", "macenko")  # one batch-size tuning for every slide


# --- end to end: a tiny run trained and scored with Macenko ---------------------------------------

@pytest.fixture(scope="module")
def tiny_index(tiny_competition: Path) -> pd.DataFrame:
    from helpkit.data import discover
    from helpkit.slide.index import index_dataset

    slides = discover(tiny_competition)
    return index_dataset(slides[slides["split"] == "train"], progress=False).patches


@pytest.mark.slow  # about 60 s: a tiny competition, its index and a one-epoch run
def test_macenko_run_writes_stain_json_and_heatmaps_carry_stats(tmp_path: Path, tiny_competition: Path,
                                                               tiny_index: pd.DataFrame) -> None:
    from helpkit.heatmap.make import Options, heatmap_key, make_heatmaps, slide_records
    from helpkit.heatmap.store import heatmap_path, read_heatmap
    from helpkit.io import file_identity
    from helpkit.train import load_run
    from helpkit.train.export import export_run
    from helpkit.train.fit import TrainConfig, train_run
    from helpkit.train.stain import STAIN_FILE, read_run_stains

    config = TrainConfig(model="simple", width=0.25, folds=1, epochs=1, batch_size=32, normalise="macenko")
    run = train_run(tiny_index, tmp_path / "run", config, name="tiny")
    stains = read_run_stains(run.path)
    assert stains is not None and stains.method == "macenko" and run.normalise == "macenko"
    assert set(stains.slides) == set(tiny_index["slide_id"]) and all(stains.slides.values())
    assert run.stain_reference == stains.reference == fit_reference(list(stains.slides.values()))
    written = (run.path / STAIN_FILE).stat().st_mtime_ns
    train_run(tiny_index, tmp_path / "run", config, name="tiny")  # resume: stain.json reused, not re-estimated
    assert (run.path / STAIN_FILE).stat().st_mtime_ns == written
    export_run(run.path, tmp_path / "shipped")
    assert load_run(tmp_path / "shipped").stain_reference == run.stain_reference

    seen: list[np.ndarray] = []

    def recording(run_, folds):
        def predict(batch: np.ndarray) -> np.ndarray:
            seen.append(batch.copy())
            return np.full(len(batch), 0.5)
        return predict

    records = slide_records(tiny_competition, "test")[:1]
    make_heatmaps([run.path], records, tmp_path / "hm", Options(), recording)
    heatmap = read_heatmap(heatmap_path(tmp_path / "hm", "tiny", records[0].slide_id))
    assert not heatmap.error and heatmap.stain is not None and heatmap.stain.method == "macenko"
    assert seen and all(b.dtype == np.uint8 for b in seen)

    plain = replace(run, normalise="none", stain_reference=None)
    models = {f.index: file_identity(f.model_path) for f in run.folds}
    keys = [heatmap_key(records[0], file_identity(records[0].path), r, models, [0], r.geometry) for r in (run, plain)]
    assert heatmap.key == keys[0] != keys[1]


def test_cli_bad_normalise_is_one_line(tmp_path: Path) -> None:
    helpkit = Path(sys.executable).with_name("helpkit")
    result = subprocess.run([str(helpkit), "train", "--normalise", "vahadane", "--index", str(tmp_path / "i.csv"),
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "helpkit: error: unknown stain normalisation 'vahadane': choose none, macenko, reinhard")
