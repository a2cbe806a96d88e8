"""Staining and scanner appearance: how tissue stain amounts become RGB, and the bounded
space each slide's look is drawn from.

Colour follows the Beer-Lambert stain model used by stain-normalisation methods
(Macenko et al. 2009): optical density = H * h_vector + E * e_vector. A slide's look adds
the scanner's part on top: hue, saturation, brightness and optical blur. Every parameter is
drawn inside physical ``BOUNDS``, so no slide ever gets a zero or negative gain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from helpkit.errors import HelpkitError

H_VECTOR = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
"""Haematoxylin optical-density direction (Macenko reference)."""

E_VECTOR = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)
"""Eosin optical-density direction (Macenko reference)."""

BOUNDS: dict[str, tuple[float, float]] = {
    "hue": (-12.0, 6.0),  # degrees about the grey axis (negative: bluer)
    "saturation": (0.6, 1.15),
    "h_gain": (0.8, 1.35),
    "e_gain": (0.7, 1.2),
    "blur_um": (0.0, 1.2),  # Gaussian sigma of the optics, microns
    "brightness": (0.92, 1.08),
    "white": (226.0, 252.0),  # glass transmission before the colour matrix, 0-255
}
"""Hard limits of every look parameter; draws and shifts are clipped to them."""

SHIFT_TOWARDS: dict[str, float] = {
    "hue": BOUNDS["hue"][0],
    "saturation": BOUNDS["saturation"][0],
    "h_gain": BOUNDS["h_gain"][1],
    "e_gain": BOUNDS["e_gain"][0],
    "blur_um": BOUNDS["blur_um"][1],
    "brightness": BOUNDS["brightness"][1],
}
"""The fixed ``--shift`` direction, as a change of scanner and protocol moves a look: bluer hue,
less saturation, stronger haematoxylin, weaker eosin, softer focus, brighter."""


@dataclass(frozen=True)
class Look:
    """One slide's staining and scanning."""

    h_gain: float
    e_gain: float
    white: float
    hue_degrees: float
    saturation: float
    brightness: float
    blur0: float
    """Gaussian blur sigma in level-0 pixels (scaled down at coarser levels)."""
    faded: bool = False

    @property
    def matrix(self) -> np.ndarray:
        """3 x 3 colour matrix: hue rotation about the grey axis, then saturation."""
        t = np.deg2rad(self.hue_degrees)
        c, s = np.cos(t), np.sin(t)
        k = np.full((3, 3), (1 - c) / 3, dtype=np.float64)
        k += np.eye(3) * c
        k += np.sqrt(1 / 3) * s * np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        grey = np.full((3, 3), 1 / 3)
        sat = grey + self.saturation * (np.eye(3) - grey)
        return (self.brightness * sat @ k).astype(np.float32)

    def background(self) -> np.ndarray:
        """The RGB of glass (no tissue) under this look, uint8 (3,)."""
        return self.to_rgb(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), 1.0)[0, 0]

    def to_rgb(self, h: np.ndarray, e: np.ndarray, downsample: float) -> np.ndarray:
        """Stain amounts (H, W) -> uint8 RGB (H, W, 3), blurred for a level at ``downsample``."""
        od = h[..., None] * (self.h_gain * H_VECTOR) + e[..., None] * (self.e_gain * E_VECTOR)
        trans = np.exp(-od) * np.float32(self.white)
        m = self.matrix
        # three explicit products: a (H*W, 3) @ (3, 3) matmul goes to threaded BLAS, slower here
        rgb = np.stack([trans[..., 0] * m[i, 0] + trans[..., 1] * m[i, 1] + trans[..., 2] * m[i, 2]
                        for i in range(3)], axis=-1)
        sigma = self.blur0 / downsample
        if sigma > 0.25:
            from scipy import ndimage  # here: the CLI lists the presets without loading scipy

            rgb = ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0), mode="nearest")
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StainSpace:
    """Where a split's looks lie: a centre and a per-slide spread for each parameter.

    Gains, saturation and brightness spread log-normally (``*_spread`` is the sigma of the
    log), hue and white normally; blur is ``blur_um`` plus a half-normal ``blur_spread`` and,
    on a ``blur_tail`` share of slides, an exponential extra of mean ``blur_tail_um``.
    A ``faded`` share of slides has both stain gains multiplied by ``fade``. Every value is
    clipped to ``BOUNDS``.
    """

    hue: float = 0.0
    hue_spread: float = 2.0
    saturation: float = 1.0
    saturation_spread: float = 0.04
    h_gain: float = 1.0
    h_spread: float = 0.06
    e_gain: float = 1.0
    e_spread: float = 0.06
    blur_um: float = 0.1
    blur_spread: float = 0.1
    blur_tail: float = 0.05
    blur_tail_um: float = 0.4
    brightness: float = 1.0
    brightness_spread: float = 0.02
    white: float = 242.0
    white_spread: float = 3.0
    faded: float = 0.0
    fade: float = 0.8

    def shifted(self, shift: float) -> StainSpace:
        """This space with its centre moved ``shift`` of the way along ``SHIFT_TOWARDS``
        (0 none, 1 at the bounds; more stays at the bounds)."""
        if shift < 0:
            raise HelpkitError(f"shift must be >= 0, got {shift}")
        k = min(float(shift), 1.0)
        return replace(self, **{name: _clip(name, getattr(self, name) + k * (goal - getattr(self, name)))
                                for name, goal in SHIFT_TOWARDS.items()})


def _clip(name: str, value: float) -> float:
    low, high = BOUNDS[name]
    return float(min(max(value, low), high))


def draw_look(seed: int, space: StainSpace, mpp: float) -> Look:
    """One slide's look from ``space``, the same for the same seed; blur in level-0 pixels at ``mpp``."""
    rng = np.random.default_rng([seed, 0x100C])
    j = rng.normal(size=7)
    faded = bool(rng.random() < space.faded)
    fade = space.fade if faded else 1.0
    blur = space.blur_um + space.blur_spread * abs(j[6])
    if rng.random() < space.blur_tail:
        blur += rng.exponential(space.blur_tail_um)
    return Look(
        h_gain=_clip("h_gain", space.h_gain * np.exp(space.h_spread * j[0]) * fade),
        e_gain=_clip("e_gain", space.e_gain * np.exp(space.e_spread * j[1]) * fade),
        white=_clip("white", space.white + space.white_spread * j[2]),
        hue_degrees=_clip("hue", space.hue + space.hue_spread * j[3]),
        saturation=_clip("saturation", space.saturation * np.exp(space.saturation_spread * j[4])),
        brightness=_clip("brightness", space.brightness * np.exp(space.brightness_spread * j[5])),
        blur0=_clip("blur_um", blur) / mpp,
        faded=faded,
    )


def look_for(seed: int, shift: float = 0.0, mpp: float = 0.5) -> Look:
    """A slide's look in the default (phase-1) space moved by ``shift``."""
    return draw_look(seed, StainSpace().shifted(shift), mpp)
