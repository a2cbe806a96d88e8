"""The patch index: labelled, sampled patches of every slide, as one table on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path
from helpkit.progress import track
from helpkit.slide.annotation import AnnotationMask, exclude_cells, read_annotation
from helpkit.slide.defaults import MIN_TISSUE, TUMOUR_THRESHOLD
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.grid import grid_for, patch_table
from helpkit.slide.reader import SlideReader
from helpkit.slide.sampling import label_patches, sample_patches
from helpkit.slide.tissue import tissue_mask

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


def index_slide(
    path: str | Path, mask_path: str | Path | None = None, slide_label: int = -1, config: IndexConfig = IndexConfig()
) -> SlideIndex:
    """Tissue mask, grid, fractions, labels and sampling for one slide.

    A negative slide (``slide_label`` 0) without a mask has no tumour anywhere; a slide of
    unknown label without a mask keeps its tissue patches with label -1; a positive slide
    needs its mask. Patches touching an annotation's exclusion regions are ambiguous (-1).
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
        grid = grid_for(reader, config.geometry)
        cells = patch_table(grid, tissue_mask(reader, config.geometry.tissue_mpp), tumour)
        slide_id = reader.slide_id
    labelled = label_patches(exclude_cells(cells, grid, exclusion), config.tumour_threshold, config.min_tissue)
    counts = labelled["label"].value_counts()
    sampled = sample_patches(
        labelled, slide_id=slide_id, max_per_class=config.max_per_class, balance=config.balance,
        annotated=tumour is not None, seed=config.seed,
    )
    patches = sampled.assign(
        slide_id=slide_id, path=str(path), slide_label=np.int8(slide_label), **config.geometry.to_dict(),
    )[INDEX_COLUMNS].reset_index(drop=True)
    return SlideIndex(
        patches=patches,
        n_tissue=len(labelled),
        n_tumour=int(counts.get(1, 0)),
        n_normal=int(counts.get(0, 0)),
        n_ambiguous=int(counts.get(-1, 0)) if tumour is not None else 0,
    )


def index_dataset(slides: pd.DataFrame, config: IndexConfig = IndexConfig(), progress: bool = True) -> DatasetIndex:
    """Index every slide record (as from ``helpkit.data.discover``); a slide that fails is
    recorded in ``failures`` and the rest go on."""
    parts, rows, failures = [], [], []
    records = slides.to_dict("records")
    for record in track(records, "indexing slides") if progress else records:
        try:
            result = index_slide(record["path"], record["mask_path"], int(record["label"]), config)
        except HelpkitError as err:
            failures.append((record["slide_id"], str(err)))
            continue
        parts.append(result.patches)
        rows.append({"slide_id": record["slide_id"], "split": record["split"], "label": record["label"],
                     "tissue": result.n_tissue, "tumour": result.n_tumour, "normal": result.n_normal,
                     "ambiguous": result.n_ambiguous, "sampled": len(result.patches)})
    patches = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INDEX_COLUMNS)
    return DatasetIndex(patches, pd.DataFrame(rows), failures)


def write_index(patches: pd.DataFrame, path: str | Path) -> Path:
    """Write the patch index atomically: parquet, or CSV when ``path`` ends in .csv."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            patches.to_csv(tmp, index=False)
        else:
            patches.to_parquet(tmp, index=False)
    return path
