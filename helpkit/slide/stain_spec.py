"""Stain normalisation by name: importable without numpy, so submission.toml's ``normalise`` and
``helpkit train --normalise`` are checked against the registry ``helpkit.slide.stain_normalise``
executes."""

from __future__ import annotations

NORMALISERS: dict[str, str] = {
    "none": "patches as scanned",
    "macenko": "Macenko et al. 2009: each slide's H and E optical-density vectors and 99th-percentile "
               "concentrations, estimated once from its tissue, mapped onto the training slides' reference",
    "reinhard": "Reinhard et al. 2001: each slide's tissue mean and standard deviation per channel in LAB "
                "space mapped onto the training slides' reference",
}
"""Stain normalisations ``normalise`` in submission.toml and ``helpkit train --normalise`` accept."""

DEFAULT_NORMALISE = "none"

NORMALISE_HELP = "Stain normalisation: " + "; ".join(f"{k} ({v})" for k, v in NORMALISERS.items()) + "."
