"""Heatmaps of a dataset by trained runs, out of fold: no slide is scored by a model that saw it.

For each slide and run, the fold models used are those that did not train on the slide: for
a training slide that is the one fold that held it out (``folds=[k]``), for a test slide
every fold, their probabilities averaged cell by cell (``folds=all``). A slide that every
fold trained on gets an error heatmap rather than a leaked one. Each slide is opened once
for all runs; its patches are read once per run and go through every fold model used.

A heatmap on disk is reused only when its ``key`` matches: the slide file's identity (size,
modification time and a hash of its first and last 64 KiB), the fold model files' identity,
the model name, folds and patch geometry, the test-time augmentation and the run's stain
normalisation reference. A test set whose file names repeat an earlier one's, or a retrained
model, is computed afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.heatmap.engine import BATCH_SIZE, PredictFn, run_heatmap
from helpkit.heatmap.overlay import thumbnail, write_overlay
from helpkit.heatmap.store import Heatmap, heatmap_path, read_heatmap, write_heatmap
from helpkit.heatmap.tta import tta_predict, tta_transforms
from helpkit.heatmap.tta_spec import DEFAULT_TTA
from helpkit.io import file_identity, folder_bytes, remove_stale_temps
from helpkit.slidemap import Executor, active_progress, map_slides, process_cached
from helpkit.slide import GridSpec, SlideReader, TissueMask, grid_for, tissue_mask
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.grid import cell_fractions
from helpkit.slide.stain_normalise import StainStats, normalised_predict
from helpkit.train import Run, load_run
from helpkit.train.stain import slide_stains_or_none

MIN_TISSUE_FRACTION = 0.1
"""A grid cell goes through the model when at least this share of it is tissue: lower than
the training index's bar, so tumour at the edge of tissue is still looked at."""

PredictorFactory = Callable[[Run, list[int]], PredictFn]

def heatmap_key(slide: SlideRecord, slide_identity: str, run: Run, model_identities: dict[int, str],
                folds: list[int], geometry: PatchGeometry, compute: dict[str, bool] | None = None,
                tta: str = DEFAULT_TTA) -> str:
    """What a heatmap is made from, as one digest: the slide file (``slide_identity``, its
    ``helpkit.io.file_identity``) and what is recorded of it (id, split, label), the model name,
    its fold model files (``model_identities`` by fold) and the geometry; and ``compute`` (mixed
    precision, XLA) when either is on, so float32 heatmaps keep their keys; likewise ``tta`` when
    not ``none``. The identities come in computed, once per slide and once per run, not once per pair."""
    parts = {
        "slide": slide_identity,
        "record": [slide.slide_id, slide.split, None if math.isnan(slide.label) else slide.label],
        "model": run.name,
        "folds": {str(k): model_identities[k] for k in sorted(folds)},
        "geometry": geometry.to_dict(),
    }
    if compute and any(compute.values()):
        parts["compute"] = compute
    if tta != DEFAULT_TTA:
        parts["tta"] = tta
    if run.stain_reference is not None:  # never reused across stain normalisation references
        parts["stain"] = run.stain_reference.to_dict()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def out_of_fold(run: Run, slide_id: str) -> list[int]:
    """The folds of ``run`` whose models did not train on ``slide_id`` (all of them for a test slide)."""
    return [fold.index for fold in run.folds if slide_id not in fold.train_slides]


def keras_predictor(shared: bool = False, mixed_precision: bool = False, xla: bool = False) -> PredictorFactory:
    """A factory of predict functions from a run's fold models: their mean over the folds asked.

    Each model is loaded once and kept for the factory's lifetime (one per run and fold); with
    ``shared``, for the process's lifetime instead (``helpkit.slidemap.process_cached``, keyed by
    the model file's identity: a Dask worker loads a run's models once for all its slides).
    ``mixed_precision`` / ``xla`` run each model through ``helpkit.models.compute``'s compiled
    forward pass (mixed_float16, XLA); without either, ``predict_on_batch`` as always.
    """
    from helpkit.models.compute import forward, inference_model

    compiled = mixed_precision or xla
    import logging

    # Every fold model traces its own predict function once, by design: TensorFlow's
    # "triggered tf.function retracing" warning would flood the stage log with false alarms.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    models: dict[tuple[Path, int], Any] = {}

    def make(run: Run, k: int) -> Any:
        model = run.load_model(k)
        if not compiled:
            return model.predict_on_batch
        model = inference_model(model, run.architecture, run.geometry.patch_size, run.width, mixed_precision)
        return forward(model, xla=xla)

    def load(run: Run, k: int) -> Any:
        if shared:
            path = run.fold(k).model_path
            key = ("keras-model", str(path), mixed_precision, xla)
            return process_cached(key, file_identity(path), lambda: make(run, k))
        if (run.path, k) not in models:
            models[(run.path, k)] = make(run, k)
        return models[(run.path, k)]

    def factory(run: Run, folds: list[int]) -> PredictFn:
        chosen = [load(run, k) for k in folds]

        def predict(batch: np.ndarray) -> np.ndarray:
            outs = [np.asarray(m(batch), dtype=np.float32).reshape(-1) for m in chosen]
            return np.mean(outs, axis=0)

        predict.batch_key = (str(run.path), tuple(folds), mixed_precision, xla)  # type: ignore[attr-defined]
        return predict

    return factory


def tissue_grid(grid: GridSpec, mask: TissueMask, min_fraction: float = MIN_TISSUE_FRACTION) -> np.ndarray:
    """Bool (rows, cols): cells whose level-0 footprint is at least ``min_fraction`` tissue."""
    return cell_fractions(mask.mask, mask.downsample, grid) >= min_fraction


@dataclass(frozen=True)
class SlideRecord:
    """A slide to make heatmaps of (a row of ``helpkit.data.discover``)."""

    slide_id: str
    path: Path
    split: str
    label: float


def slide_records(data_dir: str | Path, split: str | None = None, layout: str | None = None) -> list[SlideRecord]:
    """Every slide under ``data_dir`` (any layout ``helpkit.data.discover`` reads), or every one of
    ``split``, with its label where known."""
    from helpkit.data import discover

    table = discover(data_dir, split, layout)
    return [
        SlideRecord(
            slide_id=str(r.slide_id),
            path=Path(r.path),
            split=str(r.split),
            label=float(r.label) if r.label in (0, 1) else math.nan,
        )
        for r in table.itertuples()
    ]


@dataclass(frozen=True)
class Options:
    """How heatmaps are made: ``stride`` in pixels at the run's mpp (None: the run's own stride)."""

    stride: int | None = None
    batch_size: int = BATCH_SIZE
    workers: int | None = None
    png: bool = False
    force: bool = False
    mixed_precision: bool = False
    """Run the models in mixed_float16 (``helpkit.models.compute``)."""
    xla: bool = False
    """Run the models' forward pass XLA-compiled."""
    tta: str = DEFAULT_TTA
    """Test-time augmentation (``helpkit.heatmap.tta.TTAS``): each patch scored as the mean over its symmetries."""


def heatmap_geometry(run: Run, options: Options) -> PatchGeometry:
    """The run's patch geometry, with ``options.stride`` when given."""
    return replace(run.geometry, stride=options.stride) if options.stride else run.geometry


def _is_current(path: Path, key: str, options: Options) -> bool:
    """True when ``path`` holds a good heatmap made from the same inputs (``key``).

    Error heatmaps are never current: a slide that failed is tried again.
    """
    if not path.is_file() or (options.png and not path.with_suffix(".png").is_file()):
        return False
    try:
        old = read_heatmap(path)
    except HelpkitError:
        return False
    return not old.error and old.key == key


def make_heatmaps(
    run_dirs: Sequence[str | Path],
    slides: Sequence[SlideRecord],
    out_dir: str | Path,
    options: Options = Options(),
    predictor: PredictorFactory | None = None,
    executor: Executor | None = None,
) -> dict[str, int]:
    """Write ``out_dir/<model>/<slide_id>.npz`` for every run and slide; return counts.

    Heatmaps already current (same slide file, model files, folds and geometry: the same
    ``heatmap_key``) are skipped unless ``options.force``. A slide that cannot be opened, or that every fold
    trained on, gets an error heatmap; the run goes on. Counts: ``written``, ``skipped``,
    ``failed``. ``predictor`` turns (run, folds) into a predict function (default: Keras).
    The slides left to do go through ``helpkit.slidemap.map_slides`` on ``executor`` (default:
    in process), one task per slide; on a cluster each worker keeps the runs' models.
    """
    tta_transforms(options.tta)  # an unknown name fails here, not on every slide
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise HelpkitError(f"two runs share a name ({names}): their heatmaps would overwrite each other")
    executor = executor or Executor()
    for run in runs:  # what a killed run was writing
        remove_stale_temps(Path(out_dir) / run.name)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    items = []
    models = [{fold.index: file_identity(fold.model_path) for fold in run.folds} for run in runs]
    compute = {"mixed_precision": options.mixed_precision, "xla": options.xla}
    for slide in slides:
        todo = []
        identity = file_identity(slide.path)
        for i, run in enumerate(runs):
            folds = out_of_fold(run, slide.slide_id)
            key = heatmap_key(slide, identity, run, models[i], folds, heatmap_geometry(run, options), compute,
                              options.tta)
            if options.force or not _is_current(heatmap_path(out_dir, run.name, slide.slide_id), key, options):
                todo.append((i, folds, key))
            else:
                counts["skipped"] += 1
        if todo:
            items.append((slide, tuple(todo)))
    if predictor is None and executor.in_process:
        predictor = keras_predictor(mixed_precision=options.mixed_precision, xla=options.xla)  # models kept for this call; on a worker, for its lifetime
    job = SlideHeatmapJob(tuple(str(r.path) for r in runs), str(out_dir), options, predictor)
    done = map_slides(job, items, [slide.slide_id for slide, _ in items], executor, description="heatmaps",
                      cost=[_bytes(slide.path) for slide, _ in items])
    for result in done.values():
        for name in ("written", "failed"):
            counts[name] += result[name]
    return counts


def _bytes(path: Path) -> int:
    """A slide's size on disk (a folder's files together): its share of the work, roughly."""
    try:
        return path.stat().st_size if path.is_file() else folder_bytes(path)
    except OSError:
        return 0


@dataclass(frozen=True)
class SlideHeatmapJob:
    """The per-slide job of ``make_heatmaps``: one slide's heatmaps by the runs its plan names.

    Called with ``(slide, ((run index, folds, key), ...))``; returns ``{"written", "failed"}``.
    Picklable, so it runs on a Dask worker as well; with no ``predictor`` it uses the worker's
    shared Keras models (``keras_predictor(shared=True)``). Either way each predict function is
    wrapped by ``options.tta`` (``helpkit.heatmap.tta.tta_predict``).
    """

    run_dirs: tuple[str, ...]
    out_dir: str
    options: Options
    predictor: PredictorFactory | None = None

    def __call__(self, item: tuple[SlideRecord, tuple[tuple[int, list[int], str], ...]]) -> dict[str, int]:
        slide, plan = item
        runs = [load_run(d) for d in self.run_dirs]
        predictor = self.predictor or keras_predictor(
            shared=True, mixed_precision=self.options.mixed_precision, xla=self.options.xla)
        maker = _SlideHeatmaps(Path(self.out_dir), self.options,
                               lambda run, folds: tta_predict(predictor(run, folds), self.options.tta))
        maker.slide(slide, [(runs[i], list(folds), key) for i, folds, key in plan])
        return {"written": maker.counts["written"], "failed": maker.counts["failed"]}


class _SlideHeatmaps:
    """Makes all heatmaps of one slide at a time: open it once, mask it once, one pass per run."""

    def __init__(self, out_dir: Path, options: Options, predictor: PredictorFactory) -> None:
        self.out_dir = out_dir
        self.options = options
        self.predictor = predictor
        self.counts = {"written": 0, "skipped": 0, "failed": 0}
        self.bar = active_progress()  # patch progress in process; none on a cluster worker
        self.patch_task = self.bar.add_task("patches", total=None) if self.bar else None

    def _write(self, heatmap: Heatmap, thumb: tuple[np.ndarray, float] | None = None) -> None:
        out = heatmap_path(self.out_dir, heatmap.model, heatmap.slide_id)
        write_heatmap(out, heatmap)
        self.counts["failed" if heatmap.failed else "written"] += 1
        if thumb is not None:
            write_overlay(out.with_suffix(".png"), heatmap, *thumb)

    def slide(self, slide: SlideRecord, todo: list[tuple[Run, list[int], str]]) -> None:
        def failure(run: Run, folds: list[int], key: str, error: str) -> Heatmap:
            return Heatmap.failure(
                error=error, slide_id=slide.slide_id, model=run.name, split=slide.split,
                label=slide.label, geometry=heatmap_geometry(run, self.options), folds=folds, key=key,
            )

        try:
            reader = SlideReader(slide.path)
        except HelpkitError as err:
            for run, folds, key in todo:
                self._write(failure(run, folds, key, str(err)))
            return
        with reader:
            masks: dict[float, TissueMask] = {}
            thumb = None
            try:
                for tissue_mpp in sorted({run.geometry.tissue_mpp for run, _, _ in todo}):
                    masks[tissue_mpp] = tissue_mask(reader, tissue_mpp)
                thumb = thumbnail(reader) if self.options.png else None
            except HelpkitError as err:
                for run, folds, key in todo:
                    self._write(failure(run, folds, key, str(err)))
                return
            stains: dict[tuple[float, str], StainStats | None] = {}  # once per slide, mask and method
            for run, folds, key in todo:
                if not folds:
                    error = "every fold model trained on this slide: no out-of-fold heatmap"
                    self._write(failure(run, folds, key, error), thumb)
                    continue
                geometry = heatmap_geometry(run, self.options)
                grid = grid_for(reader, geometry)
                mask, stain_key = masks[geometry.tissue_mpp], (geometry.tissue_mpp, run.normalise)
                if run.stain_reference is not None and stain_key not in stains:
                    stains[stain_key] = slide_stains_or_none(reader, mask, run.normalise)
                heatmap = self._heatmap(reader, slide, run, folds, grid, tissue_grid(grid, mask), stains.get(stain_key))
                heatmap.geometry, heatmap.key = geometry, key
                self._write(heatmap, thumb)

    def _heatmap(self, reader: SlideReader, slide: SlideRecord, run: Run, folds: list[int], grid: GridSpec,
                 tissue: np.ndarray, stain: StainStats | None = None) -> Heatmap:
        """One run's heatmap of the slide; with ``stain`` (the slide's statistics) patches are
        normalised to the run's reference before its models."""
        bar, task = self.bar, self.patch_task
        if bar is not None:
            bar.update(task, total=int(tissue.sum()), completed=0,
                       description=f"patches {slide.slide_id} · {run.name}")
        predict = self.predictor(run, folds)
        if stain is not None:
            predict = normalised_predict(predict, stain, run.stain_reference)
        result = run_heatmap(
            reader, predict, grid, tissue,
            batch_size=self.options.batch_size, workers=self.options.workers,
            on_batch=(lambda n: bar.advance(task, n)) if bar is not None else None,
        )
        return Heatmap(
            prob=result.prob, tissue=tissue, missing=result.missing,
            origin=(int(grid.origin[0]), int(grid.origin[1])), stride0=int(grid.stride0),
            patch_size0=int(grid.patch_size0), geometry=run.geometry,
            slide_id=slide.slide_id, model=run.name, split=slide.split, label=slide.label,
            folds=folds, errors=result.errors, mpp=reader.mpp, tta=self.options.tta, stain=stain,
        )
