"""A training run on disk: ``run.json`` plus one ``fold_<k>/`` folder per fold.

Layout (the interface the heatmap and ensemble stages read)::

    RUN_DIR/run.json               name, architecture, geometry, width, folds
    RUN_DIR/fold_<k>/model.keras   the trained model (uint8 patches in, probability out)
    RUN_DIR/fold_<k>/model.json    name, architecture, geometry, normalisation,
                                   config, metrics, fold, train_slides, val_slides
    RUN_DIR/fold_<k>/log.csv       per-epoch loss/accuracy/AUC (train and validation)
    RUN_DIR/stain.json             stain normalisation, when trained with one (helpkit.train.stain)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.slide.geometry import PatchGeometry

if TYPE_CHECKING:
    import keras

    from helpkit.slide.stain_normalise import StainStats

RUN_SCHEMA_VERSION = 2
"""2: the patch geometry in microns (``geometry``) replaced the pyramid ``level``."""
NORMALISATION = "uint8 RGB in; Rescaling(1/127.5, offset=-1) inside the model"
"""Recorded in model.json: callers feed raw uint8 patches and never normalise themselves."""


def fold_dir(run_dir: str | Path, index: int) -> Path:
    """The folder of fold ``index`` inside ``run_dir``."""
    return Path(run_dir) / f"fold_{index}"


@dataclass(frozen=True)
class Fold:
    """One fold of a run: its model file and the slides it trained and validated on."""

    index: int
    model_path: Path
    train_slides: list[str]
    val_slides: list[str]


@dataclass(frozen=True)
class Run:
    """A run folder read back: what the models expect and which slides each fold saw."""

    path: Path
    name: str
    architecture: str
    geometry: PatchGeometry
    folds: list[Fold]
    width: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    normalise: str = "none"
    """Stain normalisation the models were trained with (none without ``stain.json``)."""
    stain_reference: StainStats | None = None
    """The reference look patches are normalised to before the models (None for none)."""

    @property
    def patch_size(self) -> int:
        """Patch side in pixels the models take."""
        return self.geometry.patch_size

    def fold(self, k: int) -> Fold:
        """The fold with index ``k``; a HelpkitError if the run has none."""
        for fold in self.folds:
            if fold.index == k:
                return fold
        known = ", ".join(str(f.index) for f in self.folds)
        raise HelpkitError(f"run has no fold {k} (folds: {known})", self.path / "run.json")

    def load_model(self, k: int) -> keras.Model:
        """Load fold ``k``'s model (uncompiled: for inference)."""
        path = self.fold(k).model_path
        if not path.is_file():
            raise HelpkitError("model file missing: fold not trained or training still running", path)
        import keras

        try:
            return keras.models.load_model(path, compile=False)
        except (OSError, ValueError) as err:
            raise HelpkitError(f"cannot load model ({err})", path) from err

    def fold_of_slide(self, slide_id: str) -> int | None:
        """The fold whose validation set holds ``slide_id`` (out-of-fold), or None."""
        for fold in self.folds:
            if slide_id in fold.val_slides:
                return fold.index
        return None


def write_run(
    run_dir: str | Path,
    *,
    name: str,
    architecture: str,
    geometry: PatchGeometry,
    width: float,
    splits: list[tuple[list[str], list[str]]],
    config: dict[str, Any],
) -> Path:
    """Write ``run_dir/run.json`` atomically; ``splits`` is (train_slides, val_slides) per fold."""
    path = Path(run_dir) / "run.json"
    write_json(
        path,
        {
            "schema_version": RUN_SCHEMA_VERSION,
            "name": name,
            "architecture": architecture,
            "geometry": geometry.to_dict(),
            "width": float(width),
            "config": config,
            "folds": [
                {
                    "index": k,
                    "model": f"fold_{k}/model.keras",
                    "train_slides": sorted(train),
                    "val_slides": sorted(val),
                }
                for k, (train, val) in enumerate(splits)
            ],
        },
    )
    return path


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir/run.json``; a HelpkitError names the file if it is missing or malformed."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise HelpkitError("no run.json: not a training run folder (helpkit train --out)", path)
    try:
        meta = json.loads(path.read_text())
        if "geometry" not in meta:
            raise HelpkitError("run made by an older helpkit (patches by pyramid level, not microns): train it "
                               "again", path)
        folds = [
            Fold(
                index=int(f["index"]),
                model_path=run_dir / f["model"],
                train_slides=list(f["train_slides"]),
                val_slides=list(f["val_slides"]),
            )
            for f in meta["folds"]
        ]
        run = Run(
            path=run_dir,
            name=str(meta["name"]),
            architecture=str(meta["architecture"]),
            geometry=PatchGeometry.from_dict(meta["geometry"]),
            folds=folds,
            width=float(meta.get("width", 1.0)),
            config=dict(meta.get("config", {})),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise HelpkitError(f"malformed run.json ({err!r})", path) from err
    from helpkit.train.stain import read_run_stains

    stains = read_run_stains(run_dir)
    return run if stains is None else replace(run, normalise=stains.method, stain_reference=stains.reference)
