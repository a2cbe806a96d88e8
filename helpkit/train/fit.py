"""Training a run: folds by slide, one Keras model per fold, resumable and time-boxed.

``train_run`` splits the slides of a patch index into folds, writes ``run.json``, then
trains each fold with ``train_fold``: Adam, class-weighted binary cross-entropy,
ReduceLROnPlateau and early stopping on validation loss, a checkpoint every epoch, and a
time budget. A rerun of the same command resumes: finished folds are skipped and an
interrupted fold continues from its last saved epoch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.models import build
from helpkit.models.compute import build_model, jit_compile
from helpkit.train.augment import AugmentConfig
from helpkit.train.augment_spec import read_size
from helpkit.train.cache import open_cache
from helpkit.train.callbacks import MONITOR, Checkpoint, Progress, ResumeState, TimeBudget, Validation
from helpkit.train.dataset import PatchSource, SlidePatches, check_index, patch_dataset
from helpkit.train.folds import slide_folds
from helpkit.train.stain import NormalisedPatches, run_stains
from helpkit.train.run_folder import NORMALISATION, Run, fold_dir, load_run, write_run


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (recorded in run.json and model.json)."""

    model: str = "simple"
    width: float = 1.0
    folds: int = 3
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    early_stopping_patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.5
    seed: int = 0
    cache: bool = True
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    mixed_precision: bool = False
    """Train under Keras' mixed_float16 policy (float32 output and variables, loss scaling)."""
    xla: bool | None = None
    """XLA-compile the train step; None: Keras' "auto" (XLA on a GPU, not on a CPU)."""
    normalise: str = "none"
    """Stain normalisation (``helpkit.slide.stain_normalise.NORMALISERS``): each slide's patches
    mapped onto the reference of the run's slides, saved in ``stain.json``, before augmentation."""


@dataclass(frozen=True)
class FoldData:
    """The training and validation rows of one fold and where their patches come from."""

    source: PatchSource
    train_rows: np.ndarray
    train_labels: np.ndarray
    val_rows: np.ndarray
    val_labels: np.ndarray
    failed: int = 0
    """Rows left out because the cache could not read them (reading slides directly, the
    source counts its failed reads itself)."""


def fold_data(index: pd.DataFrame, source: PatchSource, train_slides: list[str], val_slides: list[str],
              usable: np.ndarray | None = None) -> FoldData:
    """Labelled (0/1) rows of the fold's slides; ``usable`` masks out rows known unreadable."""
    labels = index["label"].to_numpy()
    slide = index["slide_id"].astype(str).to_numpy()
    labelled = np.isin(labels, (0, 1)) & np.isin(slide, train_slides + val_slides)
    unreadable = labelled & ~usable if usable is not None else np.zeros(len(index), bool)
    keep = labelled & ~unreadable
    train = np.flatnonzero(keep & np.isin(slide, train_slides))
    val = np.flatnonzero(keep & np.isin(slide, val_slides))
    for name, rows, slides in (("training", train, train_slides), ("validation", val, val_slides)):
        if len(rows) == 0:
            raise HelpkitError(f"no readable labelled {name} patches in slides {', '.join(slides)}")
    return FoldData(source, train, labels[train], val, labels[val], int(unreadable.sum()))


def _compile(model: keras.Model, learning_rate: float, xla: bool | None = None) -> None:
    model.compile(
        jit_compile=jit_compile(xla),
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )


def _read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "state.json"
    if not (path.is_file() and (folder / "checkpoint.keras").is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise HelpkitError(f"malformed training state ({err}); delete the fold folder to restart", path) from err


def train_fold(
    data: FoldData,
    folder: Path,
    config: TrainConfig,
    *,
    patch_size: int,
    deadline: float | None = None,
    description: str = "fold",
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, Any]:
    """Train (or resume) one fold in ``folder``; returns the state saved after the last epoch.

    ``deadline`` is a ``time.monotonic()`` value by which the fold must have stopped and
    saved. A fold that already reached its epochs or stopped early is left as it is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = _read_state(folder)
    if state is not None and (state["epochs_done"] >= config.epochs or state.get("stopped") == "early_stopping"):
        return state
    if state is None:
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.model, patch_size, config.width, mixed_precision=config.mixed_precision)
        _compile(model, config.learning_rate, config.xla)
        state = {"epochs_done": 0, "history": [], "best": None, "best_epoch": -1}
    else:
        try:
            model = keras.models.load_model(folder / "checkpoint.keras")
        except (OSError, ValueError) as err:
            raise HelpkitError(f"cannot resume from checkpoint ({err}); delete it to restart", folder) from err
    initial_epoch = int(state["epochs_done"])
    started = time.monotonic()

    seed = config.seed + initial_epoch  # a resumed fold does not replay the first epochs' order
    train_ds = patch_dataset(data.source, data.train_rows, data.train_labels, config.batch_size,
                             training=True, seed=seed, augmentation=config.augmentation, patch_size=patch_size)
    val_ds = patch_dataset(data.source, data.val_rows, data.val_labels, config.batch_size, training=False,
                           patch_size=patch_size)
    schedulers = {
        "early_stopping": keras.callbacks.EarlyStopping(MONITOR, patience=config.early_stopping_patience),
        "reduce_lr": keras.callbacks.ReduceLROnPlateau(MONITOR, factor=config.lr_factor,
                                                       patience=config.lr_patience),
    }
    budget = TimeBudget(deadline if deadline is not None else math.inf,
                        val_steps=math.ceil(len(data.val_rows) / config.batch_size))
    callbacks = [
        Validation(val_ds),  # first: the callbacks after it read its val_* metrics
        *schedulers.values(),
        ResumeState(state, schedulers),
        Checkpoint(folder, state, schedulers),
        Progress(description, math.ceil(len(data.train_rows) / config.batch_size)),
        budget,  # last: its reserve measures validation plus every save before it
        *(extra_callbacks or []),
    ]
    try:
        model.fit(train_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=0, shuffle=False)  # the dataset shuffles itself
    except (tf.errors.OpError, HelpkitError) as err:
        fatal = getattr(data.source, "fatal", None)
        if fatal is not None:
            raise fatal from err
        raise
    if budget.stopped:
        state["stopped"] = "time_budget"
    elif schedulers["early_stopping"].stopped_epoch > 0:
        state["stopped"] = "early_stopping"
    else:
        state["stopped"] = "epochs"
    state["seconds"] = state.get("seconds", 0.0) + time.monotonic() - started
    write_json(folder / "state.json", state)
    return state


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: an undefined metric (AUC of one class) is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _model_json(run: dict[str, Any], k: int, data: FoldData, state: dict[str, Any]) -> dict[str, Any]:
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    return {
        "name": run["name"],
        "architecture": run["config"]["model"],
        "geometry": run["geometry"].to_dict(),
        "width": run["config"]["width"],
        "normalisation": NORMALISATION,
        "config": run["config"],
        "fold": k,
        "train_slides": run["splits"][k][0],
        "val_slides": run["splits"][k][1],
        "train_patches": int(len(data.train_rows)),
        "val_patches": int(len(data.val_rows)),
        "failed_patches": data.failed + getattr(data.source, "failures", 0),
        "metrics": {
            "best_epoch": state["best_epoch"],
            **{key: _finite(best.get(key)) for key in ("val_loss", "val_accuracy", "val_auc")},
            "epochs_done": state["epochs_done"],
            "stopped": state["stopped"],
            "seconds": round(state.get("seconds", 0.0), 1),
            "history": state["history"],
        },
    }


RESUMABLE_CHANGES = ("epochs", "cache")
"""TrainConfig fields a resumed run may change: more epochs continue training; the cache only
changes where patches are read from."""


def recipe_changes(recorded: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the settings in which ``wanted`` differs from the ``recorded`` run.json config,
    ``augmentation.hed`` style for nested ones; a setting the record lacks (written before it
    existed) is not a change, and neither are ``RESUMABLE_CHANGES``."""
    changes = []
    for key, value in wanted.items():
        if key not in recorded or (not prefix and key in RESUMABLE_CHANGES):
            continue
        if isinstance(value, dict) and isinstance(recorded[key], dict):
            changes += recipe_changes(recorded[key], value, f"{prefix}{key}.")
        elif recorded[key] != value:
            changes.append(f"{prefix}{key} {recorded[key]!r} -> {value!r}")
    return changes


def train_run(
    index: pd.DataFrame,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    name: str | None = None,
    time_budget_s: float | None = None,
    cache_dir: str | Path | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> Run:
    """Train every fold of a run into ``out`` from a patch index; returns the run read back.

    The time budget covers the whole call (cache building included); each fold gets an
    equal share of what is left when it starts.
    """
    start = time.monotonic()
    deadline = start + time_budget_s if time_budget_s is not None else None
    geometry = check_index(index)
    index = index.reset_index(drop=True)
    out = Path(out)
    patch_size = geometry.patch_size
    build(config.model, patch_size, config.width)  # bad model, size or width fails before any work
    slide_labels = index.groupby("slide_id")["slide_label"].first()
    splits = slide_folds(slide_labels, config.folds, config.seed)
    name = name or out.name
    run_meta = {"name": name, "geometry": geometry, "splits": splits, "config": asdict(config)}
    if (out / "run.json").is_file():
        old = load_run(out)
        if [(f.train_slides, f.val_slides) for f in old.folds] != splits:
            raise HelpkitError("run folder holds other folds (other data, --folds or --seed); use a new --out",
                               out / "run.json")
        if old.geometry != geometry:
            raise HelpkitError(f"run folder was trained on other patches ({old.geometry.key()}, not "
                               f"{geometry.key()}); use a new --out", out / "run.json")
        changed = recipe_changes(old.config, asdict(config))
        if changed:
            raise HelpkitError(f"run folder was trained with another recipe ({', '.join(changed)}); a resume would "
                               "mix them: use a new --out", out / "run.json")
    write_run(out, name=name, architecture=config.model, geometry=geometry, width=config.width,
              splits=splits, config=asdict(config))

    stains = run_stains(index, out, config.normalise, geometry.tissue_mpp) if config.normalise != "none" else None
    usable = None
    read = read_size(patch_size, config.augmentation.rescale)  # with a margin to rescale within
    if config.cache:
        cache = open_cache(index, Path(cache_dir) if cache_dir else out / "cache", read_size=read)
        source: PatchSource = cache
        usable = cache.ok
    else:
        source = SlidePatches(index, read_size=read)
    patches = source if stains is None else NormalisedPatches(source, index["slide_id"].to_numpy(), stains)
    try:
        for k, (train_slides, val_slides) in enumerate(splits):
            now = time.monotonic()
            fold_deadline = None if deadline is None else now + (deadline - now) / (len(splits) - k)
            data = fold_data(index, patches, train_slides, val_slides, usable)
            state = train_fold(data, fold_dir(out, k), config, patch_size=patch_size, deadline=fold_deadline,
                               description=f"{name} fold {k + 1}/{len(splits)}", extra_callbacks=extra_callbacks)
            write_json(fold_dir(out, k) / "model.json", _model_json(run_meta, k, data, state))
    finally:
        if isinstance(source, SlidePatches):
            source.close()
    return load_run(out)
