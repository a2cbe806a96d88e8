"""What training augmentation does, by name: importable without TensorFlow, so submission.toml's
``augment`` field and ``helpkit train --augment`` are checked against the same registry that
``helpkit.train.augment`` executes."""

from __future__ import annotations

import math
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
    """Hue shifted by [-h, h] turns of the colour circle (a rotation of YIQ's chroma plane: about HSV's hue shift)."""
    saturation: float = 0.0
    """Saturation scaled by [1 - s, 1 + s] (YIQ's chroma scaled towards the grey of equal luma)."""
    brightness_factor: float = 0.0
    """Intensities scaled by [1 - f, 1 + f] (Tellez: 0.35, x[0.65, 1.35])."""
    noise: float = 0.0
    """Gaussian noise (0..1 scale) with a per-patch sigma in [0, n]."""
    blur: float = 0.0
    """Gaussian blur with a per-patch sigma in [0, b] pixels (at most 1: a 7-tap kernel)."""
    jpeg: int = 0
    """Lowest JPEG quality: each patch re-encoded at a quality drawn in [q, 95] (scanner compression); 0 off."""
    rescale: float = 0.0
    """Zoom: each patch shows a window of P * s pixels (s log-uniform in [1/(1 + r), 1 + r]) resized to
    P, i.e. it is seen at mpp * s; patches are read with a margin (``read_size``) so the window is
    always real tissue (at most 1)."""


MAXIMUMS = {"blur": 1.0, "jpeg": 95, "rescale": 1.0}
"""Largest value of the fields with one: the blur kernel's reach, JPEG's quality scale, the margin read."""


def read_size(patch_size: int, rescale: float) -> int:
    """Side to read around a ``patch_size`` patch, same centre, so rescaling by up to ``1 + rescale``
    stays inside it: ``patch_size`` without rescale, else larger by an even number of pixels."""
    return patch_size + 2 * math.ceil(patch_size * rescale / 2)


AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(symmetries=False, brightness=0.0, contrast=0.0, hed=0.0),
    "flips": AugmentConfig(brightness=0.0, contrast=0.0, hed=0.0),
    "light": AugmentConfig(),
    "medium": AugmentConfig(brightness=0.0, contrast=0.25, hed=0.0, hed_scale=0.1, hed_bias=0.1,
                            hue=0.04, saturation=0.15, brightness_factor=0.2, jpeg=50, rescale=0.1),
    "strong": AugmentConfig(brightness=0.0, contrast=0.5, hed=0.0, hed_scale=0.2, hed_bias=0.2,
                            hue=0.08, saturation=0.3, brightness_factor=0.35, noise=0.1, blur=1.0,
                            jpeg=30, rescale=0.25),
}
"""Named augmentations: ``none``; ``flips`` (the 8 symmetries of a square only: a seed-style
recipe without colour augmentation); ``light`` (symmetries, brightness, contrast and HED jitter
of +/-0.04 in skimage's units; the default); ``medium`` (symmetries, Tellez et al. 2019's
HED-medium +/-0.1 scale and bias, hue +/-0.04, saturation x[0.85, 1.15], brightness
x[0.8, 1.2], contrast x[0.75, 1.25], JPEG quality 50-95, rescale x[0.91, 1.1]); ``strong``
(symmetries, HED-strong +/-0.2, hue +/-0.08, saturation x[0.7, 1.3], brightness x[0.65, 1.35],
contrast x[0.5, 1.5], Gaussian noise sigma 0-0.1, Gaussian blur sigma 0-1 px, JPEG quality
30-95, rescale x[0.8, 1.25], Tellez's 0.8-1.2). ``light`` keeps its values so earlier
benchmarks stay comparable; docs/augmentation.md tabulates every parameter."""

DEFAULT_AUGMENT = "light"

AUGMENT_HELP = ("Training augmentation: none; flips (the 8 square symmetries only, no colour); light (symmetries, "
                "brightness, contrast, HED jitter +/-0.04 in skimage's units); medium (symmetries, Tellez's "
                "HED-medium +/-0.1, hue, saturation, brightness, contrast, JPEG quality 50-95, rescale "
                "x0.91-1.1); strong (Tellez's HED-strong +/-0.2, stronger hue/saturation/brightness/contrast, "
                "Gaussian noise and blur, JPEG quality 30-95, rescale x0.8-1.25).")
"""The help of ``helpkit train --augment`` and of submission.toml's ``augment``."""


def augment_config(name: str, overrides: dict[str, float | bool] | None = None) -> AugmentConfig:
    """Preset ``name`` with single fields replaced by ``overrides``; ValueError naming a bad key or value."""
    import dataclasses

    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}: choose {', '.join(AUGMENTATIONS)}")
    defaults = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise ValueError(f"unknown augmentation parameter {key!r}; AugmentConfig has: {', '.join(defaults)}")
        if isinstance(defaults[key], bool):
            ok, allowed = isinstance(value, bool), "true or false"
        else:
            top, whole = MAXIMUMS.get(key, math.inf), isinstance(defaults[key], int)
            ok = not isinstance(value, bool) and 0 <= value <= top and (not whole or value == int(value))
            allowed = f"{'an integer' if whole else 'a number'} >= 0" + (f" and <= {top:g}" if key in MAXIMUMS else "")
        if not ok:
            raise ValueError(f"augmentation parameter {key} must be {allowed}, got {value!r}")
    return dataclasses.replace(AUGMENTATIONS[name], **{key: type(defaults[key])(value)
                                                       for key, value in (overrides or {}).items()})


def parse_overrides(items: list[str]) -> dict[str, float | bool]:
    """``KEY=VALUE`` strings (``helpkit train --augment-param``) as overrides: true/false or a number;
    ValueError on anything else (``augment_config`` then checks keys and ranges)."""
    overrides: dict[str, float | bool] = {}
    for item in items:
        key, _, text = item.partition("=")
        flag = {"true": True, "false": False}.get(text.strip().lower())
        try:
            overrides[key.strip()] = flag if flag is not None else float(text)
        except ValueError:
            raise ValueError(f"augmentation parameter {item!r} is not KEY=VALUE with a number or true/false") from None
    return overrides
