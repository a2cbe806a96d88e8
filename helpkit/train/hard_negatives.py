"""Hard-negative mining: a second training round on the normal patches the first round scored highest.

Round 1 trains on the patch index. Its out-of-fold heatmaps score every tissue cell of each
training slide with the fold model that did not train on that slide. ``hard_negative_rows``
picks the highest-scoring normal cells that are not in the index yet. It labels them the
way the index does (``helpkit.slide.index.slide_cells`` and ``label_patches``), keeps
``TUMOUR_MARGIN`` cells away from tumour, and takes at most ``MAX_SLIDE_SHARE`` of them from
any one slide. ``second_round`` runs round 1 in ``<run>.round1``, then the mining, then
round 2 in ``<run>``, and a rerun picks up where it stopped. Folds are made by slide from
the index's slides and labels, which the mined rows leave unchanged. So round 2 has round
1's folds, and a slide's hard negatives train exactly the folds that train on that slide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.heatmap.store import Heatmap, read_heatmap
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.index import GEOMETRY_COLUMNS, INDEX_COLUMNS, IndexConfig, index_geometry, slide_cells, write_index
from helpkit.slide.sampling import label_patches
from helpkit.slidemap import Executor, map_slides

MAX_SLIDE_SHARE = 0.25
"""One slide supplies at most this share of the hard negatives (rounded up). A single slide
with an artefact or stain that the model mistakes for tumour then cannot fill the sample."""

TUMOUR_MARGIN = 1
"""On an annotated slide, a normal cell within this many grid cells (rows or columns) of a
cell that touches tumour or an exclusion region is never a hard negative. Annotation borders
are approximate, and a high score next to them is more likely missed tumour than a mimic."""

HARD_COLUMNS = ["hard_negative", "hard_score"]
"""Added to a round-2 index: True and round 1's out-of-fold probability on the mined rows;
False and NaN on the index's own rows."""

ROUND1_SUFFIX = ".round1"

HeatmapSource = Mapping[str, Heatmap] | str | Path


def round_one_dir(run_dir: Path) -> Path:
    """Where round 1 of a model with hard negatives is trained and kept: ``<run_dir>.round1``."""
    return run_dir.with_name(run_dir.name + ROUND1_SUFFIX)


def hard_index_path(index_path: Path, model: str) -> Path:
    """The round-2 index of ``model``, next to its index: ``<index stem>_hard_<model>.parquet``."""
    return index_path.with_name(f"{index_path.stem}_hard_{model}{index_path.suffix}")


def _clear_of_tumour(cells: pd.DataFrame, margin: int) -> np.ndarray:
    """Bool per cell: no cell within ``margin`` rows and columns touches tumour or an exclusion
    region (``tumour_frac`` above 0, or NaN)."""
    from scipy import ndimage

    rows, cols = cells["row"].to_numpy(), cells["col"].to_numpy()
    touched = ~(cells["tumour_frac"].to_numpy() == 0)
    if not touched.any():
        return np.ones(len(cells), bool)
    grid = np.zeros((rows.max() + 1, cols.max() + 1), bool)
    grid[rows[touched], cols[touched]] = True
    near = ndimage.binary_dilation(grid, np.ones((2 * margin + 1, 2 * margin + 1), bool))
    return ~near[rows, cols]


def _heatmap(source: HeatmapSource, slide_id: str) -> Heatmap | None:
    """The slide's heatmap from a mapping or a model's heatmap folder. None if it is absent or
    failed (an error heatmap, e.g. a slide that every fold trained on)."""
    if isinstance(source, Mapping):
        heatmap = source.get(slide_id)
    else:
        path = Path(source) / f"{slide_id}.npz"
        heatmap = read_heatmap(path) if path.is_file() else None
    return None if heatmap is None or heatmap.failed else heatmap


def _scored_normals(slide_id: str, cells: pd.DataFrame, taken: pd.DataFrame, heatmap: Heatmap,
                    geometry: PatchGeometry, config: IndexConfig, margin: int) -> pd.DataFrame:
    """One slide's normal cells that are clear of tumour and not in the index (``taken``),
    scored by the heatmap, highest first (grid order breaks ties)."""
    if heatmap.geometry != geometry:
        raise HelpkitError(f"heatmap of slide {slide_id} is at {heatmap.geometry.key()}, "
                           f"the index at {geometry.key()}")
    cells = cells.assign(clear=_clear_of_tumour(cells, margin))
    labelled = label_patches(cells, config.tumour_threshold, config.min_tissue)
    normal = labelled[(labelled["label"] == 0) & labelled["clear"]]
    in_index = pd.MultiIndex.from_frame(normal[["row", "col"]]).isin(pd.MultiIndex.from_frame(taken[["row", "col"]]))
    normal = normal[~in_index]
    rows, cols = normal["row"].to_numpy(), normal["col"].to_numpy()
    (x0, y0), step = heatmap.origin, heatmap.stride0
    if (len(normal) and (rows.max() >= heatmap.prob.shape[0] or cols.max() >= heatmap.prob.shape[1])) or not (
            np.array_equal(normal["x"].to_numpy(), x0 + cols * step)
            and np.array_equal(normal["y"].to_numpy(), y0 + rows * step)):
        raise HelpkitError(f"heatmap grid of slide {slide_id} (origin {heatmap.origin}, stride {step}) is not "
                           "the index's: made from another slide file or geometry?")
    normal = normal.assign(hard_score=heatmap.prob[rows, cols].astype(np.float32))
    normal = normal[np.isfinite(normal["hard_score"].to_numpy())]
    return normal.sort_values("hard_score", ascending=False, kind="stable")


def hard_negative_rows(
    index: pd.DataFrame,
    heatmaps: HeatmapSource,
    share: float,
    cells: Mapping[str, pd.DataFrame],
    *,
    config: IndexConfig = IndexConfig(),
    max_slide_share: float = MAX_SLIDE_SHARE,
    margin: int = TUMOUR_MARGIN,
) -> pd.DataFrame:
    """New index rows for the highest-scoring normal cells of the index's slides.

    ``heatmaps``: out-of-fold heatmaps by slide id, or one model's heatmap folder (``<slide
    id>.npz``). ``cells``: each slide's grid cells before labelling (``slide_cells``, see
    ``index_cells``). A cell qualifies when the index's labelling (``config``'s thresholds)
    makes it normal. On an annotated slide it must also be more than ``margin`` cells from
    tumour and exclusion regions. It must not be in the index already, and its heatmap value
    must be finite. Count: ``round(share * normal rows of the index)``. Cells are taken highest
    score first, at most ``ceil(max_slide_share * count)`` per slide. Fewer come back when the
    candidates run out. Slides without a heatmap or cells supply none. Columns:
    ``INDEX_COLUMNS`` (the index's geometry, label 0) plus ``HARD_COLUMNS``. Ordered by
    score, then slide, row and column. The same inputs give the same rows.
    """
    if not 0 < share <= 1:
        raise HelpkitError(f"hard-negative share must be in (0, 1], got {share}")
    if not 0 < max_slide_share <= 1:
        raise HelpkitError(f"max_slide_share must be in (0, 1], got {max_slide_share}")
    absent = [c for c in INDEX_COLUMNS if c not in index.columns]
    if absent:
        raise HelpkitError(f"patch index lacks the columns {absent}")
    if "hard_negative" in index.columns and index["hard_negative"].any():
        raise HelpkitError("the patch index already holds hard negatives: mine from the round-1 index")
    geometry = index_geometry(index)
    target = round(share * int((index["label"] == 0).sum()))
    cap = math.ceil(max_slide_share * target)
    picks = []
    for slide_id, taken in index.groupby("slide_id", sort=True):
        heatmap = _heatmap(heatmaps, str(slide_id))
        if heatmap is None or slide_id not in cells or cap == 0:
            continue
        scored = _scored_normals(str(slide_id), cells[slide_id], taken, heatmap, geometry, config, margin)
        picks.append(scored.head(cap).assign(slide_id=slide_id, path=taken["path"].iloc[0],
                                             slide_label=taken["slide_label"].iloc[0]))
    columns = [*INDEX_COLUMNS, *HARD_COLUMNS]
    if not picks:
        return pd.DataFrame({c: pd.Series(dtype=index[c].dtype) for c in INDEX_COLUMNS}
                            | {"hard_negative": pd.Series(dtype=bool), "hard_score": pd.Series(dtype=np.float32)})
    chosen = pd.concat(picks, ignore_index=True).sort_values(
        ["hard_score", "slide_id", "row", "col"], ascending=[False, True, True, True], kind="stable").head(target)
    chosen = chosen.assign(label=0, hard_negative=True, **index[GEOMETRY_COLUMNS].iloc[0].to_dict())
    return chosen[columns].astype(index[INDEX_COLUMNS].dtypes.to_dict()).reset_index(drop=True)


def with_hard_negatives(index: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The round-2 index: ``index`` (not hard negatives) followed by ``rows``."""
    own = index.assign(hard_negative=False, hard_score=np.float32(np.nan))
    return pd.concat([own, rows], ignore_index=True) if len(rows) else own


@dataclass(frozen=True)
class SlideCellsJob:
    """The per-slide job of ``index_cells``: a slide record (path, mask_path, slide_label) in, its
    grid cells before labelling (``slide_cells`` at ``geometry``) out."""

    geometry: PatchGeometry

    def __call__(self, record: dict[str, Any]) -> pd.DataFrame:
        return slide_cells(record["path"], record["mask_path"], int(record["slide_label"]), self.geometry).cells


def index_cells(index: pd.DataFrame, slides: pd.DataFrame, executor: Executor | None = None) -> dict[str, pd.DataFrame]:
    """Each index slide's grid cells before labelling, by slide id (``slide_cells`` at the
    index's geometry), one ``map_slides`` task per slide on ``executor`` (default: in process).
    ``slides`` are the slide records (``helpkit.data.discover``) that give the masks."""
    masks = {str(r["path"]): r["mask_path"] for r in slides.to_dict("records")}
    records, keys = [], []
    for slide_id, path, label in index[["slide_id", "path", "slide_label"]].drop_duplicates("slide_id").itertuples(
            index=False):
        if path not in masks:
            raise HelpkitError(f"slide {slide_id} of the patch index is not among the slide records", path)
        records.append({"path": path, "mask_path": masks[path], "slide_label": int(label)})
        keys.append(str(slide_id))
    return map_slides(SlideCellsJob(index_geometry(index)), records, keys, executor,
                      description="cells for hard negatives", progress=False)


def mining_summary(patches: pd.DataFrame, share: float, max_slide_share: float = MAX_SLIDE_SHARE) -> dict[str, Any]:
    """What a round-2 index holds: hard negatives added against the target, per-slide cap,
    score range and count per slide (for logs and pipeline.json)."""
    hard = patches["hard_negative"].to_numpy(bool)
    rows = patches[hard]
    target = round(share * int(((patches["label"] == 0) & ~hard).sum()))
    scores = rows["hard_score"]
    return {
        "share": share,
        "target": target,
        "added": int(len(rows)),
        "max_per_slide": math.ceil(max_slide_share * target),
        "score_min": round(float(scores.min()), 4) if len(rows) else None,
        "score_max": round(float(scores.max()), 4) if len(rows) else None,
        "per_slide": {str(k): int(v) for k, v in rows["slide_id"].value_counts().sort_index().items()},
    }


def second_round(
    index: pd.DataFrame,
    index_path: Path,
    slides: pd.DataFrame,
    run_dir: Path,
    share: float,
    *,
    fit: Callable[[pd.DataFrame, Path], Any],
    score: Callable[[Path], HeatmapSource],
    config: IndexConfig = IndexConfig(),
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Train a model with hard negatives. Round 1 is trained in ``round_one_dir(run_dir)`` and
    kept there. Its hard negatives are mined and written with the index to
    ``hard_index_path``. Round 2 is then trained in ``run_dir``. Returns
    ``mining_summary`` plus the file names.

    ``fit(index, out)`` trains a run, or resumes it. ``score(run)`` makes that run's
    out-of-fold heatmaps of the training slides and returns them (or their folder).
    Rerunning is safe. Once the round-2 index exists it is reused, so nothing is mined
    twice. Before that, a finished ``run_dir`` is round 1 (trained before hard negatives were
    asked for, or before an interruption) and is moved to ``.round1``, not trained again.
    """
    path, first = hard_index_path(index_path, run_dir.name), round_one_dir(run_dir)
    reused = path.is_file()
    if reused:
        patches = pd.read_parquet(path)
    else:
        if run_dir.exists():
            if first.exists():
                raise HelpkitError(f"{run_dir.name} sits beside {first.name} but the round-2 index {path.name} is "
                                   f"missing: delete {run_dir.name} (a stale round 2) to mine again", run_dir)
            run_dir.rename(first)
        fit(index, first)
        rows = hard_negative_rows(index, score(first), share, index_cells(index, slides, executor),
                                  config=config)
        patches = with_hard_negatives(index, rows)
        write_index(patches, path)
    fit(patches, run_dir)
    return {**mining_summary(patches, share), "index": path.name, "round1": first.name, "reused": reused}
