"""A run's stain normalisation: ``stain.json`` in the run folder and the normalising patch source.

``run_stains`` estimates each training slide's stain statistics once (tissue mask at the
index's tissue resolution, ``helpkit.slide.stain_normalise.slide_stains``), fits the reference
on them and writes ``RUN_DIR/stain.json`` (method, reference, per-slide statistics); a resumed
run reads it back instead. ``NormalisedPatches`` wraps a patch source (cache or slides) so every
patch reaches augmentation and the model already in the reference look. A slide whose stains
cannot be estimated (too little tissue, unreadable) is logged and left as scanned.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.slide.stain_normalise import StainStats, check_method, fit_reference, normalise, slide_stains

if TYPE_CHECKING:
    from helpkit.slide.reader import SlideReader
    from helpkit.slide.tissue import TissueMask
    from helpkit.train.dataset import PatchSource

STAIN_FILE = "stain.json"

log = logging.getLogger("helpkit.train")


@dataclass(frozen=True)
class RunStains:
    """A run's normalisation: the method, the reference and each slide's statistics (None:
    not estimable, its patches are left as scanned; ``errors`` says why)."""

    method: str
    reference: StainStats
    slides: dict[str, StainStats | None]
    errors: dict[str, str]

    def to_dict(self) -> dict:
        """The ``stain.json`` form (slides sorted by id)."""
        return {"method": self.method, "reference": self.reference.to_dict(),
                "slides": {k: None if s is None else s.to_dict() for k, s in sorted(self.slides.items())},
                "errors": dict(sorted(self.errors.items()))}


def read_run_stains(run_dir: str | Path) -> RunStains | None:
    """``run_dir/stain.json`` read back, or None when the run has none (no normalisation)."""
    path = Path(run_dir) / STAIN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return RunStains(
            method=str(data["method"]),
            reference=StainStats.from_dict(data["reference"], path),
            slides={str(k): None if v is None else StainStats.from_dict(v, path) for k, v in data["slides"].items()},
            errors={str(k): str(v) for k, v in data.get("errors", {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise HelpkitError(f"malformed stain normalisation file ({err!r}); delete it to estimate again", path) from err


def estimate_slide(path: str | Path, method: str, tissue_mpp: float) -> StainStats:
    """One slide's statistics: its tissue mask at ``tissue_mpp``, then ``slide_stains``."""
    from helpkit.slide import SlideReader, tissue_mask

    with SlideReader(path) as reader:
        return slide_stains(reader, tissue_mask(reader, tissue_mpp), method)


def run_stains(index: pd.DataFrame, run_dir: str | Path, method: str, tissue_mpp: float) -> RunStains:
    """The run's normalisation: ``stain.json`` when it is there (resume: ``train_run`` has already
    refused a run folder trained with another ``normalise``), else estimated from the index's
    slides (``slide_id``, ``path``), the reference fitted on them and written."""
    check_method(method)
    run_dir = Path(run_dir)
    old = read_run_stains(run_dir)
    if old is not None:
        return old
    paths = index.groupby(index["slide_id"].astype(str))["path"].first()
    slides: dict[str, StainStats | None] = {}
    errors: dict[str, str] = {}
    started = time.monotonic()
    for slide_id, path in paths.items():
        try:
            slides[slide_id] = estimate_slide(path, method, tissue_mpp)
        except HelpkitError as err:
            slides[slide_id], errors[slide_id] = None, str(err)
            log.warning("%s: stains not estimated, its patches are left as scanned: %s", slide_id, err)
    known = [s for s in slides.values() if s is not None]
    if not known:
        raise HelpkitError(f"no slide's stains could be estimated for {method} normalisation "
                           f"(first error: {next(iter(errors.values()), 'no slides')})", run_dir)
    log.info("%s stain statistics of %d slides in %.1f s", method, len(slides), time.monotonic() - started)
    stains = RunStains(method, fit_reference(known), slides, errors)
    write_json(run_dir / STAIN_FILE, stains.to_dict())
    return stains


class NormalisedPatches:
    """A PatchSource whose patches come out in the reference look: each with its slide's statistics."""

    def __init__(self, source: PatchSource, slide_ids: np.ndarray, stains: RunStains) -> None:
        self.source = source
        self.patch_size = source.patch_size
        names, self._slide_of_row = np.unique(np.asarray(slide_ids).astype(str), return_inverse=True)
        self._stats = [stains.slides.get(name) for name in names]
        self._reference = stains.reference

    @property
    def failures(self) -> int:
        """Failed reads the wrapped source counted (slides read directly)."""
        return getattr(self.source, "failures", 0)

    @property
    def fatal(self) -> HelpkitError | None:
        """The wrapped source's fatal error, if any (TensorFlow wraps what ``read`` raises)."""
        return getattr(self.source, "fatal", None)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(patches, ok) of ``rows`` from the wrapped source, normalised slide by slide."""
        patches, ok = self.source.read(rows)
        patches = np.array(patches)  # a writable copy (the cache hands out memory-mapped data)
        slide = self._slide_of_row[rows]
        for code in np.unique(slide):
            stats = self._stats[code]
            if stats is not None:
                at = slide == code
                patches[at] = normalise(patches[at], stats, self._reference)
        return patches, ok


def slide_stains_or_none(reader: SlideReader, mask: TissueMask, method: str) -> StainStats | None:
    """A slide's statistics at inference, or None (logged: its patches are left as scanned, as
    in training) when they cannot be estimated."""
    try:
        return slide_stains(reader, mask, method)
    except HelpkitError as err:
        log.warning("%s: stains not estimated, its patches are left as scanned: %s", reader.slide_id, err)
        return None
