"""The patch index: labelled, sampled patches of every slide, as one table on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path, file_identity, remove_stale_temps
from helpkit.slide.annotation import AnnotationMask, exclude_cells, read_annotation
from helpkit.slide.slide_defaults import MIN_TISSUE, TUMOUR_THRESHOLD
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.grid import grid_for, patch_table
from helpkit.slide.reader import SlideReader
from helpkit.slide.sampling import label_patches, sample_patches
from helpkit.slide.tissue import tissue_mask
from helpkit.slidemap import Executor, map_slides

GEOMETRY_COLUMNS = ["mpp", "patch_size", "stride", "tissue_mpp"]
"""The PatchGeometry of every row (one value each in an index): what training reads back."""

INDEX_COLUMNS = [
    "slide_id", "path", "slide_label", *GEOMETRY_COLUMNS, "row", "col", "x", "y",
    "tissue_frac", "tumour_frac", "label",
]


def index_geometry(index: pd.DataFrame, source: str | Path = "patch index") -> PatchGeometry:
    """The geometry an index was made with; a HelpkitError if it lacks or mixes geometries."""
    absent = [c for c in GEOMETRY_COLUMNS if c not in index.columns]
    if absent:
        raise HelpkitError(f"patch index lacks the geometry columns {absent} (made by an older helpkit? "
                           "index again)", source)
    values = {}
    for column in GEOMETRY_COLUMNS:
        unique = index[column].unique()
        if len(unique) != 1:
            raise HelpkitError(f"patch index mixes {column} values {sorted(unique)}; one run trains one", source)
        values[column] = unique[0].item() if hasattr(unique[0], "item") else unique[0]
    return PatchGeometry.from_dict(values)


@dataclass(frozen=True)
class IndexConfig:
    """How patches are laid out, labelled and sampled."""

    geometry: PatchGeometry = PatchGeometry()
    tumour_threshold: float = TUMOUR_THRESHOLD
    min_tissue: float = MIN_TISSUE
    max_per_class: int | None = None
    balance: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.tumour_threshold <= 1:
            raise HelpkitError(f"tumour threshold must be above 0 and at most 1, got {self.tumour_threshold:g}")
        if not 0 <= self.min_tissue <= 1:
            raise HelpkitError(f"minimum tissue share must be between 0 and 1, got {self.min_tissue:g}")


@dataclass(frozen=True)
class SlideIndex:
    """One slide's sampled patches and its counts before sampling."""

    patches: pd.DataFrame
    n_tissue: int
    n_tumour: int
    n_normal: int
    n_ambiguous: int


@dataclass
class DatasetIndex:
    """Every slide's patches, per-slide counts, and the slides that failed (slide_id, error)."""

    patches: pd.DataFrame
    summary: pd.DataFrame
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class SlideCells:
    """A slide's grid cells before labelling (``patch_table`` rows), its id, and whether its
    tumour is known (annotated, or a negative slide)."""

    cells: pd.DataFrame
    slide_id: str
    annotated: bool


def slide_cells(
    path: str | Path, mask_path: str | Path | None = None, slide_label: int = -1,
    geometry: PatchGeometry = PatchGeometry(),
) -> SlideCells:
    """Tissue mask, grid and tumour fractions of one slide: what ``index_slide`` labels and
    samples, and what hard-negative mining (``helpkit.train.hard_negatives``) labels again.

    A negative slide (``slide_label`` 0) without a mask has no tumour anywhere; a slide of
    unknown label without a mask has ``tumour_frac`` NaN (label -1); a positive slide needs
    its mask. Cells touching an annotation's exclusion regions get ``tumour_frac`` NaN too.
    """
    with SlideReader(path) as reader:
        exclusion = None
        if mask_path is not None:  # a PNG mask, ASAP XML or GeoJSON (helpkit.slide.annotation)
            tumour, exclusion = read_annotation(mask_path, reader.dimensions).masks()
        elif slide_label == 0:
            tumour = AnnotationMask(np.zeros((1, 1), dtype=bool), tuple(map(float, reader.dimensions)))
        elif slide_label == 1:
            raise HelpkitError("positive slide has no tumour mask", path)
        else:
            tumour = None
        grid = grid_for(reader, geometry)
        cells = patch_table(grid, tissue_mask(reader, geometry.tissue_mpp), tumour)
        slide_id = reader.slide_id
    return SlideCells(exclude_cells(cells, grid, exclusion), slide_id, tumour is not None)


def index_slide(
    path: str | Path, mask_path: str | Path | None = None, slide_label: int = -1, config: IndexConfig = IndexConfig()
) -> SlideIndex:
    """Tissue mask, grid, fractions (``slide_cells``), labels and sampling for one slide.

    Patches touching an annotation's exclusion regions are ambiguous (-1).
    """
    found = slide_cells(path, mask_path, slide_label, config.geometry)
    labelled = label_patches(found.cells, config.tumour_threshold, config.min_tissue)
    counts = labelled["label"].value_counts()
    sampled = sample_patches(
        labelled, slide_id=found.slide_id, max_per_class=config.max_per_class, balance=config.balance,
        annotated=found.annotated, seed=config.seed,
    )
    patches = sampled.assign(
        slide_id=found.slide_id, path=str(path), slide_label=np.int8(slide_label), **config.geometry.to_dict(),
    )[INDEX_COLUMNS].reset_index(drop=True)
    return SlideIndex(
        patches=patches,
        n_tissue=len(labelled),
        n_tumour=int(counts.get(1, 0)),
        n_normal=int(counts.get(0, 0)),
        n_ambiguous=int(counts.get(-1, 0)) if found.annotated else 0,
    )


def index_dataset(
    slides: pd.DataFrame, config: IndexConfig = IndexConfig(), progress: bool = True,
    executor: Executor | None = None, parts_dir: str | Path | None = None,
) -> DatasetIndex:
    """Index every slide record (as from ``helpkit.data.discover``); a slide that fails is
    recorded in ``failures`` and the rest go on.

    One ``helpkit.slidemap.map_slides`` task per slide on ``executor`` (default: in process).
    With ``parts_dir`` each slide's patches are written there as ``<slide_id>.parquet``
    (atomically, keyed by the slide and mask files and the config), so a rerun reads what is
    done and a killed run resumes; a cluster needs it (its results come back as files).
    """
    executor = executor or Executor()
    if parts_dir is None and not executor.in_process:
        raise HelpkitError("indexing on a cluster needs a parts folder (the workers write each slide's patches there)")
    if parts_dir is not None:
        remove_stale_temps(parts_dir)  # what a killed run was writing
    records = slides.to_dict("records")
    job = SlideIndexJob(config, None if parts_dir is None else str(parts_dir))
    results = map_slides(job, records, [str(r["slide_id"]) for r in records], executor,
                         description="indexing slides", progress=progress)
    parts, rows, failures = [], [], []
    for record in records:
        result = results[str(record["slide_id"])]
        if "error" in result:
            failures.append((record["slide_id"], result["error"]))
            continue
        patches = result["patches"] if "patches" in result else pd.read_parquet(result["path"])
        parts.append(patches)
        rows.append({"slide_id": record["slide_id"], "split": record["split"], "label": record["label"],
                     **result["counts"], "sampled": len(patches)})
    patches = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INDEX_COLUMNS)
    return DatasetIndex(patches, pd.DataFrame(rows), failures)


_PART_META = b"helpkit.index_part"


@dataclass(frozen=True)
class SlideIndexJob:
    """The per-slide job of ``index_dataset``: a slide record in; ``{"counts", "path"}`` (its part
    file) or, without a parts folder, ``{"counts", "patches"}``; ``{"error"}`` when it fails."""

    config: IndexConfig
    parts_dir: str | None = None

    def key(self, record: dict[str, Any]) -> str:
        """What a slide's part is made from: slide and mask files, label and index config."""
        parts = {
            "slide": file_identity(record["path"]),
            "mask": None if record["mask_path"] is None else file_identity(record["mask_path"]),
            "record": [str(record["slide_id"]), str(record["path"]), int(record["label"])],
            "config": {**self.config.__dict__, "geometry": self.config.geometry.to_dict()},
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = None if self.parts_dir is None else Path(self.parts_dir) / f"{record['slide_id']}.parquet"
        key = self.key(record) if part is not None else ""
        if part is not None and part.is_file():
            try:
                meta = json.loads((pq.read_schema(part).metadata or {})[_PART_META])
                if meta["key"] == key:
                    return {"counts": meta["counts"], "path": str(part)}
            except (OSError, KeyError, ValueError, pa.ArrowException):
                pass  # unreadable or from other inputs: index again
        try:
            result = index_slide(record["path"], record["mask_path"], int(record["label"]), self.config)
        except HelpkitError as err:
            return {"error": str(err)}
        counts = {"tissue": result.n_tissue, "tumour": result.n_tumour, "normal": result.n_normal,
                  "ambiguous": result.n_ambiguous}
        if part is None:
            return {"counts": counts, "patches": result.patches}
        table = pa.Table.from_pandas(result.patches, preserve_index=False)
        meta = {**(table.schema.metadata or {}), _PART_META: json.dumps({"key": key, "counts": counts}).encode()}
        with atomic_path(part) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        return {"counts": counts, "path": str(part)}


def write_index(patches: pd.DataFrame, path: str | Path) -> Path:
    """Write the patch index atomically: parquet, or CSV when ``path`` ends in .csv."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            patches.to_csv(tmp, index=False)
        else:
            patches.to_parquet(tmp, index=False)
    return path
