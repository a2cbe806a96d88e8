"""What training augmentation does, by name: importable without TensorFlow, so submission.toml's
``augment`` field and ``helpkit train --augment`` are checked against the same registry that
``helpkit.train.augment`` executes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; 0 / False switches one off.

    Two HED jitters, in different units. ``hed`` works in skimage's ``rgb2hed`` space, whose
    stains are natural-log optical density divided by ln(1e6) = 13.8: a shift of ``h`` moves a
    channel's log intensity by 13.8 h times the stain's ``rgb_from_hed`` entry.
    ``hed_scale``/``hed_bias`` are Tellez et al.'s sigma and bias in their HED space, stains of
    -ln(rgb + 2) (rgb in 0..1; the Nijmegen group's public ``HedColorAugmenter``), where the +2
    offset damps a shift and makes white's stains nonzero (a scale tints the background).
    Measured on synthetic H&E patches, scale and shift at the same bound: ``hed`` 0.04 moves
    pixels by 32 grey levels on average and gives 15% of patches a green cast (tissue mean G
    above R or B), like Tellez's 0.1 (HED-medium: 31, 18%); Tellez's 0.05 (HED-light: 17, 4%)
    is about ``hed`` 0.02 (18, 1%); Tellez's 0.2 (HED-strong): 54, 35%.
    """

    symmetries: bool = True
    brightness: float = 0.08
    """Uniform shift of intensities (0..1 scale) in [-b, b]."""
    contrast: float = 0.15
    """Contrast factor in [1 - c, 1 + c] around each patch's mean."""
    hed: float = 0.04
    """Each stain's density scaled by [1 - h, 1 + h] and shifted by [-h, h], skimage's units."""
    hed_scale: float = 0.0
    """Tellez's sigma: each stain, in Tellez's HED space, scaled by [1 - s, 1 + s]."""
    hed_bias: float = 0.0
    """Tellez's bias: each stain, in Tellez's HED space, shifted by [-b, b]."""
    hue: float = 0.0
    """Hue shifted by [-h, h] turns of the colour circle."""
    saturation: float = 0.0
    """Saturation scaled by [1 - s, 1 + s]."""
    brightness_factor: float = 0.0
    """Intensities scaled by [1 - f, 1 + f] (Tellez: 0.35, x[0.65, 1.35])."""
    noise: float = 0.0
    """Gaussian noise (0..1 scale) with a per-patch sigma in [0, n]."""
    blur: float = 0.0
    """Gaussian blur with a per-patch sigma in [0, b] pixels (at most 1: a 7-tap kernel)."""


AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(symmetries=False, brightness=0.0, contrast=0.0, hed=0.0),
    "flips": AugmentConfig(brightness=0.0, contrast=0.0, hed=0.0),
    "light": AugmentConfig(),
    "medium": AugmentConfig(brightness=0.0, contrast=0.25, hed=0.0, hed_scale=0.1, hed_bias=0.1,
                            hue=0.04, saturation=0.15, brightness_factor=0.2),
    "strong": AugmentConfig(brightness=0.0, contrast=0.5, hed=0.0, hed_scale=0.2, hed_bias=0.2,
                            hue=0.08, saturation=0.3, brightness_factor=0.35, noise=0.1, blur=1.0),
}
"""Named augmentations: ``none``; ``flips`` (the 8 symmetries of a square only: a seed-style
recipe without colour augmentation); ``light`` (symmetries, brightness, contrast and HED jitter
of +/-0.04 in skimage's units; the default); ``medium`` (symmetries, Tellez et al. 2019's
HED-medium +/-0.1 scale and bias, hue +/-0.04, saturation x[0.85, 1.15], brightness
x[0.8, 1.2], contrast x[0.75, 1.25]); ``strong`` (symmetries, HED-strong +/-0.2, hue +/-0.08,
saturation x[0.7, 1.3], brightness x[0.65, 1.35], contrast x[0.5, 1.5], Gaussian noise sigma
0-0.1, Gaussian blur sigma 0-1 px)."""

DEFAULT_AUGMENT = "light"

AUGMENT_HELP = ("Training augmentation: none; flips (the 8 square symmetries only, no colour); light (symmetries, "
                "brightness, contrast, HED jitter +/-0.04 in skimage's units); medium (symmetries, Tellez's "
                "HED-medium +/-0.1, hue, saturation, brightness, contrast); strong (Tellez's HED-strong +/-0.2, "
                "stronger hue/saturation/brightness/contrast, Gaussian noise and blur).")
"""The help of ``helpkit train --augment`` and of submission.toml's ``augment``."""


def augment_config(name: str, overrides: dict[str, float | bool] | None = None) -> AugmentConfig:
    """Preset ``name`` with single fields replaced by ``overrides``; ValueError naming a bad key or value."""
    import dataclasses

    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}: choose {', '.join(AUGMENTATIONS)}")
    fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"unknown augmentation parameter {key!r}; AugmentConfig has: {', '.join(fields)}")
        if isinstance(fields[key].default, bool) != isinstance(value, bool) or value < 0:
            raise ValueError(f"augmentation parameter {key} must be "
                             f"{'true or false' if isinstance(fields[key].default, bool) else 'a number >= 0'}, "
                             f"got {value!r}")
    return dataclasses.replace(AUGMENTATIONS[name], **(overrides or {}))
