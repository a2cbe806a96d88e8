"""The whole pipeline as the platform runs it: a train stage, then an inference stage.

Train (``/data/train`` -> ``/data/model``): index patches, train each model of the submission
by slide folds, make out-of-fold heatmaps of the training slides, turn them into slide
features, fit the submission's ensemble on those and write the comparison table of every
candidate ensemble. Inference (``/data/test`` + ``/data/model`` -> ``output.csv``): heatmaps
of the test slides from every fold model (averaged), features, the fitted ensemble, and one
row per test slide, a slide that fails included (``fallback_probability``, logged). The
inference stage never writes under the model dir (a platform may mount it read-only): its
heatmaps and features go to a work dir, by default ``<system temp dir>/helpkit-inference``
(``default_work_dir``), one folder per test set; a heatmap there is reused only when the
slide file, the fold models and the patch geometry are the same (``heatmap_key``).

What ``/data/model`` holds after the train stage::

    pipeline.json               the config, the runs, timings, failures
    index_<geometry key>.parquet   patch index per patch geometry (e.g. index_M0.5_P64_S64_T8; a model
                                with another tumour_threshold adds _tumour<t>)
    runs/<model>/               run folders (helpkit.train)
    heatmaps/<model>/*.npz      out-of-fold heatmaps of the training slides
    (hard_negatives > 0)        runs/<model>.round1/, heatmaps.round1/<model>/, index_<key>_hard_<model>.parquet
    features_oof.parquet        their slide features
    ensemble/                   the fitted ensemble (helpkit.ensemble.fit_ensemble)
    ensemble_report/            every candidate's out-of-fold AUC, CSV and ROC PNG
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from helpkit.config import ModelSpec, SubmissionConfig
from helpkit.errors import HelpkitError
from helpkit.train.augment_spec import augment_config
from helpkit.io import write_json

if TYPE_CHECKING:
    from helpkit.slide.index import IndexConfig

PIPELINE_FILE = "pipeline.json"


def log(message: str) -> None:
    """One progress line on stderr, where the platform's log collects it."""
    print(f"[helpkit] {message}", file=sys.stderr, flush=True)


def _helpkit_kind(config: SubmissionConfig) -> None:
    """A custom submission has no helpkit pipeline to run: say so in one line."""
    if config.kind == "custom":
        raise HelpkitError(f"submission {config.name!r} is kind 'custom': its own train.sh and inference.sh run, "
                           "not helpkit platform train|infer")


def _index_path(model_dir: Path, spec: ModelSpec) -> Path:
    """The patch index of ``spec``'s geometry and labelling, shared by the models that agree on both."""
    from helpkit.slide.slide_defaults import TUMOUR_THRESHOLD

    labelling = "" if spec.tumour_threshold == TUMOUR_THRESHOLD else f"_tumour{spec.tumour_threshold:g}"
    return model_dir / f"index_{spec.geometry.key()}{labelling}.parquet"


def _index_config(spec: ModelSpec, seed: int) -> IndexConfig:
    """How ``spec``'s patches are laid out, labelled and sampled: what its index is built with and
    what hard-negative mining labels cells with."""
    from helpkit.slide.index import IndexConfig

    return IndexConfig(geometry=spec.geometry, tumour_threshold=spec.tumour_threshold,
                       max_per_class=spec.max_patches_per_slide // 2, seed=seed)


def _patch_index(slides: pd.DataFrame, spec: ModelSpec, seed: int, model_dir: Path) -> pd.DataFrame:
    """The patch index for ``spec``'s geometry and tumour threshold, built once and shared by models that use it."""
    from helpkit.slide.index import index_dataset, write_index
    from helpkit.slidemap import Executor

    path = _index_path(model_dir, spec)
    if path.is_file():
        return pd.read_parquet(path)
    config = _index_config(spec, seed)
    executor = Executor.from_env()  # HELPKIT_SCHEDULER / HELPKIT_WORKERS: per-slide work on Dask
    result = index_dataset(slides, config, executor=executor,
                           parts_dir=None if executor.in_process else path.with_name(f"{path.name}.slides"))
    for slide_id, error in result.failures:
        log(f"skipped slide {slide_id} in the patch index: {error}")
    write_index(result.patches, path)
    log(f"patch index {path.name}: {len(result.patches)} patches from {len(result.summary)} slides")
    return result.patches


def _run_dirs(model_dir: Path, config: SubmissionConfig, submission_dir: Path | None) -> list[Path]:
    """Each model's run folder: trained in ``model_dir/runs`` or shipped with the submission."""
    dirs = []
    for spec in config.models:
        if spec.weights is not None:
            if submission_dir is None:
                raise HelpkitError(f"model {spec.name!r} ships weights but the submission folder is unknown")
            dirs.append(submission_dir / spec.weights)
        else:
            dirs.append(model_dir / "runs" / spec.name)
    return dirs


def _ensemble_params(config: SubmissionConfig) -> dict[str, Any]:
    params = dict(config.ensemble.params)
    if config.ensemble.method == "single":
        params.setdefault("model", config.models[0].name)
    return params


def _heatmaps(run_dirs: list[Path], config: SubmissionConfig, records: list, out: Path) -> dict[str, int]:
    """``make_heatmaps`` of every model, each with its own mixed precision, XLA and TTA (one call when they agree)."""
    from collections import Counter

    from helpkit.heatmap.make import Options, make_heatmaps
    from helpkit.slidemap import Executor

    groups: dict[tuple[bool, bool, str], list[Path]] = {}
    for spec, run_dir in zip(config.models, run_dirs):
        groups.setdefault((spec.mixed_precision, bool(spec.xla), spec.tta), []).append(run_dir)
    counts: Counter[str] = Counter()
    for (mixed, xla, tta), dirs in groups.items():
        counts.update(make_heatmaps(dirs, records, out, Options(mixed_precision=mixed, xla=xla, tta=tta),
                                    executor=Executor.from_env()))
    return dict(counts)


def _second_round(spec: ModelSpec, index: pd.DataFrame, slides: pd.DataFrame, run_dir: Path, fit: Any,
                  model_dir: Path, config: SubmissionConfig, data_dir: str | Path,
                  layout: str | None) -> dict[str, Any]:
    """Hard-negative mining for ``spec`` (``helpkit.train.hard_negatives.second_round``): round 1 in
    ``runs/<model>.round1``, its out-of-fold heatmaps in ``heatmaps.round1/``, round 2 in ``run_dir``."""
    from helpkit.heatmap.make import slide_records
    from helpkit.slidemap import Executor
    from helpkit.train.hard_negatives import second_round

    if spec.folds < 2:
        raise HelpkitError(f"model {spec.name!r}: hard_negatives needs folds >= 2 (the training slides are "
                           "scored out of fold)")
    one = config.model_copy(update={"models": [spec]})
    round1_heatmaps = model_dir / "heatmaps.round1"

    def score(run: Path) -> Path:
        _heatmaps([run], one, slide_records(data_dir, layout=layout), round1_heatmaps)
        return round1_heatmaps / spec.name

    done = second_round(index, _index_path(model_dir, spec), slides, run_dir, spec.hard_negatives,
                        fit=fit, score=score, config=_index_config(spec, config.seed), executor=Executor.from_env())
    log(f"model {spec.name}: {done['added']} hard negatives (target {done['target']}, at most "
        f"{done['max_per_slide']} a slide) scored {done['score_min']}-{done['score_max']} by round 1, "
        f"{'reused ' if done['reused'] else ''}{done['index']}; round 1 kept in runs/{done['round1']}")
    return done


def train(
    data_dir: str | Path, model_dir: str | Path, config: SubmissionConfig, submission_dir: str | Path | None = None,
    strict: bool = False, layout: str | None = None,
) -> dict[str, Any]:
    """Run the train stage; returns (and writes to ``pipeline.json``) what it did. Training-label
    problems are warned about and their slides left out of patch training (``strict``: errors)."""
    from helpkit.data import check_labels, discover
    from helpkit.ensemble import fit_ensemble, write_report
    from helpkit.features.features_table import build_features
    from helpkit.slidemap import Executor
    from helpkit.heatmap.make import slide_records
    from helpkit.train.fit import TrainConfig, train_run

    _helpkit_kind(config)
    started = time.monotonic()
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    slides = check_labels(discover(data_dir, "train", layout), strict)
    log(f"train stage: {len(slides)} slides ({int((slides['label'] == 1).sum())} positive)")
    timings: dict[str, float] = {}
    hard_negatives: dict[str, dict[str, Any]] = {}
    run_dirs = _run_dirs(model_dir, config, Path(submission_dir) if submission_dir else None)
    for spec, run_dir in zip(config.models, run_dirs):
        if spec.weights is not None:
            log(f"model {spec.name}: shipped weights, not trained")
            continue
        t0 = time.monotonic()
        index = _patch_index(slides, spec, config.seed, model_dir)
        log(f"training {spec.name} ({spec.architecture}, {spec.folds} folds)")
        train_config = TrainConfig(model=spec.architecture, width=spec.width, folds=spec.folds, epochs=spec.epochs,
                                   batch_size=spec.batch, seed=config.seed,
                                   augmentation=augment_config(spec.augment, spec.augment_params),
                                   mixed_precision=spec.mixed_precision, xla=spec.xla, normalise=spec.normalise)
        budget = spec.time_budget_min * 60 if spec.time_budget_min is not None else None
        fit = partial(train_run, config=train_config, name=spec.name, time_budget_s=budget)
        if spec.hard_negatives > 0:
            hard_negatives[spec.name] = _second_round(spec, index, slides, run_dir, fit, model_dir, config,
                                                      data_dir, layout)
        else:
            fit(index, run_dir)
        timings[f"train_{spec.name}"] = time.monotonic() - t0

    t0 = time.monotonic()
    heatmap_dir = model_dir / "heatmaps"
    counts = _heatmaps(run_dirs, config, slide_records(data_dir, layout=layout), heatmap_dir)
    timings["heatmaps"] = time.monotonic() - t0
    log(f"out-of-fold heatmaps: {counts}")

    t0 = time.monotonic()
    features_path = model_dir / "features_oof.parquet"
    build_features([heatmap_dir / spec.name for spec in config.models], features_path, executor=Executor.from_env())
    features = pd.read_parquet(features_path)
    fit_ensemble(features, config.ensemble.method, model_dir / "ensemble", seed=config.seed, **_ensemble_params(config))
    report = write_report(features, model_dir / "ensemble_report", seed=config.seed)
    timings["ensemble"] = time.monotonic() - t0
    log("candidate ensembles (out-of-fold AUC):\n" + report.to_string(index=False))

    summary = {
        "stage": "train",
        "config": config.model_dump(mode="json"),
        # Relative to model_dir where inside it, so the folder can be moved or mounted elsewhere.
        "runs": {spec.name: str(d.relative_to(model_dir)) if d.is_relative_to(model_dir) else str(d)
                 for spec, d in zip(config.models, run_dirs)},
        "n_slides": len(slides),
        "heatmaps": counts,
        "hard_negatives": hard_negatives,
        "timings_s": {**timings, "total": time.monotonic() - started},
    }
    write_json(model_dir / PIPELINE_FILE, summary)
    return summary


def default_work_dir() -> Path:
    """Where the inference stage keeps its scratch unless told: ``<system temp dir>/helpkit-inference``."""
    return Path(tempfile.gettempdir()) / "helpkit-inference"


def inference_dir(work_dir: Path, slide_ids: list[str]) -> Path:
    """Where one test set's heatmaps and features go under ``work_dir``: a folder per set of slide
    ids, so test sets never mix (the heatmaps in it are keyed by content, so a set whose names
    repeat another's is recomputed, not reused)."""
    digest = hashlib.sha1("\n".join(sorted(slide_ids)).encode()).hexdigest()[:12]
    return Path(work_dir) / digest


def inference_features(
    data_dir: str | Path, model_dir: str | Path, config: SubmissionConfig, work_dir: str | Path | None = None,
    layout: str | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Heatmaps and slide features of the test slides under ``data_dir``, made in the work dir.

    Returns the features (indexed by slide id, in discovery order) and the test set's folder
    under ``work_dir`` (default: :func:`default_work_dir`); ``model_dir`` is only read.
    """
    import json

    from helpkit.features.features_table import build_features
    from helpkit.slidemap import Executor
    from helpkit.heatmap.make import slide_records

    _helpkit_kind(config)
    model_dir = Path(model_dir)
    meta_path = model_dir / PIPELINE_FILE
    if not meta_path.is_file():
        raise HelpkitError("no trained pipeline here: run the train stage first", meta_path)
    runs = json.loads(meta_path.read_text())["runs"]
    records = slide_records(data_dir, "test", layout)
    slide_ids = [r.slide_id for r in records]
    work = inference_dir(Path(work_dir) if work_dir is not None else default_work_dir(), slide_ids)
    log(f"inference stage: {len(records)} test slides, models {', '.join(runs)}; scratch in {work}")
    _heatmaps([model_dir / runs[spec.name] for spec in config.models], config, records, work / "heatmaps")
    features_path = work / "features.parquet"
    build_features([work / "heatmaps" / spec.name for spec in config.models], features_path,
                   executor=Executor.from_env())
    return pd.read_parquet(features_path).set_index("slide_id").reindex(slide_ids), work


def infer(
    data_dir: str | Path, model_dir: str | Path, output_csv: str | Path, config: SubmissionConfig,
    work_dir: str | Path | None = None, layout: str | None = None,
) -> pd.Series:
    """Run the inference stage; every test slide gets a row in ``output_csv``.

    Reads ``model_dir`` only; heatmaps, features and ``inference.json`` go under ``work_dir``
    (default: :func:`default_work_dir`).
    """
    from helpkit.ensemble import load_ensemble
    from helpkit.scoring import write_predictions

    features, work = inference_features(data_dir, model_dir, config, work_dir, layout)
    slide_ids = list(features.index)
    failed_cols = [f"{spec.name}__failed" for spec in config.models]
    all_failed = features[failed_cols].fillna(1).astype(bool).all(axis=1)
    proba = pd.Series(load_ensemble(Path(model_dir) / "ensemble").predict_proba(features.reset_index()),
                      index=slide_ids)
    # A slide that opened but where no model found tissue has nothing to be scored by: the
    # ensemble's answer for an empty heatmap is an artefact, so it gets the fallback too.
    tissue_cols = [f"{spec.name}__tissue_patches" for spec in config.models]
    no_tissue = ~all_failed & (features[tissue_cols].fillna(0) == 0).all(axis=1)
    proba[all_failed | no_tissue] = config.fallback_probability
    failures = {}
    for slide_id in all_failed[all_failed].index:
        failures[slide_id] = _heatmap_error(work / "heatmaps", config, slide_id)
        log(f"slide {slide_id} failed ({failures[slide_id]}): wrote fallback {config.fallback_probability}")
    for slide_id in no_tissue[no_tissue].index:
        failures[slide_id] = "no tissue found (the tissue mask is empty)"
        log(f"slide {slide_id}: no tissue found, nothing to score: wrote fallback {config.fallback_probability}")
    write_predictions(output_csv, proba)
    write_json(work / "inference.json", {"data": str(data_dir), "output": str(output_csv),
                                         "slides": slide_ids, "failures": failures})
    log(f"wrote {len(proba)} rows to {output_csv} ({len(failures)} fallback)")
    return proba


def _heatmap_error(heatmap_dir: Path, config: SubmissionConfig, slide_id: str) -> str:
    """The first model's recorded error for a failed slide."""
    from helpkit.heatmap.store import heatmap_path, read_heatmap

    for spec in config.models:
        path = heatmap_path(heatmap_dir, spec.name, slide_id)
        if path.is_file():
            error = read_heatmap(path).error
            if error:
                return error
    return "no heatmap"
