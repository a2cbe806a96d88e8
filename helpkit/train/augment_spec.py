"""What training augmentation does, by name: importable without TensorFlow, so submission.toml's
``augment`` field and ``helpkit train --augment`` are checked against the same registry that
``helpkit.train.augment`` executes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; 0 / False switches one off."""

    symmetries: bool = True
    brightness: float = 0.08
    """Uniform shift of intensities (0..1 scale) in [-b, b]."""
    contrast: float = 0.15
    """Contrast factor in [1 - c, 1 + c] around each patch's mean."""
    hed: float = 0.04
    """Each stain's density scaled by [1 - h, 1 + h] and shifted by [-h, h] ("HED-light")."""


AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(symmetries=False, brightness=0.0, contrast=0.0, hed=0.0),
    "flips": AugmentConfig(brightness=0.0, contrast=0.0, hed=0.0),
    "light": AugmentConfig(),
}
"""Named augmentations: ``none``; ``flips`` (the 8 symmetries of a square only: a seed-style
recipe without colour augmentation); ``light`` (symmetries, brightness, contrast and HED-light
stain jitter; the default)."""

DEFAULT_AUGMENT = "light"
