"""Heatmap files: one ``.npz`` per slide and model, written atomically, read with a schema check.

Layout ``HEATMAP_DIR/<model>/<slide_id>.npz``, schema_version 2 (docs/contracts.md):

- ``prob`` float32 (rows, cols): the model's tumour probability per grid cell; NaN outside
  tissue and where the patch could not be read.
- ``tissue`` bool (rows, cols): cells that went through the model (or were meant to).
- ``missing`` bool (rows, cols): tissue cells whose read failed.
- ``origin`` int64[2]: level-0 (x, y) of cell (0, 0)'s top-left; ``stride0``, ``patch_size0``:
  level-0 pixels; ``geometry`` str: the patch geometry as JSON (``PatchGeometry.to_json``:
  mpp, patch_size, stride, tissue_mpp), ``patch_size`` int too.
- ``slide_id``, ``model``, ``split`` (str); ``label`` (float, NaN unknown).
- ``folds`` int array: the fold models that made it (one for a training slide, out of fold;
  several, averaged, for a slide no fold held out).
- ``error`` str: '' when the slide opened; otherwise why not, and then ``prob``, ``tissue``
  and ``missing`` have shape (0, 0) and ``origin``/``stride0``/``patch_size0`` are 0.
- ``errors`` str array: per-patch read errors (capped; the last entry counts the rest).
- ``key`` str: what the heatmap was made from (slide file, fold models, geometry; see
  ``helpkit.heatmap.make.heatmap_key``): a cached heatmap is reused only when it matches.
- ``mpp`` float64[2] (extra key, optional on read): level-0 microns per pixel (x, y), NaN
  when the slide does not say; lets features give tissue area in mm^2.
- ``tta`` str (extra key, optional on read: ``none`` when absent): the test-time augmentation
  that made it (``helpkit.heatmap.tta.TTAS``).
- ``stain`` str (extra key, optional on read: none when absent or ''): the slide's stain
  statistics as JSON (``StainStats.to_dict``) when the run normalises stains.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.heatmap.tta_spec import DEFAULT_TTA
from helpkit.io import atomic_path, json_text
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.stain_normalise import StainStats

SCHEMA_VERSION = 2
"""2: ``geometry`` (microns) replaced the pyramid ``level``; ``key`` added."""

_REQUIRED = (
    "schema_version prob tissue missing origin stride0 patch_size0 geometry patch_size "
    "slide_id model split label folds error errors key"
).split()


@dataclass
class Heatmap:
    """One slide's heatmap for one model (see the module docstring for each field)."""

    prob: np.ndarray
    tissue: np.ndarray
    missing: np.ndarray
    origin: tuple[int, int]
    stride0: int
    patch_size0: int
    geometry: PatchGeometry
    slide_id: str
    model: str
    split: str
    label: float
    folds: list[int]
    error: str = ""
    errors: list[str] = field(default_factory=list)
    mpp: tuple[float, float] | None = None
    key: str = ""
    tta: str = DEFAULT_TTA
    stain: StainStats | None = None

    @property
    def patch_size(self) -> int:
        """Patch side in pixels at ``geometry.mpp``."""
        return self.geometry.patch_size

    @property
    def failed(self) -> bool:
        """True when the slide could not be opened (no probabilities at all)."""
        return bool(self.error)

    @classmethod
    def failure(
        cls,
        *,
        error: str,
        slide_id: str,
        model: str,
        split: str,
        label: float,
        geometry: PatchGeometry,
        folds: list[int],
        key: str = "",
    ) -> Heatmap:
        """The heatmap of a slide that could not be opened: empty grids plus the reason."""
        empty = np.zeros((0, 0))
        return cls(
            prob=empty.astype(np.float32),
            tissue=empty.astype(bool),
            missing=empty.astype(bool),
            origin=(0, 0),
            stride0=0,
            patch_size0=0,
            geometry=geometry,
            slide_id=slide_id,
            model=model,
            split=split,
            label=label,
            folds=folds,
            error=error or "unknown error",
            key=key,
        )


def heatmap_path(out_dir: str | Path, model: str, slide_id: str) -> Path:
    """Where the heatmap of ``slide_id`` by ``model`` lives under ``out_dir``."""
    return Path(out_dir) / model / f"{slide_id}.npz"


def write_heatmap(path: str | Path, heatmap: Heatmap) -> None:
    """Write ``heatmap`` to ``path`` atomically (compressed npz, no pickled objects)."""
    mpp = heatmap.mpp if heatmap.mpp is not None else (np.nan, np.nan)
    arrays = {
        "schema_version": np.int64(SCHEMA_VERSION),
        "prob": np.asarray(heatmap.prob, dtype=np.float32),
        "tissue": np.asarray(heatmap.tissue, dtype=bool),
        "missing": np.asarray(heatmap.missing, dtype=bool),
        "origin": np.asarray(heatmap.origin, dtype=np.int64),
        "stride0": np.int64(heatmap.stride0),
        "patch_size0": np.int64(heatmap.patch_size0),
        "geometry": np.str_(heatmap.geometry.to_json()),
        "patch_size": np.int64(heatmap.patch_size),
        "slide_id": np.str_(heatmap.slide_id),
        "model": np.str_(heatmap.model),
        "split": np.str_(heatmap.split),
        "label": np.float64(heatmap.label),
        "folds": np.asarray(heatmap.folds, dtype=np.int64),
        "error": np.str_(heatmap.error),
        "errors": np.asarray(heatmap.errors, dtype=np.str_).reshape(-1),
        "mpp": np.asarray(mpp, dtype=np.float64),
        "key": np.str_(heatmap.key),
        "tta": np.str_(heatmap.tta),
        "stain": np.str_("" if heatmap.stain is None else json_text(heatmap.stain.to_dict(), indent=None)),
    }
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _stain(text: str, path: Path) -> StainStats | None:
    if not text:
        return None
    try:
        return StainStats.from_dict(json.loads(text), path)
    except ValueError as err:
        raise HelpkitError(f"malformed stain statistics ({err})", path) from err


def read_heatmap(path: str | Path) -> Heatmap:
    """Read a heatmap; a HelpkitError names the file if it is unreadable or of another schema."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise HelpkitError(f"cannot read heatmap ({err})", path) from err
    version = int(data["schema_version"]) if "schema_version" in data else None
    if version != SCHEMA_VERSION:
        raise HelpkitError(f"heatmap schema_version {version}, expected {SCHEMA_VERSION}", path)
    absent = [key for key in _REQUIRED if key not in data]
    if absent:
        raise HelpkitError(f"heatmap lacks keys {absent}", path)
    mpp = data.get("mpp")
    return Heatmap(
        prob=data["prob"],
        tissue=data["tissue"],
        missing=data["missing"],
        origin=(int(data["origin"][0]), int(data["origin"][1])),
        stride0=int(data["stride0"]),
        patch_size0=int(data["patch_size0"]),
        geometry=PatchGeometry.from_json(str(data["geometry"])),
        slide_id=str(data["slide_id"]),
        model=str(data["model"]),
        split=str(data["split"]),
        label=float(data["label"]),
        folds=[int(k) for k in data["folds"]],
        error=str(data["error"]),
        errors=[str(e) for e in data["errors"]],
        mpp=None if mpp is None or np.isnan(mpp).any() else (float(mpp[0]), float(mpp[1])),
        key=str(data["key"]),
        tta=str(data["tta"]) if "tta" in data else DEFAULT_TTA,
        stain=_stain(str(data.get("stain", "")), path),
    )
