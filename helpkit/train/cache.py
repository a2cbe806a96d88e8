"""On-disk patch cache: every index patch read once into a memory-mapped uint8 array.

Reading patches from slides costs more than a small CNN's training step; the reference
team cached patches and trained much faster. The cache lives in a folder named by a hash
of the index rows it holds and the side read (a margin for random rescale), so a changed
index or read size never reuses other patches, and it is written atomically (a killed build
leaves no half-written cache behind).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.io import atomic_path, remove_stale_temps, write_json
from helpkit.progress import track
from helpkit.train.dataset import SlidePatches, check_index

CHUNK = 512
"""Patches read per step while building the cache (bounds memory, drives the progress bar)."""


def index_key(index: pd.DataFrame) -> str:
    """A short hash of what identifies each patch: slide path, resolution, size and position."""
    keyed = index[["path", "mpp", "patch_size", "x", "y"]].astype(str).agg("|".join, axis=1)
    return hashlib.sha1("\n".join(keyed).encode("utf-8")).hexdigest()[:16]


def cache_key(index: pd.DataFrame, read_size: int) -> str:
    """The cache folder's name: ``index_key``, plus the read size when it is not the index's patch size."""
    key = index_key(index)
    return key if read_size == int(index["patch_size"].iloc[0]) else f"{key}-read{read_size}"


@dataclass
class PatchCache:
    """Patches of an index in index row order, memory-mapped; ``ok`` marks reads that worked."""

    path: Path
    patches: np.ndarray
    ok: np.ndarray

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[1])

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(patches, ok) for index rows ``rows``."""
        return self.patches[rows], self.ok[rows]


def open_cache(index: pd.DataFrame, cache_dir: str | Path, progress: bool = True,
               read_size: int | None = None) -> PatchCache:
    """The cache of ``index`` under ``cache_dir``, built first if absent; patches of ``read_size``
    (default: the index's patch size) on each patch's centre, as ``SlidePatches`` reads them.

    Failed reads while building are skipped and counted like in training (too many is a
    HelpkitError); their rows are stored with ``ok`` False.
    """
    read_size = check_index(index).patch_size if read_size is None else read_size
    folder = Path(cache_dir) / cache_key(index, read_size)
    if Path(cache_dir).is_dir():  # a build killed mid-way left a cache-sized .patches.*.tmp.npy
        for sub in sorted(p for p in Path(cache_dir).iterdir() if p.is_dir()):
            remove_stale_temps(sub)
    patches_path, ok_path = folder / "patches.npy", folder / "ok.npy"
    if not ok_path.is_file():
        source = SlidePatches(index, read_size=read_size)
        p = source.patch_size
        ok = np.zeros(len(index), bool)
        starts = range(0, len(index), CHUNK)
        try:
            with atomic_path(patches_path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(index), p, p, 3))
                for start in track(starts, "caching patches") if progress else starts:
                    rows = np.arange(start, min(start + CHUNK, len(index)))
                    out[rows], ok[rows] = source.read(rows)
                out.flush()
                del out
        finally:
            source.close()
        write_json(folder / "cache.json", {"rows": len(index), "patch_size": p, "failed": int((~ok).sum())})
        with atomic_path(ok_path) as tmp:  # written last: its presence marks a complete cache
            np.save(tmp, ok)
    return PatchCache(folder, np.load(patches_path, mmap_mode="r"), np.load(ok_path))
