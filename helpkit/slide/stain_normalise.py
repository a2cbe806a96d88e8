"""Stain normalisation of H&E patches: Macenko (2009) and Reinhard (2001), by name.

Scanners and labs stain and image slides differently; a patch CNN trained on one look can fail
on another. Normalisation maps every slide's colour onto one reference look: each slide's
stain statistics (``StainStats``) are estimated once, from its tissue at the tissue mask's
resolution (``slide_stains``), never per patch, so a patch of pure stroma and one of pure
nuclei from the same slide get the same mapping. The reference is the median of the training
slides' statistics (``fit_reference``); ``normalise`` maps uint8 patches of a slide from its
statistics onto the reference, vectorised (numpy + scikit-image, no TensorFlow). Glass stays
white: Macenko maps zero optical density to zero; Reinhard is blended out below the tissue
optical density ``BETA``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from helpkit.errors import HelpkitError
from helpkit.slide.stain_spec import NORMALISERS

if TYPE_CHECKING:
    from helpkit.slide.reader import SlideReader
    from helpkit.slide.tissue import TissueMask

BACKGROUND = 255.0
"""Io, the transmitted light of glass: optical density is -ln((I + 1) / Io)."""

BETA = 0.15
"""Pixels whose optical-density magnitude (Euclidean norm over r, g, b: the paper's "OD
intensity") is below this are glass or too pale to show stain (Macenko's beta): left out of the
stain-vector fit; Reinhard fades out below it. The norm, not the reference code's every-channel
test, which drops pale eosin (its red OD is small) and tilts E towards H."""

ALPHA = 1.0
"""Percentile of the angles in the stain plane taken as the extreme (pure) stains (Macenko's alpha)."""

MAX_CONCENTRATION_PERCENTILE = 99.0
"""A stain's maximum concentration is this percentile of its concentrations (robust to outliers)."""

MIN_PIXELS = 500
"""Fewest usable tissue pixels a slide's stain statistics are estimated from."""

MAX_PIXELS = 200_000
"""``slide_stains`` estimates from an evenly spaced sample of at most this many tissue pixels."""

_OD = (-np.log((np.arange(256, dtype=np.float64) + 1) / BACKGROUND)).astype(np.float32)
"""Optical density of each uint8 level: a lookup instead of a logarithm per pixel."""


@dataclass(frozen=True)
class StainStats:
    """One slide's (or the reference's) stain statistics.

    macenko: ``stains`` are the H and E optical-density unit vectors (rows (r, g, b), H first)
    and ``max_concentrations`` their 99th-percentile concentrations; reinhard: ``mean`` and
    ``std`` of L, a, b over the tissue.
    """

    method: str
    stains: tuple[tuple[float, float, float], ...] = ()
    max_concentrations: tuple[float, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        shapes = {"macenko": (np.shape(self.stains), len(self.max_concentrations)) == ((2, 3), 2),
                  "reinhard": (len(self.mean), len(self.std)) == (3, 3)}
        if self.method not in shapes:
            raise HelpkitError(f"stain statistics of unknown method {self.method!r}: choose macenko or reinhard")
        if not shapes[self.method]:
            raise HelpkitError(f"{self.method} stain statistics with the wrong numbers: {self.to_dict()}")

    @property
    def matrix(self) -> np.ndarray:
        """Macenko: the (3, 2) stain matrix, columns H and E."""
        return np.asarray(self.stains, np.float64).T

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (lists of floats); ``from_dict`` reads it back."""
        return {key: value for key, value in asdict(self).items() if value != ()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> StainStats:
        """Statistics from ``to_dict``'s form; a HelpkitError naming ``source`` when malformed."""
        try:
            return cls(
                method=str(data["method"]),
                stains=tuple(tuple(float(v) for v in row) for row in data.get("stains", ())),
                max_concentrations=tuple(float(v) for v in data.get("max_concentrations", ())),
                mean=tuple(float(v) for v in data.get("mean", ())),
                std=tuple(float(v) for v in data.get("std", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise HelpkitError(f"malformed stain statistics ({err!r})", source) from err
        except HelpkitError as err:
            raise HelpkitError(err.message, source) from err


def check_method(method: str) -> None:
    """A one-line HelpkitError unless ``method`` is a normalisation other than none."""
    if method not in NORMALISERS or method == "none":
        raise HelpkitError(f"unknown stain normalisation {method!r}: choose macenko or reinhard")


def _too_few(n: int, what: str, source: str | Path | None) -> HelpkitError:
    return HelpkitError(f"too few tissue pixels to estimate stains: {n} {what}, need {MIN_PIXELS}", source)


def _macenko(pixels: np.ndarray, source: str | Path | None) -> StainStats:
    od = _OD[pixels].astype(np.float64)
    stained = od[np.linalg.norm(od, axis=1) >= BETA]
    if len(stained) < MIN_PIXELS:
        raise _too_few(len(stained), f"of {len(pixels)} with optical density above {BETA}", source)
    _, vectors = np.linalg.eigh(np.cov(stained.T))
    plane = vectors[:, [2, 1]]  # the two largest eigenvectors
    plane[:, 0] *= np.sign(plane[:, 0].sum())  # principal direction into positive OD
    projected = stained @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    extremes = [plane @ np.array([np.cos(a), np.sin(a)]) for a in np.percentile(angles, [ALPHA, 100 - ALPHA])]
    h, e = sorted(extremes, key=lambda v: -v[0])  # haematoxylin absorbs red more than eosin
    stains = np.stack([h / np.linalg.norm(h), e / np.linalg.norm(e)])
    concentrations = od @ np.linalg.pinv(stains.T).T
    max_c = np.percentile(concentrations, MAX_CONCENTRATION_PERCENTILE, axis=0)
    if (max_c <= 0).any():
        raise HelpkitError(f"no stain found in the tissue pixels (99th-percentile concentrations {max_c})", source)
    return StainStats("macenko", stains=tuple(tuple(map(float, v)) for v in stains),
                      max_concentrations=tuple(map(float, max_c)))


def _rgb2lab(pixels: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(pixels.reshape(-1, 1, 3)).reshape(pixels.shape).astype(np.float32)


def _reinhard(pixels: np.ndarray, source: str | Path | None) -> StainStats:
    if len(pixels) < MIN_PIXELS:
        raise _too_few(len(pixels), "given", source)
    lab = _rgb2lab(pixels).astype(np.float64)
    std = lab.std(axis=0)
    if (std <= 0).any():
        raise HelpkitError("tissue pixels of a single colour: no spread to normalise", source)
    return StainStats("reinhard", mean=tuple(map(float, lab.mean(axis=0))), std=tuple(map(float, std)))


def estimate_stains(pixels: np.ndarray, method: str, *, source: str | Path | None = None) -> StainStats:
    """Stain statistics of (N, 3) uint8 tissue pixels by ``method`` (macenko or reinhard).

    Macenko: optical densities of magnitude below ``BETA`` dropped, the plane of the two largest
    eigenvectors, its extreme angles at the ``ALPHA`` percentiles as H and E (H the one with
    the larger red component), concentrations by least squares over all pixels and their
    99th percentiles. Reinhard: LAB mean and standard deviation. Too few pixels is a
    HelpkitError naming ``source`` (the slide).
    """
    check_method(method)
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3:
        raise HelpkitError(f"stain pixels must be uint8 (N, 3), got {pixels.dtype} {pixels.shape}", source)
    return _macenko(pixels, source) if method == "macenko" else _reinhard(pixels, source)


def slide_stains(reader: SlideReader, mask: TissueMask, method: str, max_pixels: int = MAX_PIXELS) -> StainStats:
    """A slide's stain statistics from its tissue: pixels inside ``mask`` of the image the mask
    was found in (``TissueMask.image``, from ``tissue_mask(reader, ...)``: the slide is not read
    again), an evenly spaced (deterministic) sample of at most ``max_pixels`` of them."""
    check_method(method)
    if mask.image is None:
        raise HelpkitError("a tissue mask without its image (make it with tissue_mask) has no pixels to "
                           "estimate stains from", reader.path)
    inside = np.flatnonzero(mask.mask)
    if len(inside) > max_pixels:
        inside = inside[np.linspace(0, len(inside) - 1, max_pixels).astype(np.int64)]
    pixels = np.ascontiguousarray(mask.image).reshape(-1, 3)[inside]
    return estimate_stains(pixels, method, source=reader.path)


def fit_reference(stats: list[StainStats]) -> StainStats:
    """The reference look: the median of each number over ``stats`` (the training slides'),
    Macenko's stain vectors renormalised to unit length."""
    if not stats:
        raise HelpkitError("no slide stain statistics to fit a normalisation reference on")
    methods = {s.method for s in stats}
    if len(methods) > 1:
        raise HelpkitError(f"stain statistics of different methods ({', '.join(sorted(methods))}) cannot "
                           "make one reference")

    def median(name: str) -> np.ndarray:
        return np.median(np.asarray([getattr(s, name) for s in stats], np.float64), axis=0)

    method = stats[0].method
    if method == "reinhard":
        return StainStats(method, mean=tuple(map(float, median("mean"))), std=tuple(map(float, median("std"))))
    stains = median("stains")
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    return StainStats(method, stains=tuple(tuple(map(float, v)) for v in stains),
                      max_concentrations=tuple(map(float, median("max_concentrations"))))


def _macenko_map(pixels: np.ndarray, source: StainStats, reference: StainStats) -> np.ndarray:
    """OD -> source concentrations (least squares) -> scaled to the reference's maxima -> the
    reference's stains: one 3x3 matrix on optical density."""
    scale = np.asarray(reference.max_concentrations) / np.asarray(source.max_concentrations)
    transform = np.linalg.pinv(source.matrix).T @ np.diag(scale) @ reference.matrix.T
    od = _OD[pixels] @ transform.astype(np.float32)
    return BACKGROUND * np.exp(-od) - 1


def _reinhard_map(pixels: np.ndarray, source: StainStats, reference: StainStats) -> np.ndarray:
    """LAB mean and std per channel mapped onto the reference's; faded out where the pixel's
    optical-density magnitude is below ``BETA`` (glass stays glass)."""
    from skimage.color import lab2rgb

    lab = _rgb2lab(pixels)
    gain = np.asarray(reference.std, np.float32) / np.asarray(source.std, np.float32)
    lab = (lab - np.asarray(source.mean, np.float32)) * gain + np.asarray(reference.mean, np.float32)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    mapped = lab2rgb(lab.reshape(-1, 1, 3)).reshape(pixels.shape) * 255
    weight = np.clip(np.linalg.norm(_OD[pixels], axis=-1, keepdims=True) / BETA, 0, 1)
    return weight * mapped + (1 - weight) * pixels


def normalise(patches: np.ndarray, source: StainStats, reference: StainStats) -> np.ndarray:
    """``patches`` (uint8 (..., 3)) of a slide with statistics ``source`` in the ``reference``
    look, uint8 of the same shape."""
    if source.method != reference.method:
        raise HelpkitError(f"slide stain statistics are {source.method}, the reference {reference.method}")
    patches = np.asarray(patches)
    if patches.dtype != np.uint8 or patches.shape[-1:] != (3,):
        raise HelpkitError(f"patches to normalise must be uint8 (..., 3), got {patches.dtype} {patches.shape}")
    mapping = _macenko_map if source.method == "macenko" else _reinhard_map
    return np.clip(np.rint(mapping(patches, source, reference)), 0, 255).astype(np.uint8)


def normalised_predict(predict: Callable[[np.ndarray], np.ndarray], source: StainStats,
                       reference: StainStats) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` fed each batch normalised from ``source`` (the slide's statistics) to
    ``reference`` (the run's); its ``batch_key`` (batch-size tuning) depends on the method, not
    the slide, so every slide shares one tuning."""

    def wrapped(batch: np.ndarray) -> np.ndarray:
        return predict(normalise(batch, source, reference))

    key = (getattr(predict, "batch_key", id(predict)), "stain", source.method)
    wrapped.batch_key = key  # type: ignore[attr-defined]
    return wrapped
