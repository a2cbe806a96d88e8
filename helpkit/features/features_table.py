"""The features table: one row per slide, ``<model>__<feature>`` columns from every heatmap.

Base columns ``slide_id, split, label``; per model the features of
``helpkit.features.slide``, then ``<model>__fold`` (the fold model that made an out-of-fold
heatmap, -1 when several fold models were averaged) and ``<model>__failed`` (1 when the
slide's heatmap records an error or the model has no heatmap of that slide; its features are
then NaN). The parquet file carries a fingerprint of its inputs so an unchanged rerun skips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.features.slide import FEATURE_NAMES, slide_features
from helpkit.heatmap.store import read_heatmap
from helpkit.io import atomic_path
from helpkit.slidemap import Executor, map_slides

FEATURES_VERSION = 2
"""Bump when a feature's definition changes, so old tables are recomputed."""
_META_KEY = b"helpkit.features"


def _heatmaps_in(folder: Path) -> list[Path]:
    """The heatmap files of a model folder; hidden names (unfinished atomic writes) are not."""
    return sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))


def model_dirs(heatmap_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Map each model to its heatmap files; a HEATMAP_DIR is the parent of model folders or one.

    A model met in two places is an error: its columns would silently collide.
    """
    found: dict[str, list[Path]] = {}
    for root in map(Path, heatmap_dirs):
        if not root.is_dir():
            raise HelpkitError("heatmap folder not found", root)
        folders = [root] if _heatmaps_in(root) else sorted(p for p in root.iterdir() if p.is_dir())
        folders = [f for f in folders if _heatmaps_in(f)]
        if not folders:
            raise HelpkitError("no heatmaps (<model>/<slide_id>.npz) in this folder", root)
        for folder in folders:
            if folder.name in found:
                raise HelpkitError(f"model {folder.name!r} appears in two heatmap folders", folder)
            found[folder.name] = _heatmaps_in(folder)
    return found


def fingerprint(models: dict[str, list[Path]]) -> str:
    """A digest of every input file's name, size and modification time, and of the feature code."""
    digest = hashlib.sha256(f"features v{FEATURES_VERSION}".encode())
    for model in sorted(models):
        for path in models[model]:
            stat = path.stat()
            digest.update(f"{model}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def slide_feature_rows(heatmaps: Sequence[tuple[str, str]]) -> list[tuple[str, str, str, float, dict[str, float]]]:
    """The per-slide job of ``features_table``: for each (model, heatmap file) of one slide,
    ``(model, slide_id, split, label, row)`` with the row's ``<model>__<feature>`` values."""
    out = []
    for model, path in heatmaps:
        heatmap = read_heatmap(path)
        row = {f"{model}__{k}": v for k, v in slide_features(heatmap).items()}
        row[f"{model}__fold"] = heatmap.folds[0] if len(heatmap.folds) == 1 else -1
        row[f"{model}__failed"] = int(heatmap.failed)
        out.append((model, heatmap.slide_id, heatmap.split, heatmap.label, row))
    return out


def features_table(models: dict[str, list[Path]], executor: Executor | None = None) -> pd.DataFrame:
    """Compute the features table of the heatmaps in ``models`` (see ``model_dirs``): one
    ``helpkit.slidemap.map_slides`` task per slide (its heatmaps of every model) on ``executor``."""
    base: dict[str, dict[str, object]] = {}
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    by_file: dict[str, list[tuple[str, str]]] = {}
    for model, paths in models.items():
        for path in paths:
            by_file.setdefault(path.stem, []).append((model, str(path)))
    done = map_slides(slide_feature_rows, list(by_file.values()), list(by_file), executor, description="features")
    for rows in done.values():
        for model, slide_id, split, label, row in rows:
            info = base.setdefault(slide_id, {"split": split, "label": np.nan})
            if np.isnan(info["label"]) and not np.isnan(label):  # type: ignore[arg-type]
                info["label"] = label
            per_model.setdefault(model, {})[slide_id] = row
    slide_ids = sorted(base)
    table = pd.DataFrame(
        {
            "slide_id": slide_ids,
            "split": [base[s]["split"] for s in slide_ids],
            "label": [base[s]["label"] for s in slide_ids],
        }
    )
    for model in models:
        columns = [f"{model}__{k}" for k in FEATURE_NAMES] + [f"{model}__fold", f"{model}__failed"]
        rows = per_model.get(model, {})
        block = pd.DataFrame([rows.get(s, {}) for s in slide_ids], columns=columns)
        absent = ~pd.Series([s in rows for s in slide_ids])
        block.loc[absent, f"{model}__fold"] = -1
        block.loc[absent, f"{model}__failed"] = 1
        block[f"{model}__fold"] = block[f"{model}__fold"].astype("int64")
        block[f"{model}__failed"] = block[f"{model}__failed"].astype("int64")
        table = pd.concat([table, block], axis=1)
    table["label"] = table["label"].astype("float64")
    return table


def write_features(path: str | Path, table: pd.DataFrame, fingerprint_: str = "") -> None:
    """Write ``table`` as parquet atomically, with the input fingerprint in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[_META_KEY] = json.dumps({"fingerprint": fingerprint_}).encode()
    with atomic_path(path) as tmp:
        pq.write_table(arrow.replace_schema_metadata(meta), tmp)


def stored_fingerprint(path: str | Path) -> str | None:
    """The fingerprint a features file was written with, or None if absent or unreadable."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[_META_KEY])["fingerprint"]
    except (OSError, KeyError, ValueError):
        return None


def build_features(
    heatmap_dirs: Sequence[str | Path], out: str | Path, force: bool = False, executor: Executor | None = None
) -> bool:
    """Write the features table of ``heatmap_dirs`` to ``out``; False if it was already current.
    Each slide's features are one task on ``executor`` (default: in process)."""
    models = model_dirs(heatmap_dirs)
    digest = fingerprint(models)
    if not force and Path(out).is_file() and stored_fingerprint(out) == digest:
        return False
    write_features(out, features_table(models, executor), digest)
    return True
