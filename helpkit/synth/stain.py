"""Staining and scanner appearance: how tissue stain amounts become RGB, and how --shift moves it.

Colour follows the Beer-Lambert stain model used by stain-normalisation methods
(Macenko et al. 2009): optical density = H * h_vector + E * e_vector. A slide's look adds
the scanner's part on top: hue, saturation, brightness and optical blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

H_VECTOR = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
"""Haematoxylin optical-density direction (Macenko reference)."""

E_VECTOR = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)
"""Eosin optical-density direction (Macenko reference)."""


@dataclass(frozen=True)
class Look:
    """One slide's staining and scanning: per-slide jitter plus the competition's shift."""

    h_gain: float
    e_gain: float
    white: float
    hue_degrees: float
    saturation: float
    brightness: float
    blur0: float
    """Gaussian blur sigma in level-0 pixels (scaled down at coarser levels)."""

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
            rgb = ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0), mode="nearest")
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def look_for(seed: int, shift: float) -> Look:
    """A slide's look: small per-slide jitter; ``shift`` (0 none, 1 phase-2-like) moves all of it.

    The shift's direction is fixed, as a change of scanner and staining protocol is: bluer
    hue, stronger haematoxylin, weaker eosin, less saturation, brighter, softer focus.
    """
    rng = np.random.default_rng([seed, 0x100C])
    j = rng.normal(size=6)
    return Look(
        h_gain=float(np.exp(0.06 * j[0]) * (1 + 0.3 * shift)),
        e_gain=float(np.exp(0.06 * j[1]) * (1 - 0.25 * shift)),
        white=float(242 + 3 * j[2]),
        hue_degrees=float(2.0 * j[3] - 14.0 * shift),
        saturation=float(np.exp(0.04 * j[4]) * (1 - 0.3 * shift)),
        brightness=float(np.exp(0.02 * j[5]) * (1 + 0.05 * shift)),
        blur0=float(max(0.0, 1.6 * shift)),
    )
