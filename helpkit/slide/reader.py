"""SlideReader: a narrow, numpy-returning view of a whole-slide image over OpenSlide.

Modelled on openslide-python and TIAToolbox's readers, reduced to what helpkit needs:
geometry, microns per pixel, scanned bounds and RGB regions. Every OpenSlide failure
becomes a HelpkitError naming the slide (and the region, for read errors), so callers can
skip or count bad slides and tiles instead of crashing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
import openslide

from helpkit.errors import HelpkitError
from helpkit.slide.geometry import FALLBACK_MPP, MPP_TOLERANCE

SLIDE_EXTENSIONS = frozenset(
    {".mrxs", ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".bif", ".dcm",
     ".svslide", ".czi"}
)
"""File suffixes (lower case) of the formats OpenSlide opens."""

MAX_LEVEL_PIXELS = 1 << 28
"""``read_level`` refuses levels larger than this (about 800 MB of RGB)."""


log = logging.getLogger("helpkit.slide")
_FALLBACK_SAID: set[Path] = set()
"""Slides already logged as using FALLBACK_MPP: the line is said once per slide, not per read."""


def resize_area(region: np.ndarray, box: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """Area-average the top-left ``box`` (w, h, in ``region`` pixels, fractional) of ``region`` to ``size`` (w, h)."""
    from PIL import Image

    image = Image.fromarray(region).resize(size, Image.Resampling.BOX, box=(0.0, 0.0, box[0], box[1]))
    return np.asarray(image)


def is_slide_file(path: Path) -> bool:
    """True for a visible regular file whose suffix is a format OpenSlide opens."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in SLIDE_EXTENSIONS


def dicom_folder_file(folder: Path) -> Path | None:
    """The first visible ``.dcm`` file by name directly in ``folder`` (None if it has none): what
    OpenSlide is given to open a multi-file DICOM slide kept in a folder; it reads the rest of
    the series (same Series Instance UID) from the files beside it."""
    if not folder.is_dir():
        return None
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and is_slide_file(p)),
                   key=lambda p: p.name)
    return files[0] if files else None


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite an (H, W, 4) RGBA uint8 array over white: transparent pixels become white."""
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.uint16)
    # Integer "over white": rgb * a / 255 + 255 * (1 - a / 255), rounded.
    out = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class SlideReader:
    """A whole-slide image opened with OpenSlide.

    Thread-safe (OpenSlide is); do not share one across forked processes. Pickling sends
    only the path, so a worker process that unpickles it opens its own handle.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.slide_id = self.path.name if self.path.is_dir() else self.path.stem  # a folder: DICOM
        self._lock = threading.Lock()
        self._slide = self._open()
        slide = self._slide
        self.properties: Mapping[str, str] = dict(slide.properties)
        self.dimensions: tuple[int, int] = tuple(slide.dimensions)  # type: ignore[assignment]
        self.level_count: int = slide.level_count
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            tuple(d) for d in slide.level_dimensions  # type: ignore[misc]
        )
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in slide.level_downsamples)
        self.mpp = self._pair(openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y, float)
        self.bounds = self._bounds()

    def _open(self) -> openslide.OpenSlide:
        if not self.path.exists():
            raise HelpkitError("slide file not found", self.path)
        target = dicom_folder_file(self.path) if self.path.is_dir() else self.path
        if target is None:
            raise HelpkitError("not a slide: a folder is one only when it holds a DICOM series (.dcm files)",
                               self.path)
        try:
            return openslide.OpenSlide(target)
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise HelpkitError("not a slide OpenSlide can open (unsupported or damaged file)", self.path) from err
        except (openslide.OpenSlideError, OSError) as err:
            raise HelpkitError(f"cannot open slide ({err})", self.path) from err

    def _pair(self, key_x: str, key_y: str, kind: type) -> tuple | None:
        try:
            return kind(self.properties[key_x]), kind(self.properties[key_y])
        except (KeyError, ValueError):
            return None

    def _bounds(self) -> tuple[int, int, int, int] | None:
        origin = self._pair(openslide.PROPERTY_NAME_BOUNDS_X, openslide.PROPERTY_NAME_BOUNDS_Y, int)
        size = self._pair(openslide.PROPERTY_NAME_BOUNDS_WIDTH, openslide.PROPERTY_NAME_BOUNDS_HEIGHT, int)
        if origin is None or size is None:
            return None
        return origin[0], origin[1], size[0], size[1]

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read an (h, w, 3) uint8 RGB region; ``location`` is the level-0 (x, y) top-left.

        Areas outside the slide or transparent in it come back white. A read error (a
        corrupt tile) raises HelpkitError naming the slide and the region; the reader
        reopens its handle (OpenSlide handles stay broken after an error), so later reads
        of good regions still work.
        """
        if not 0 <= level < self.level_count:
            raise HelpkitError(f"level {level} out of range 0..{self.level_count - 1}", self.path)
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise HelpkitError(f"region size must be positive, got {w}x{h}", self.path)
        x, y = int(location[0]), int(location[1])
        try:
            image = self._slide.read_region((x, y), level, (w, h))
        except openslide.OpenSlideError as err:
            # Swap in a fresh handle rather than closing the broken one: another thread may
            # still be inside a call on it; the old handle closes when garbage-collected.
            with self._lock:
                self._slide = self._open()
            raise HelpkitError(
                f"cannot read region x={x} y={y} level={level} size={w}x{h} ({err})", self.path
            ) from err
        return rgba_to_rgb(np.asarray(image))

    def read_level(self, level: int) -> np.ndarray:
        """The whole of a (low-resolution) level as RGB; refuses levels too large for memory."""
        if not 0 <= level < self.level_count:
            raise HelpkitError(f"level {level} out of range 0..{self.level_count - 1}", self.path)
        w, h = self.level_dimensions[level]
        if w * h > MAX_LEVEL_PIXELS:
            raise HelpkitError(
                f"level {level} is {w}x{h} pixels, too large to read whole; the slide needs a "
                "lower-resolution level",
                self.path,
            )
        return self.read_region((0, 0), level, (w, h))

    @property
    def base_mpp(self) -> float:
        """Level-0 microns per pixel (the mean of x and y), or FALLBACK_MPP, logged once per
        slide, when the slide does not say."""
        if self.mpp is not None and all(math.isfinite(v) and v > 0 for v in self.mpp):
            return (self.mpp[0] + self.mpp[1]) / 2
        if self.path not in _FALLBACK_SAID:
            _FALLBACK_SAID.add(self.path)
            log.warning("%s: the slide gives no microns per pixel; assuming %g um/px at level 0 (FALLBACK_MPP)",
                        self.path, FALLBACK_MPP)
        return FALLBACK_MPP

    def level_for_mpp(self, mpp: float) -> tuple[int, float]:
        """(level, scale): the coarsest level at or finer than ``mpp`` (within MPP_TOLERANCE) and
        how many of its pixels make one pixel at ``mpp``; scale 1.0 when the level matches."""
        downsample = mpp / self.base_mpp
        level = self.best_level_for_downsample(downsample * (1 + MPP_TOLERANCE))
        scale = downsample / self.level_downsamples[level]
        return level, 1.0 if abs(scale - 1) <= MPP_TOLERANCE else scale

    def read_region_mpp(self, location: tuple[int, int], mpp: float, size: tuple[int, int]) -> np.ndarray:
        """Read an (h, w, 3) uint8 RGB region of ``size`` pixels at ``mpp`` microns per pixel;
        ``location`` is the level-0 (x, y) top-left.

        Reads the level :meth:`level_for_mpp` picks; when it does not match ``mpp`` the
        region is read there and area-averaged down to ``size``. Training and heatmaps read
        every resized patch through this one method, so both see the same pixels.
        """
        level, scale = self.level_for_mpp(mpp)
        if scale == 1.0:
            return self.read_region(location, level, size)
        w, h = int(size[0]), int(size[1])
        box = (w * scale, h * scale)
        region = self.read_region(location, level, (math.ceil(box[0]), math.ceil(box[1])))
        return resize_area(region, box, (w, h))

    def best_level_for_downsample(self, downsample: float) -> int:
        """The level with the largest downsample not above ``downsample`` (level 0 if none)."""
        return int(self._slide.get_best_level_for_downsample(downsample))

    def close(self) -> None:
        """Release the OpenSlide handle."""
        self._slide.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[type[SlideReader], tuple[Path]]:
        return SlideReader, (self.path,)

    def __repr__(self) -> str:
        return f"SlideReader({str(self.path)!r}, dimensions={self.dimensions}, levels={self.level_count})"
