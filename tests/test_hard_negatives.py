"""Hard-negative mining: which normal cells are chosen, and the second training round around it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit.errors import HelpkitError
from helpkit.heatmap.store import Heatmap, write_heatmap
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.index import INDEX_COLUMNS
from helpkit.train.hard_negatives import (
    MAX_SLIDE_SHARE,
    TUMOUR_MARGIN,
    hard_index_path,
    hard_negative_rows,
    mining_summary,
    round_one_dir,
    second_round,
    with_hard_negatives,
)

GEOMETRY = PatchGeometry()
STEP = 128  # level-0 stride of the hand-made grids
SIDE = 8
TUMOUR = [(0, 0), (0, 1), (1, 0), (1, 1)]  # tumour cells of the positive slides
PARTIAL = (2, 2)  # partly tumour: ambiguous, and a tumour neighbour too
SLIDES = {"n1": 0, "n2": 0, "n3": 0, "p1": 1, "p2": 1}


def grid_cells(positive: bool) -> pd.DataFrame:
    """Every cell of an 8 x 8 grid, all tissue; a positive slide's tumour in its top-left corner."""
    rows, cols = np.divmod(np.arange(SIDE * SIDE), SIDE)
    tumour = np.zeros(SIDE * SIDE, np.float32)
    if positive:
        for r, c in TUMOUR:
            tumour[r * SIDE + c] = 1.0
        tumour[PARTIAL[0] * SIDE + PARTIAL[1]] = 0.3
    return pd.DataFrame({"row": rows.astype(np.int32), "col": cols.astype(np.int32), "x": cols * STEP,
                         "y": rows * STEP, "tissue_frac": np.float32(1.0), "tumour_frac": tumour})


def hand_index(cells: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Four sampled normal cells per slide (the last row), and the tumour cells of positive slides."""
    parts = []
    for slide_id, label in SLIDES.items():
        table = cells[slide_id]
        chosen = table[(table["row"] == SIDE - 1) & (table["col"] < 4)]
        if label:
            chosen = pd.concat([chosen, table[table["tumour_frac"] == 1.0]])
        parts.append(chosen.assign(slide_id=slide_id, path=f"/slides/{slide_id}.tiff", slide_label=np.int8(label),
                                   label=np.where(chosen["tumour_frac"] == 1.0, 1, 0).astype(np.int8),
                                   **GEOMETRY.to_dict()))
    return pd.concat(parts, ignore_index=True)[INDEX_COLUMNS]


def hand_heatmap(slide_id: str, seed: int) -> Heatmap:
    """Random probabilities, except that a positive slide's tumour and its surroundings score highest."""
    prob = np.random.default_rng(seed).uniform(0, 0.9, (SIDE, SIDE)).astype(np.float32)
    if SLIDES[slide_id]:
        prob[:4, :4] = 0.99
    return Heatmap(prob=prob, tissue=np.ones_like(prob, bool), missing=np.zeros_like(prob, bool), origin=(0, 0),
                   stride0=STEP, patch_size0=STEP, geometry=GEOMETRY, slide_id=slide_id, model="m", split="train",
                   label=float(SLIDES[slide_id]), folds=[seed % 2])


@pytest.fixture
def hand() -> tuple[pd.DataFrame, dict[str, Heatmap], dict[str, pd.DataFrame]]:
    cells = {s: grid_cells(bool(label)) for s, label in SLIDES.items()}
    heatmaps = {s: hand_heatmap(s, k) for k, s in enumerate(SLIDES)}
    return hand_index(cells), heatmaps, cells


def near_tumour(row: int, col: int) -> bool:
    """Within TUMOUR_MARGIN cells of a tumour or partly-tumour cell of a positive slide."""
    return any(abs(row - r) <= TUMOUR_MARGIN and abs(col - c) <= TUMOUR_MARGIN for r, c in [*TUMOUR, PARTIAL])


def candidates(index: pd.DataFrame, heatmaps: dict[str, Heatmap]) -> pd.DataFrame:
    """Every cell that may be a hard negative, scored, found the slow way."""
    taken = set(zip(index["slide_id"], index["row"], index["col"]))
    rows = [(s, r, c, float(heatmaps[s].prob[r, c])) for s in SLIDES for r in range(SIDE) for c in range(SIDE)
            if (s, r, c) not in taken and not (SLIDES[s] and near_tumour(r, c))]
    return pd.DataFrame(rows, columns=["slide_id", "row", "col", "score"])


def test_chosen_rows_are_the_top_scoring_normal_cells(hand) -> None:
    index, heatmaps, cells = hand
    rows = hard_negative_rows(index, heatmaps, 0.5, cells, max_slide_share=1.0)
    normals = int((index["label"] == 0).sum())
    assert len(rows) == round(0.5 * normals) == 10
    expected = candidates(index, heatmaps).sort_values("score", ascending=False).head(len(rows))
    assert set(zip(rows["slide_id"], rows["row"], rows["col"])) == set(
        zip(expected["slide_id"], expected["row"], expected["col"]))
    assert rows["hard_score"].is_monotonic_decreasing
    scores = [heatmaps[s].prob[r, c] for s, r, c in zip(rows["slide_id"], rows["row"], rows["col"])]
    assert np.allclose(rows["hard_score"], scores)
    assert list(rows.columns) == [*INDEX_COLUMNS, "hard_negative", "hard_score"]
    assert rows["hard_negative"].all() and (rows["label"] == 0).all()
    assert (rows[["x", "y"]].to_numpy() == rows[["col", "row"]].to_numpy() * STEP).all()
    assert (rows.dtypes[INDEX_COLUMNS] == index.dtypes[INDEX_COLUMNS]).all()
    assert (rows["path"] == "/slides/" + rows["slide_id"] + ".tiff").all()


def test_never_tumour_or_near_tumour_cells_of_positive_slides(hand) -> None:
    index, heatmaps, cells = hand
    # The tumour corner scores 0.99: without the labelling every pick would come from there.
    rows = hard_negative_rows(index, heatmaps, 0.5, cells, max_slide_share=1.0)
    positive = rows[rows["slide_id"].map(SLIDES) == 1]
    assert len(positive) and not any(near_tumour(r, c) for r, c in zip(positive["row"], positive["col"]))
    wide = hard_negative_rows(index, heatmaps, 0.5, cells, max_slide_share=1.0, margin=0)
    cells_hit = set(zip(wide["slide_id"], wide["row"], wide["col"]))
    assert not cells_hit & {(s, r, c) for s in ("p1", "p2") for r, c in [*TUMOUR, PARTIAL]}
    assert {("p1", 0, 2), ("p1", 1, 2)} <= cells_hit  # next to tumour: chosen only without a margin


def test_never_duplicates_of_index_rows(hand) -> None:
    index, heatmaps, cells = hand
    for slide_id in SLIDES:  # the sampled cells score highest of all
        heatmaps[slide_id].prob[SIDE - 1, :4] = 1.0
    rows = hard_negative_rows(index, heatmaps, 0.5, cells)
    merged = rows.merge(index, on=["slide_id", "row", "col"])
    assert merged.empty and not rows.duplicated(["slide_id", "row", "col"]).any()


def test_count_is_share_of_normals_and_no_slide_exceeds_its_cap(hand) -> None:
    index, heatmaps, cells = hand
    for slide_id in SLIDES:  # one slide scores far above the others
        heatmaps[slide_id].prob *= 0.1
    heatmaps["n2"].prob[:] = 0.95
    rows = hard_negative_rows(index, heatmaps, 0.5, cells)
    target = round(0.5 * int((index["label"] == 0).sum()))
    cap = math.ceil(MAX_SLIDE_SHARE * target)
    assert len(rows) == target
    assert rows["slide_id"].value_counts().max() <= cap == 3
    assert (rows["slide_id"] == "n2").sum() == cap
    summary = mining_summary(with_hard_negatives(index, rows), 0.5)
    assert summary["added"] == summary["target"] == target and summary["max_per_slide"] == cap
    assert summary["score_max"] == pytest.approx(0.95) and sum(summary["per_slide"].values()) == target


def test_the_same_inputs_give_the_same_rows_from_memory_or_a_folder(hand, tmp_path: Path) -> None:
    index, heatmaps, cells = hand
    for slide_id in SLIDES:  # ties everywhere: the order must not depend on dict or file order
        heatmaps[slide_id].prob[:] = 0.5
        write_heatmap(tmp_path / f"{slide_id}.npz", heatmaps[slide_id])
    first = hard_negative_rows(index, heatmaps, 0.3, cells)
    shuffled = index.sample(frac=1.0, random_state=1)
    again = hard_negative_rows(shuffled, dict(reversed(heatmaps.items())), 0.3, cells)
    from_folder = hard_negative_rows(index, tmp_path, 0.3, cells)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, from_folder)


def test_slides_without_a_usable_heatmap_supply_none(hand) -> None:
    index, heatmaps, cells = hand
    heatmaps["n1"] = Heatmap.failure(error="every fold trained on it", slide_id="n1", model="m", split="train",
                                     label=0.0, geometry=GEOMETRY, folds=[])
    del heatmaps["n2"]
    rows = hard_negative_rows(index, heatmaps, 0.2, cells)
    assert len(rows) and not rows["slide_id"].isin(["n1", "n2"]).any()


def test_bad_input_is_one_helpkit_error(hand) -> None:
    index, heatmaps, cells = hand
    with pytest.raises(HelpkitError, match="share must be in"):
        hard_negative_rows(index, heatmaps, 0.0, cells)
    rows = hard_negative_rows(index, heatmaps, 0.2, cells)
    with pytest.raises(HelpkitError, match="already holds hard negatives"):
        hard_negative_rows(with_hard_negatives(index, rows), heatmaps, 0.2, cells)
    heatmaps["p1"].origin = (64, 0)
    with pytest.raises(HelpkitError, match="heatmap grid of slide p1"):
        hard_negative_rows(index, heatmaps, 0.2, cells)
    heatmaps["p1"].geometry = PatchGeometry(mpp=1.0)
    with pytest.raises(HelpkitError, match="heatmap of slide p1 is at"):
        hard_negative_rows(index, heatmaps, 0.2, cells)


def test_hard_negatives_train_exactly_the_folds_that_train_their_slide(hand) -> None:
    """Folds are by slide and the mined rows add no slide: round 2 has round 1's folds, and a
    slide's hard negatives sit in the training rows of the folds that train on it, in the
    validation rows of the fold that held it out (the fold whose model scored them)."""
    from helpkit.train.fit import fold_data
    from helpkit.train.folds import slide_folds

    index, heatmaps, cells = hand
    round2 = with_hard_negatives(index, hard_negative_rows(index, heatmaps, 0.5, cells))
    labels = [table.groupby("slide_id")["slide_label"].first() for table in (index, round2)]
    folds = slide_folds(labels[0], 2, seed=0)
    assert folds == slide_folds(labels[1], 2, seed=0)
    hard = round2["hard_negative"].to_numpy()
    for train_slides, val_slides in folds:
        data = fold_data(round2, None, train_slides, val_slides)
        in_train = set(np.flatnonzero(hard)) & set(data.train_rows)
        assert in_train == set(np.flatnonzero(hard & round2["slide_id"].isin(train_slides).to_numpy()))
        assert not set(round2.loc[sorted(in_train), "slide_id"]) & set(val_slides)


# --- The second round: orchestration with a fake trainer, then the real train stage ---


@pytest.fixture(scope="module")
def tiny_index(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    from helpkit.data import discover
    from helpkit.slide.index import IndexConfig, index_dataset

    slides = discover(tiny_competition, "train")
    return index_dataset(slides, IndexConfig(max_per_class=20), progress=False).patches, slides


def fake_heatmaps(index: pd.DataFrame) -> dict[str, Heatmap]:
    """What round 1 would score: the grid of each slide, probabilities rising to the right."""
    from helpkit.slide import SlideReader, grid_for

    out = {}
    for slide_id, path in index[["slide_id", "path"]].drop_duplicates("slide_id").itertuples(index=False):
        with SlideReader(path) as reader:
            grid = grid_for(reader, GEOMETRY)
        prob = np.broadcast_to(np.linspace(0, 1, grid.shape[1], dtype=np.float32), grid.shape).copy()
        out[slide_id] = Heatmap(prob=prob, tissue=np.ones(grid.shape, bool), missing=np.zeros(grid.shape, bool),
                                origin=grid.origin, stride0=grid.stride0, patch_size0=grid.patch_size0,
                                geometry=GEOMETRY, slide_id=slide_id, model="m", split="train", label=0.0, folds=[0])
    return out


def test_second_round_orchestration_with_a_fake_trainer(tiny_index, tmp_path: Path) -> None:
    index, slides = tiny_index
    run_dir, index_path = tmp_path / "runs" / "m", tmp_path / "index_X.parquet"
    fitted: list[tuple[int, str]] = []
    scored: list[str] = []

    def fit(patches: pd.DataFrame, out: Path) -> None:
        fitted.append((len(patches), out.name))
        out.mkdir(parents=True, exist_ok=True)

    def score(run: Path) -> dict[str, Heatmap]:
        scored.append(run.name)
        return fake_heatmaps(index)

    run_dir.mkdir(parents=True)  # a round 1 left by an earlier train stage without hard negatives
    (run_dir / "marker").write_text("round 1")
    done = second_round(index, index_path, slides, run_dir, 0.3, fit=fit, score=score)
    path = hard_index_path(index_path, "m")
    round2 = pd.read_parquet(path)
    hard = round2[round2["hard_negative"]]
    assert (round_one_dir(run_dir) / "marker").read_text() == "round 1"  # moved, not lost
    assert scored == ["m.round1"] and fitted == [(len(index), "m.round1"), (len(round2), "m")]
    assert done["added"] == len(hard) == done["target"] == round(0.3 * int((index["label"] == 0).sum())) > 0
    assert done["index"] == path.name == "index_X_hard_m.parquet" and not done["reused"]
    assert (hard["label"] == 0).all() and hard["hard_score"].notna().all()
    assert round2.loc[~round2["hard_negative"], INDEX_COLUMNS].reset_index(drop=True).equals(index)
    mtime = path.stat().st_mtime_ns
    again = second_round(index, index_path, slides, run_dir, 0.3, fit=fit, score=score)
    assert scored == ["m.round1"] and fitted[-1] == (len(round2), "m")  # no mining, no round 1
    assert path.stat().st_mtime_ns == mtime and again == {**done, "reused": True}
    path.unlink()
    with pytest.raises(HelpkitError, match="stale round 2"):
        second_round(index, index_path, slides, run_dir, 0.3, fit=fit, score=score)


@pytest.mark.slow
def test_train_stage_with_hard_negatives(tiny_competition: Path, tmp_path: Path) -> None:
    from helpkit import pipeline
    from helpkit.config import SubmissionConfig
    from helpkit.heatmap.store import read_heatmap
    from helpkit.train import load_run

    config = SubmissionConfig.model_validate({
        "name": "tiny", "seed": 0,
        "models": [{"architecture": "simple", "name": "s", "width": 0.25, "folds": 2, "epochs": 1, "batch": 32,
                    "max_patches_per_slide": 60, "hard_negatives": 0.5}],
        "ensemble": {"method": "single"},
    })
    model_dir = tmp_path / "model"
    summary = pipeline.train(tiny_competition / "train", model_dir, config)
    recorded = json.loads((model_dir / pipeline.PIPELINE_FILE).read_text())["hard_negatives"]["s"]
    assert recorded == summary["hard_negatives"]["s"] and 0 < recorded["added"] <= recorded["target"]
    assert max(recorded["per_slide"].values()) <= recorded["max_per_slide"]  # tiny slides run out of candidates
    round1, round2 = load_run(model_dir / "runs" / "s.round1"), load_run(model_dir / "runs" / "s")
    assert [(f.train_slides, f.val_slides) for f in round1.folds] == [(f.train_slides, f.val_slides)
                                                                      for f in round2.folds]
    index = pd.read_parquet(next(model_dir.glob("index_*_hard_s.parquet")))
    hard = index[index["hard_negative"]]
    assert len(hard) == recorded["added"] and hard["hard_score"].between(0, 1).all()
    for slide_id, _ in hard.groupby("slide_id"):  # scored by the round-1 fold that held the slide out
        fold = read_heatmap(model_dir / "heatmaps.round1" / "s" / f"{slide_id}.npz").folds
        assert fold == [k for k, f in enumerate(round1.folds) if slide_id in f.val_slides]
    assert json.loads((model_dir / "runs" / "s" / "fold_0" / "model.json").read_text())["train_patches"] > \
        json.loads((model_dir / "runs" / "s.round1" / "fold_0" / "model.json").read_text())["train_patches"]
    models = sorted(model_dir.glob("runs/*/fold_*/model.keras"))
    before = {p: p.stat().st_mtime_ns for p in models}
    pipeline.train(tiny_competition / "train", model_dir, config)
    assert {p: p.stat().st_mtime_ns for p in models} == before  # nothing retrained, nothing mined again
    assert json.loads((model_dir / pipeline.PIPELINE_FILE).read_text())["hard_negatives"]["s"]["reused"]
