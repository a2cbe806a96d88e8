"""Lesion-level FROC by the CAMELYON16 rules, against cases computed by hand.

The masks are built here at level 5 (downsample 32). At mpp 0.5 a level-5 pixel is 16 um,
so the reference rim (distance < 75 / (2 * 0.5 * 32) = 2.34375 pixels) takes pixels at
distance 1, sqrt 2, 2 and sqrt 5 from the tumour, not 2 sqrt 2 or 3, and the ITC cut is a
major axis below 275 / 16 = 17.1875 pixels.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpkit.errors import HelpkitError
from helpkit.heatmap.lesions import Detections
from helpkit.scoring.froc import evaluation_mask, froc, match

MPP = 0.5
DS = 32


def centre(row: int, col: int) -> tuple[int, int]:
    """Level-0 (x, y) of the centre of level-5 pixel (row, col)."""
    return col * DS + DS // 2, row * DS + DS // 2


def dets(*points: tuple[float, tuple[int, int]]) -> Detections:
    conf = np.array([c for c, _ in points], dtype=float)
    xs = np.array([xy[0] for _, xy in points], dtype=np.int64)
    ys = np.array([xy[1] for _, xy in points], dtype=np.int64)
    return Detections(conf, xs, ys)


def tumour_slide() -> np.ndarray:
    """Three 20x20-pixel lesions (L1, L2, L3) and one single-pixel ITC region, level 5."""
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:30, 10:30] = True  # L1
    mask[10:30, 60:80] = True  # L2
    mask[60:80, 10:30] = True  # L3
    mask[70, 70] = True  # ITC: a 21-pixel disc once dilated
    return mask


def test_reference_regions_rim_and_itc() -> None:
    ref = evaluation_mask(tumour_slide(), MPP)
    assert ref.n_regions == 4 and len(ref.itc) == 1 and len(ref.lesions) == 3
    l2 = ref.region_at(*map(np.array, zip(centre(20, 70))))[0]
    # Rim of L2 (rows 10..29, cols 60..79): distance 2 and sqrt 5 are in; 2 sqrt 2 and 3 are out.
    for rc, inside in (((20, 81), True), ((30, 81), True), ((31, 80), True), ((20, 82), False),
                       ((31, 81), False), ((32, 70), False), ((20, 58), True), ((20, 57), False)):
        x, y = centre(*rc)
        got = ref.region_at(np.array([x]), np.array([y]))[0]
        assert (got == l2) == inside, rc
    itc = ref.region_at(*map(np.array, zip(centre(70, 70))))[0]
    assert itc in ref.itc
    # The ITC disc: the pixels at squared distance < 2.34375^2 = 5.49: 21 of them.
    assert (ref.labels == itc).sum() == 21


def test_itc_cut_is_the_major_axis_against_275_um() -> None:
    # mpp 1.5: no dilation (threshold 0.78 pixel) and an ITC cut of 275 / 48 = 5.729 pixels.
    # A 5-pixel bar has major axis 4 sqrt((25 - 1) / 12) = 5.657 (ITC); 6 pixels, 6.831 (lesion).
    mask = np.zeros((20, 30), dtype=bool)
    mask[2, 2:7] = True
    mask[10, 2:8] = True
    ref = evaluation_mask(mask, 1.5)
    assert ref.labels.astype(bool).sum() == 11  # not dilated
    five, six = ref.labels[2, 2], ref.labels[10, 2]
    assert five in ref.itc and six not in ref.itc


def hand_case():
    ref = evaluation_mask(tumour_slide(), MPP)
    a = match("A", dets(
        (0.9, centre(20, 20)),  # hit on L1
        (0.6, centre(15, 15)),  # second detection on L1: ignored, not an FP
        (0.8, centre(70, 70)),  # inside the ITC region: ignored
        (0.7, centre(20, 81)),  # in the rim of L2: a hit
        (0.5, centre(50, 50)),  # nowhere: FP
    ), ref)  # L3 is missed
    b = match("B", dets((0.85, (100, 100)), (0.3, (200, 200))), None)  # normal slide: FPs only
    return a, b


def test_hand_computed_froc() -> None:
    a, b = hand_case()
    assert sorted(a.tp) == [0.7, 0.9] and sorted(a.fp) == [0.5]
    assert a.ignored_itc == 1 and a.ignored_repeat == 1 and a.n_lesions == 3 and a.n_itc == 1
    assert sorted(b.fp) == [0.3, 0.85] and b.n_lesions == 0
    result = froc([a, b])
    # Thresholds 0.3, 0.5, 0.7, 0.85, 0.9: FPs >= t of {0.5, 0.85, 0.3} over 2 slides and
    # hits >= t of {0.9, 0.7} over 3 lesions, then (0, 0):
    #   FP/slide 1.5 1 .5 .5 0 0; sensitivity 2/3 2/3 2/3 1/3 1/3 0.
    np.testing.assert_allclose(result.curve_fp, [1.5, 1.0, 0.5, 0.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(result.curve_sensitivity, [2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0], atol=1e-12)
    # Interpolated in increasing-FP order (np.interp; at a repeated FP rate the last, highest
    # point): 1/4 -> between (0, 1/3) and (0.5, 1/3) = 1/3; 1/2 -> 2/3; 1 -> 2/3; 2, 4, 8 ->
    # beyond the last point (1.5, 2/3) = 2/3.
    expected = [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    assert result.sensitivities == pytest.approx(expected, abs=1e-9)
    assert result.score == pytest.approx(11 / 18, abs=1e-9)
    assert (result.n_slides, result.n_lesions, result.n_fp, result.n_hit, result.n_detections) == (2, 3, 3, 2, 7)


def test_perfect_detections_score_one() -> None:
    ref = evaluation_mask(tumour_slide(), MPP)
    perfect = match("A", dets((1.0, centre(20, 20)), (1.0, centre(20, 70)), (1.0, centre(70, 20))), ref)
    result = froc([perfect, match("B", Detections.empty(), None)])
    assert result.score == pytest.approx(1.0, abs=1e-9)
    assert result.sensitivities == pytest.approx([1.0] * 6, abs=1e-9)


def test_detections_100_um_outside_every_lesion_score_zero() -> None:
    ref = evaluation_mask(tumour_slide(), MPP)
    off = 100 / MPP  # level-0 pixels
    # 100 um right of each lesion's right edge (cols 30, 80) and below the ITC's.
    points = [(0.9, (int(30 * DS + off), centre(20, 0)[1])), (0.8, (int(80 * DS + off), centre(20, 0)[1])),
              (0.7, (int(30 * DS + off), centre(70, 0)[1]))]
    result = froc([match("A", dets(*points), ref)])
    assert result.score == 0.0 and result.n_fp == 3 and result.n_hit == 0


def test_detections_outside_the_mask_are_false_positives() -> None:
    ref = evaluation_mask(tumour_slide(), MPP)
    outcome = match("A", dets((0.9, (-5, 10)), (0.8, (10**6, 10)), (0.7, centre(20, 20))), ref)
    assert sorted(outcome.fp) == [0.8, 0.9] and list(outcome.tp) == [0.7]


def test_zero_confidence_never_counts_and_no_lesions_is_an_error() -> None:
    ref = evaluation_mask(tumour_slide(), MPP)
    result = froc([match("A", dets((0.0, centre(20, 20)), (0.0, centre(50, 50))), ref)])
    assert result.score == 0.0 and math.isclose(result.curve_fp[-1], 0.0)
    with pytest.raises(HelpkitError, match="no lesions"):
        froc([match("B", dets((0.5, (1, 1))), None)])


# --- Files: a lesions folder against PNG masks and ASAP XML, through the CLI ---------------

HAND_DETECTIONS = {
    "A": [(0.9, centre(20, 20)), (0.6, centre(15, 15)), (0.8, centre(70, 70)), (0.7, centre(20, 81)),
          (0.5, centre(50, 50))],
    "B": [(0.85, (100, 100)), (0.3, (200, 200))],
}


def write_lesions_dir(folder, detections=HAND_DETECTIONS) -> None:
    from helpkit.heatmap.lesions import write_detections

    for slide, points in detections.items():
        write_detections(folder / f"{slide}.csv", dets(*points) if points else Detections.empty())


def rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def asap_xml(polygons: list[tuple[str, list[tuple[float, float]]]]) -> str:
    parts = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "<Annotations>"]
    for k, (group, points) in enumerate(polygons):
        parts.append(f'<Annotation Name="Annotation {k}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">')
        parts.append("<Coordinates>")
        parts += [f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(points)]
        parts.append("</Coordinates></Annotation>")
    parts += ["</Annotations>", "<AnnotationGroups />", "</ASAP_Annotations>"]
    return "\n".join(parts)


@pytest.mark.parametrize("kind", ["png", "xml"])
def test_cli_froc_matches_the_hand_case(tmp_path, kind: str) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from helpkit.cli import app

    lesions, notes = tmp_path / "lesions", tmp_path / "annotations"
    write_lesions_dir(lesions)
    notes.mkdir()
    if kind == "png":  # the level-5 mask stored at downsample 16
        mask = np.kron(tumour_slide(), np.ones((2, 2), dtype=bool))
        Image.fromarray(mask.astype(np.uint8) * 255).save(notes / "A.png")
    else:  # the same regions as level-0 polygons, with an Exclusion hole in L3 (filled back)
        s = DS
        (notes / "A.xml").write_text(asap_xml([
            ("Tumor", rect(10 * s, 10 * s, 30 * s, 30 * s)), ("_0", rect(60 * s, 10 * s, 80 * s, 30 * s)),
            ("_1", rect(10 * s, 60 * s, 30 * s, 80 * s)), ("Exclusion", rect(15 * s, 65 * s, 20 * s, 70 * s)),
            ("Tumor", rect(70 * s, 70 * s, 71 * s, 71 * s)),
        ]))
    result = CliRunner().invoke(app, ["score", "--froc", str(lesions), "--annotations", str(notes),
                                      "--mpp", str(MPP), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["froc"] == pytest.approx(11 / 18, abs=1e-9)
    assert list(out["sensitivity"].values()) == pytest.approx([1 / 3] + [2 / 3] * 5, abs=1e-9)
    assert (out["n_lesions"], out["n_itc_regions"], out["n_false_positives"]) == (3, 1, 3)
    assert out["slide_auc"]["auc"] == 1.0  # A's top detection 0.9 > B's 0.85
    text = CliRunner().invoke(app, ["score", "--froc", str(lesions), "--annotations", str(notes), "--mpp", "0.5"])
    assert "FROC 0.6111" in text.output and "sensitivity at 0.25 FP/slide: 0.3333" in text.output


def test_froc_mpp_comes_from_lesions_json(tmp_path) -> None:
    from PIL import Image

    from helpkit.scoring.froc import score_lesions

    lesions, notes = tmp_path / "lesions", tmp_path / "annotations"
    write_lesions_dir(lesions)
    notes.mkdir()
    Image.fromarray(np.kron(tumour_slide(), np.ones((2, 2), np.uint8)) * 255).save(notes / "A.png")
    (lesions / "lesions.json").write_text(json.dumps({"slides": {"A": {"mpp": [0.5, 0.5]}, "B": {"mpp": [0.5, 0.5]}}}))
    result = score_lesions(lesions, notes)
    assert result["froc"] == pytest.approx(11 / 18, abs=1e-9) and result["mpp_sources"] == {"lesions.json": 2}
    # Without it, CAMELYON16's 0.243 um/px: a level-5 pixel is 7.776 um, so the 20-pixel squares
    # (156 um, about 190 um across once dilated) are all under 275 / 7.776 = 35.4 pixels: ITC.
    (lesions / "lesions.json").unlink()
    with pytest.raises(HelpkitError, match="no lesions"):
        score_lesions(lesions, notes)
    assert score_lesions(lesions, notes, mpp=0.5)["mpp_sources"] == {"option": 2}


def test_froc_bad_inputs_name_the_file(tmp_path) -> None:
    from helpkit.scoring.froc import score_lesions

    (tmp_path / "lesions").mkdir()
    (tmp_path / "notes").mkdir()
    with pytest.raises(HelpkitError, match="no detection files"):
        score_lesions(tmp_path / "lesions", tmp_path / "notes")
    write_lesions_dir(tmp_path / "lesions")
    with pytest.raises(HelpkitError, match="no annotation file for any of the 2 slides"):
        score_lesions(tmp_path / "lesions", tmp_path / "notes")
    (tmp_path / "notes" / "A.xml").write_text("<Annotations/>")
    with pytest.raises(HelpkitError, match="not an ASAP annotation file") as err:
        score_lesions(tmp_path / "lesions", tmp_path / "notes")
    assert err.value.path == tmp_path / "notes" / "A.xml"


@pytest.mark.slow
def test_camelyon16_layout_end_to_end(tmp_path) -> None:
    """synth --layout camelyon16, index, train, heatmap, lesions, score --froc: FROC and slide AUC."""
    from typer.testing import CliRunner

    from helpkit.cli import app

    runner = CliRunner()

    def helpkit(*args) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, f"helpkit {' '.join(map(str, args))}:\n{result.output}"
        return result.output

    data, index, run, hm, les = (tmp_path / n for n in ("D", "index.parquet", "run", "hm", "les"))
    helpkit("synth", data, "--layout", "camelyon16", "--train", 6, "--test", 4, "--size", 4096, "--seed", 1)
    helpkit("index", data, "--out", index)
    helpkit("train", "--model", "simple", "--index", index, "--out", run, "--folds", 2, "--time-budget", 1.5)
    helpkit("heatmap", "--model", run, "--data", data, "--out", hm)
    assert "on 4 slides" in helpkit("lesions", hm, "--out", les, "--split", "test")
    text = helpkit("score", "--froc", les, "--annotations", data)
    assert "FROC " in text and "sensitivity at    8 FP/slide" in text and "slide AUC" in text
    result = json.loads(helpkit("score", "--froc", les, "--annotations", data, "--json"))
    # Seed 1: test_001 and test_002 are tumour slides (reference.csv), test_003/004 normal.
    assert (result["n_slides"], result["n_tumour_slides"]) == (4, 2) and result["n_lesions"] >= 1
    assert 0.0 <= result["froc"] <= 1.0 and result["slide_auc"] is not None
    assert result["mpp_sources"] == {"lesions.json": 4}


def original_rules(cases, mpp: float) -> list[float]:
    """The challenge script's loop, restated: every lesion slot (ITC ones too) starts at 0 and
    keeps a strictly greater confidence; thresholds are the sorted distinct values of all FPs
    and all slots, less the lowest; then (0, 0); np.interp at the six rates."""
    fps, slots, n_lesions = [], [], 0
    for tumour, points in cases:
        if tumour is None:
            fps += [c for c, _ in points]
            continue
        ref = evaluation_mask(tumour, mpp)
        best = np.zeros(ref.n_regions)
        for c, (x, y) in points:
            label = ref.labels[int(y / DS), int(x / DS)]
            if label == 0:
                fps.append(c)
            elif label not in ref.itc and c > best[label - 1]:
                best[label - 1] = c
        slots += list(best)
        n_lesions += ref.n_regions - len(ref.itc)
    fp_curve, tp_curve = [], []
    for t in sorted(set(fps + slots))[1:]:
        fp_curve.append(sum(f >= t for f in fps))
        tp_curve.append(sum(s >= t for s in slots))
    fp_curve = np.asarray(fp_curve + [0]) / len(cases)
    tp_curve = np.asarray(tp_curve + [0]) / n_lesions
    return list(np.interp([0.25, 0.5, 1, 2, 4, 8], fp_curve[::-1], tp_curve[::-1]))


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_agree_with_the_original_rules(seed: int) -> None:
    """Whenever a lesion is missed or an ITC region exists (so the original's dropped lowest
    threshold is 0), the two agree exactly."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(int(rng.integers(2, 6))):
        if rng.random() < 0.3:
            xy = rng.integers(0, 3000, size=(int(rng.integers(0, 6)), 2))
            cases.append((None, [(float(rng.choice([0.2, 0.4, 0.6, 0.8, 0.9])), (int(x), int(y))) for x, y in xy]))
            continue
        mask = np.zeros((80, 80), dtype=bool)
        for _ in range(int(rng.integers(1, 5))):
            r, c = rng.integers(0, 70, size=2)
            h, w = rng.integers(1, 25, size=2)
            mask[r:r + h, c:c + w] = True
        mask[75, 75] = True  # an ITC region in every tumour slide
        xy = rng.integers(0, 80 * DS, size=(int(rng.integers(1, 12)), 2))
        rows, cols = np.nonzero(mask)
        on = rng.integers(0, len(rows), size=len(xy))
        near = rng.random(len(xy)) < 0.6  # most on tumour (hits, repeats, ITC), the rest anywhere
        xy[near] = np.column_stack([cols[on] * DS + 5, rows[on] * DS + 27])[near]
        points = [(float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.95])), (int(x), int(y))) for x, y in xy]
        cases.append((mask, points))
    if all(t is None for t, _ in cases):
        cases.append((tumour_slide(), [(0.9, centre(20, 20))]))
    if sum(evaluation_mask(t, MPP).lesions != [] for t, _ in cases if t is not None) == 0:
        pytest.skip("no lesion drawn")
    ours = froc([match(str(k), dets(*points) if points else Detections.empty(),
                       None if t is None else evaluation_mask(t, MPP)) for k, (t, points) in enumerate(cases)])
    assert list(ours.sensitivities) == pytest.approx(original_rules(cases, MPP), abs=1e-12)
