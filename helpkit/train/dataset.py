"""The tf.data input pipeline: patches from slides (threaded readers) or from the cache.

A *source* turns index row numbers into uint8 patches plus an ``ok`` flag per patch
(``SlidePatches`` reads slides; ``helpkit.train.cache.PatchCache`` reads a memory-mapped
array). ``patch_dataset`` shuffles row numbers, batches them, reads each batch in one call
(so per-patch Python overhead is paid once per batch), drops failed patches, adds class
weights, augments with per-batch stateless seeds and prefetches.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import pandas as pd
import tensorflow as tf

from helpkit.errors import HelpkitError
from helpkit.slide import SlideReader
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.index import index_geometry
from helpkit.train.augment import AugmentConfig, augment, center_crop

MAX_FAILED_FRACTION = 0.05
"""Failed patch reads are skipped and counted; more than this share of the index is fatal."""

READ_THREADS = 8
"""Threads reading one batch from slides (OpenSlide releases the GIL while decoding)."""


class PatchSource(Protocol):
    """Reads patches by index row number."""

    patch_size: int

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(patches uint8 (n, P, P, 3), ok bool (n,)) for index rows ``rows``."""
        ...


def check_index(index: pd.DataFrame, source: str = "patch index") -> PatchGeometry:
    """The index's patch geometry; a HelpkitError if the index is empty or mixes geometries."""
    if index.empty:
        raise HelpkitError("patch index is empty: no patches to train on", source)
    return index_geometry(index, source)


class SlidePatches:
    """Reads index rows straight from slides, one SlideReader per slide, shared by threads.

    A patch that fails to read (a slide that does not open, a corrupt tile) comes back
    white with ``ok`` False and is counted; once failures exceed ``max_failed_fraction``
    of the index, ``read`` raises a HelpkitError (kept in ``fatal`` too, because TensorFlow
    wraps exceptions raised inside the pipeline). ``read_size`` (default: the index's patch
    size) reads a larger square on the same centre: the margin random rescale zooms within.
    """

    def __init__(self, index: pd.DataFrame, max_failed_fraction: float = MAX_FAILED_FRACTION,
                 threads: int = READ_THREADS, read_size: int | None = None) -> None:
        geometry = check_index(index)
        self.paths = index["path"].astype(str).to_numpy()
        self.xy = index[["x", "y"]].to_numpy(np.int64)
        self.mpp = geometry.mpp
        self.patch_size = read_size or geometry.patch_size
        self.margin = (self.patch_size - geometry.patch_size) / 2  # pixels at mpp beyond each side
        self.max_failures = int(max_failed_fraction * len(index))
        self.failures = 0
        self.last_error = ""
        self.fatal: HelpkitError | None = None
        self._readers: dict[str, SlideReader | HelpkitError] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="helpkit-read")

    def _reader(self, path: str) -> SlideReader:
        with self._lock:  # opened once per slide, then reused by every thread
            if path not in self._readers:
                try:
                    self._readers[path] = SlideReader(path)
                except HelpkitError as err:
                    self._readers[path] = err
            reader = self._readers[path]
        if isinstance(reader, HelpkitError):
            raise reader
        return reader

    def _read_one(self, row: int) -> np.ndarray | None:
        p = self.patch_size
        try:
            reader = self._reader(self.paths[row])
            shift = round(self.margin * self.mpp / reader.base_mpp)  # level-0 pixels
            patch = reader.read_region_mpp(tuple(self.xy[row] - shift), self.mpp, (p, p))
        except HelpkitError as err:
            with self._lock:
                self.failures += 1
                self.last_error = str(err)
            return None
        return patch if patch.shape == (p, p, 3) else None

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read ``rows`` in parallel; failed patches are white with ``ok`` False."""
        p = self.patch_size
        out = np.full((len(rows), p, p, 3), 255, np.uint8)
        ok = np.zeros(len(rows), bool)
        for i, patch in enumerate(self._pool.map(self._read_one, rows)):
            if patch is not None:
                out[i], ok[i] = patch, True
        if self.failures > self.max_failures:
            self.fatal = HelpkitError(
                f"{self.failures} patch reads failed, more than {MAX_FAILED_FRACTION:.0%} of the "
                f"index ({self.max_failures}); last: {self.last_error}"
            )
            raise self.fatal
        return out, ok

    def close(self) -> None:
        """Close every slide and stop the reading threads."""
        self._pool.shutdown()
        for reader in self._readers.values():
            if isinstance(reader, SlideReader):
                reader.close()
        self._readers.clear()


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes count equally: n / (2 * n_class)."""
    n = len(labels)
    return {c: n / (2.0 * max(1, int((labels == c).sum()))) for c in (0, 1)}


def augment_seeds(seed: int) -> tf.data.Dataset:
    """The stateless seed (int64 shape [2]) of each training batch in turn: new every epoch, same for the same ``seed``."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def patch_dataset(
    source: PatchSource,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augmentation: AugmentConfig | None = AugmentConfig(),
    patch_size: int | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 patches, float labels (B, 1)[, class weights (B,)]).

    ``rows`` are the index rows to use and ``labels`` their 0/1 labels. With ``training``
    the rows are reshuffled every epoch (seeded), batches carry class weights and are
    augmented; otherwise the order is fixed and patches are left as read. Same seed, same
    batches. ``patch_size`` is the model's side (default: the source's); a source reading a
    margin around it (random rescale) is zoomed into it by the augmentation, else cropped.
    """
    rows = np.asarray(rows, np.int64)
    labels = np.asarray(labels, np.float32)
    p = source.patch_size
    weights = class_weights(labels)
    weight_of = np.where(labels == 1, weights[1], weights[0]).astype(np.float32)

    def load(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        images, ok = source.read(rows[positions])
        return images, labels[positions, None], weight_of[positions], ok

    def read_batch(positions: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images, y, w, ok = tf.numpy_function(load, [positions], [tf.uint8, tf.float32, tf.float32, tf.bool],
                                             stateful=True)
        images, y = tf.ensure_shape(images, (None, p, p, 3)), tf.ensure_shape(y, (None, 1))
        w, ok = tf.ensure_shape(w, (None,)), tf.ensure_shape(ok, (None,))
        return tf.boolean_mask(images, ok), tf.boolean_mask(y, ok), tf.boolean_mask(w, ok)

    ds = tf.data.Dataset.range(len(rows))
    if training:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(read_batch, num_parallel_calls=2, deterministic=True)
    size = patch_size or p
    if size != p and not (training and augmentation is not None):
        ds = ds.map(lambda x, y, w: (center_crop(x, size), y, w))
    if not training:
        return ds.map(lambda x, y, w: (x, y)).prefetch(tf.data.AUTOTUNE)
    if augmentation is not None:
        ds = tf.data.Dataset.zip(ds, augment_seeds(seed)).map(
            lambda batch, s: (augment(batch[0], s, augmentation, size), batch[1], batch[2]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)
