"""Run folders in and out of helpkit: your own Keras model as a run, and a run ready to ship.

``import_model`` makes a one-fold run folder (``run.json``, ``fold_0/model.keras``,
``fold_0/model.json``, the layout of ``helpkit.train.run_folder``) around a model trained anywhere,
so heatmaps, features and submissions use it as they use helpkit's own. Its one fold trained
on no slide of the data, so every slide, training or test, is scored by it. The model must
take uint8 RGB patches, (batch, P, P, 3) with values 0-255, and return (batch, 1) tumour
probabilities in [0, 1]: its normalisation belongs inside it, as helpkit's own models do.

``export_run`` copies a run folder (its ``stain.json`` too) without what only training needs
(the patch cache, ``checkpoint.keras``, ``state.json``, temporaries): what a submission ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path, write_json
from helpkit.slide.geometry import PatchGeometry
from helpkit.train.run_folder import Run, fold_dir, load_run, write_run
from helpkit.train.stain import STAIN_FILE

IMPORTED = "imported"
"""The architecture recorded for a model helpkit did not build."""
IMPORTED_NORMALISATION = "uint8 RGB (batch, P, P, 3) in, (batch, 1) probability out; any normalisation inside the model"
SHIPPED_FOLD_FILES = ("model.keras", "model.json", "log.csv")
"""What a fold folder keeps when exported; checkpoints and state are for resuming training only."""


def _new_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise HelpkitError("exists and is not an empty folder; choose a new one", folder)
    folder.mkdir(parents=True, exist_ok=True)


def check_patch_model(model: object, patch_size: int, path: Path) -> None:
    """Run ``model`` on a uint8 test batch: (batch, P, P, 3) in, (batch, 1) in [0, 1] out, or a HelpkitError."""
    import numpy as np

    shape = tuple(getattr(model, "input_shape", ()) or ())
    if len(shape) != 4 or shape[-1] not in (None, 3) or any(s not in (None, patch_size) for s in shape[1:3]):
        raise HelpkitError(f"the model takes input of shape {shape}; a patch model takes (batch, {patch_size}, "
                           f"{patch_size}, 3) uint8 RGB (check --patch-size)", path)
    rng = np.random.default_rng(0)
    batch = np.stack([np.zeros((patch_size, patch_size, 3), np.uint8), np.full((patch_size, patch_size, 3), 255, np.uint8),
                      rng.integers(0, 256, (patch_size, patch_size, 3), dtype=np.uint8)])
    try:
        out = np.asarray(model.predict(batch, verbose=0))  # type: ignore[attr-defined]
    except Exception as err:  # noqa: BLE001 - whatever the model raises, say which file and why
        raise HelpkitError(f"the model fails on a uint8 batch of shape {batch.shape} ({err})", path) from err
    if out.shape != (len(batch), 1):
        raise HelpkitError(f"the model returns shape {out.shape} for {len(batch)} patches; a patch model returns "
                           f"(batch, 1) tumour probabilities", path)
    if not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1:
        raise HelpkitError(f"the model returns values in [{out.min():.3g}, {out.max():.3g}]; a patch model returns "
                           "probabilities in [0, 1] (end it with a sigmoid)", path)


def import_model(model_path: str | Path, out: str | Path, geometry: PatchGeometry, name: str | None = None) -> Run:
    """Make ``out`` a one-fold run folder around the Keras model at ``model_path``; return it read back."""
    import keras

    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise HelpkitError("no such model file", model_path)
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as err:  # noqa: BLE001 - keras raises many kinds for a bad file
        raise HelpkitError(f"cannot load the Keras model ({err})", model_path) from err
    check_patch_model(model, geometry.patch_size, model_path)
    _new_folder(out)
    name = name or out.name
    target = fold_dir(out, 0) / "model.keras"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        if model_path.suffix == ".keras":
            shutil.copyfile(model_path, tmp)
        else:
            model.save(tmp)
    config = {"model": IMPORTED, "source": model_path.name, "input": "uint8 RGB", "output": "(batch, 1) probability"}
    write_json(fold_dir(out, 0) / "model.json", {
        "name": name, "architecture": IMPORTED, "geometry": geometry.to_dict(), "width": 1.0,
        "normalisation": IMPORTED_NORMALISATION, "config": config, "fold": 0,
        "train_slides": [], "val_slides": [], "metrics": {},
    })
    write_run(out, name=name, architecture=IMPORTED, geometry=geometry, width=1.0, splits=[([], [])], config=config)
    return load_run(out)


def export_run(run_dir: str | Path, out: str | Path) -> tuple[int, int]:
    """Copy ``run_dir`` to ``out`` without caches and checkpoints; return (files, bytes) written."""
    run = load_run(run_dir)
    out = Path(out)
    if out.resolve() == run.path.resolve():
        raise HelpkitError("export to another folder than the run's own", out)
    for fold in run.folds:
        if not fold.model_path.is_file():
            raise HelpkitError(f"fold {fold.index} has no trained model: train it (or resume) before exporting",
                               fold.model_path)
    _new_folder(out)
    copied = [(run.path / f, out / f) for f in ("run.json", STAIN_FILE) if (run.path / f).is_file()]
    for fold in run.folds:
        source = fold.model_path.parent
        dest = out / fold.model_path.parent.relative_to(run.path)
        dest.mkdir(parents=True, exist_ok=True)
        copied += [(source / f, dest / f) for f in SHIPPED_FOLD_FILES if (source / f).is_file()]
    size = 0
    for src, dest in copied:
        shutil.copy2(src, dest)
        size += dest.stat().st_size
    return len(copied), size
