"""Pyramidal tiled JPEG TIFF, written tile by tile so memory stays bounded.

OpenSlide reads these as "generic-tiff" and reports ``openslide.mpp-x``/``-y`` from the
XResolution/YResolution tags when ResolutionUnit is centimetre (checked in the tests).
Tiles are JPEG-encoded here, with the parameters tifffile itself would use, so constant
tiles (glass, non-scanned margin) are encoded once and their bytes reused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from helpkit.io import atomic_path

TILE = 256
JPEG_QUALITY = 90
_SUBSAMPLING = (2, 2)

RenderTile = Callable[[float, int, int], np.ndarray]
"""(level downsample, level-0 x, level-0 y) -> (TILE, TILE, 3) uint8 RGB."""

ConstantTile = Callable[[float, int, int], Hashable | None]
"""(level downsample, level-0 x, level-0 y) -> key of a constant tile, or None to render."""


def pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of each level: halve until the level fits in one tile."""
    shapes = [(width, height)]
    while max(shapes[-1]) > TILE:
        w, h = shapes[-1]
        shapes.append((max(1, w // 2), max(1, h // 2)))
    return shapes


def encode(tile: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of one RGB tile, stored as YCbCr 4:2:0 like tifffile's own encoder."""
    return imagecodecs.jpeg8_encode(
        np.ascontiguousarray(tile),
        level=quality,
        colorspace="RGB",
        outcolorspace="YCBCR",
        subsampling=_SUBSAMPLING,
    )


def _result(item: Future[bytes] | bytes) -> bytes:
    return item if isinstance(item, bytes) else item.result()


def write_pyramid(
    path: str | Path,
    width: int,
    height: int,
    mpp: float,
    render: RenderTile,
    constant: ConstantTile,
    constants: dict[Hashable, np.ndarray],
    workers: int = 2,
    jpeg_quality: int = JPEG_QUALITY,
) -> None:
    """Write the pyramid atomically; tiles come from ``render`` unless ``constant`` names one.

    ``workers`` threads render and encode tiles (numpy and libjpeg release the GIL);
    the output bytes do not depend on it. Tiles are JPEG at ``jpeg_quality`` (1-100).
    """
    encoded = {key: encode(tile, jpeg_quality) for key, tile in constants.items()}

    def job(ds: float, x0: int, y0: int) -> bytes:
        return encode(render(ds, x0, y0), jpeg_quality)

    def tiles(pool: ThreadPoolExecutor, w: int, h: int, ds: float) -> Iterator[bytes]:
        # a bounded window of tiles in flight keeps memory flat and output in order
        pending: deque[Future[bytes] | bytes] = deque()
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                x0, y0 = int(tx * ds), int(ty * ds)
                key = constant(ds, x0, y0)
                pending.append(encoded[key] if key is not None else pool.submit(job, ds, x0, y0))
                while len(pending) > 4 * workers:
                    yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())

    with (
        atomic_path(path) as tmp,
        tifffile.TiffWriter(tmp, bigtiff=True) as tif,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        for level, (w, h) in enumerate(pyramid_shapes(width, height)):
            ds = float(2**level)
            pixels_per_cm = 1e4 / (mpp * ds)
            tif.write(
                tiles(pool, w, h, ds),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": jpeg_quality},
                subsampling=_SUBSAMPLING,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                software="helpkit.synth",
            )
