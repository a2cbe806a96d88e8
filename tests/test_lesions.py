"""Lesion detections from heatmaps: maxima, suppression in microns, level-0 cell centres, files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.heatmap.lesions import (
    FALLBACK_MPP,
    FLOOR,
    RADIUS_UM,
    Detections,
    LesionOptions,
    detect,
    read_detections,
    write_detections,
)
from helpkit.heatmap.store import Heatmap, heatmap_path, write_heatmap

ORIGIN = (1000, 2000)
STRIDE0 = 128  # level-0 pixels a cell; at 0.25 um/px, 32 um
MPP = (0.25, 0.25)


def make_heatmap(prob: np.ndarray, slide_id: str = "s1", mpp=MPP, **extra) -> Heatmap:
    """A heatmap with this grid, whatever other fields the schema has now."""
    values = {
        "prob": prob.astype(np.float32), "tissue": np.isfinite(prob), "missing": np.zeros(prob.shape, bool),
        "origin": ORIGIN, "stride0": STRIDE0, "patch_size0": STRIDE0, "level": 1, "patch_size": 64,
        "slide_id": slide_id, "model": "m", "split": "test", "label": float("nan"), "folds": [0, 1],
        "error": "", "errors": [], "mpp": mpp, "key": "",
    }
    names = {f.name for f in dataclasses.fields(Heatmap)}
    if "geometry" in names:
        from helpkit.slide.geometry import PatchGeometry

        values["geometry"] = PatchGeometry()
    values.update(extra)
    return Heatmap(**{k: v for k, v in values.items() if k in names})


def grid(rows: int = 20, cols: int = 30) -> np.ndarray:
    prob = np.full((rows, cols), 0.1)
    prob[0, :] = np.nan  # outside tissue
    return prob


def centre(row: int, col: int) -> tuple[int, int]:
    return ORIGIN[0] + col * STRIDE0 + STRIDE0 // 2, ORIGIN[1] + row * STRIDE0 + STRIDE0 // 2


def as_list(found: Detections) -> list[tuple[float, int, int]]:
    return [(round(float(c), 6), int(x), int(y)) for c, x, y in zip(found.confidence, found.x, found.y, strict=True)]


def test_one_peak_at_its_cell_centre_in_level0() -> None:
    prob = grid()
    prob[5, 7] = 0.9
    found = detect(make_heatmap(prob), LesionOptions(sigma_um=0))
    assert as_list(found) == [(0.9, *centre(5, 7))]


def test_suppression_radius_in_microns() -> None:
    prob = grid()
    prob[5, 5], prob[5, 10] = 0.9, 0.8  # 5 cells = 160 um apart at 0.25 um/px
    near = detect(make_heatmap(prob), LesionOptions(sigma_um=0, radius_um=200))
    far = detect(make_heatmap(prob), LesionOptions(sigma_um=0, radius_um=150))
    assert as_list(near) == [(0.9, *centre(5, 5))]
    assert as_list(far) == [(0.9, *centre(5, 5)), (0.8, *centre(5, 10))]
    # The same cells at 0.5 um/px are 320 um apart: both kept at 200 um.
    coarse = detect(make_heatmap(prob, mpp=(0.5, 0.5)), LesionOptions(sigma_um=0, radius_um=200))
    assert len(coarse) == 2


def test_floor_tissue_and_plateau() -> None:
    prob = grid()
    prob[3, 3] = 0.49  # under the floor
    prob[10:13, 10:13] = 0.8  # a plateau: one detection after suppression
    prob[0, 20] = np.nan
    found = detect(make_heatmap(prob), LesionOptions(sigma_um=0))
    assert len(found) == 1 and found.confidence[0] == pytest.approx(0.8)
    # Smoothing makes the plateau's middle the one maximum.
    smooth = detect(make_heatmap(prob), LesionOptions(sigma_um=32.0))
    assert as_list(smooth)[0][1:] == centre(11, 11) and len(smooth) == 1
    assert smooth.confidence[0] < 0.8


def test_missing_mpp_falls_back_and_failed_heatmap_is_empty() -> None:
    prob = grid()
    prob[5, 5], prob[5, 10] = 0.9, 0.8
    # 5 cells of 128 px at the fallback 0.25 um/px = 160 um: suppressed at 200 um.
    assert FALLBACK_MPP == 0.25
    assert len(detect(make_heatmap(prob, mpp=None), LesionOptions(sigma_um=0, radius_um=200))) == 1
    failed = make_heatmap(np.zeros((0, 0)), error="cannot open slide", origin=(0, 0), stride0=0, patch_size0=0)
    assert len(detect(failed)) == 0


def test_options_are_checked() -> None:
    with pytest.raises(HelpkitError, match="floor"):
        LesionOptions(floor=1.5)
    with pytest.raises(HelpkitError, match="radius"):
        LesionOptions(radius_um=-1)


def test_csv_round_trip_header_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    found = Detections(np.array([0.9, 0.1234567]), np.array([10, 20]), np.array([30, 40]))
    write_detections(path, found)
    assert path.read_text().splitlines()[0] == "0.9,10,30"
    back = read_detections(path)
    assert as_list(back) == as_list(found)
    (tmp_path / "h.csv").write_text("confidence,x,y\n0.5,1.7,2\n")
    assert as_list(read_detections(tmp_path / "h.csv")) == [(0.5, 1, 2)]
    (tmp_path / "bad.csv").write_text("0.5,1,2\n0.4,abc,2\n")
    with pytest.raises(HelpkitError, match="line 2"):
        read_detections(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("0.5,1\n")
    with pytest.raises(HelpkitError, match="line 1: expected confidence,x,y"):
        read_detections(tmp_path / "short.csv")


def test_cli_writes_a_csv_per_slide_and_a_summary(tmp_path: Path) -> None:
    prob = grid()
    prob[5, 5] = 0.95
    write_heatmap(heatmap_path(tmp_path / "hm", "m", "s1"), make_heatmap(prob, "s1"))
    write_heatmap(heatmap_path(tmp_path / "hm", "m", "s2"), make_heatmap(grid(), "s2", mpp=None))
    write_heatmap(heatmap_path(tmp_path / "hm", "m", "t1"), make_heatmap(prob, "t1", split="train"))
    result = CliRunner().invoke(app, ["lesions", str(tmp_path / "hm"), "--out", str(tmp_path / "les"),
                                      "--sigma", "0", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "1 detections on 2 slides" in result.output and "1 slides without mpp" in result.output
    assert "1 slides of another split left out" in result.output and not (tmp_path / "les" / "t1.csv").exists()
    assert read_detections(tmp_path / "les" / "s1.csv").x.tolist() == [centre(5, 5)[0]]
    assert (tmp_path / "les" / "s2.csv").read_text() == ""
    summary = json.loads((tmp_path / "les" / "lesions.json").read_text())
    assert summary["slides"]["s1"]["mpp"] == [0.25, 0.25] and summary["slides"]["s2"]["mpp_source"] == "fallback"


def test_cli_defaults_are_the_module_defaults() -> None:
    from helpkit.cli.lesions import lesions

    import inspect

    params = inspect.signature(lesions).parameters
    assert params["floor"].default == FLOOR and params["radius"].default == RADIUS_UM
