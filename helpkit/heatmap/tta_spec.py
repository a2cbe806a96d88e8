"""Test-time augmentation by name: importable without numpy, so submission.toml's ``tta`` and
``helpkit heatmap --tta`` are checked against the registry ``helpkit.heatmap.tta`` executes."""

from __future__ import annotations

TTAS: dict[str, str] = {
    "none": "each patch once",
    "flips": "the mean over the patch, its left-right and top-bottom flips and both (4 passes)",
    "d4": "the mean over the 8 symmetries of the square (flips and 90-degree rotations: 8 passes)",
}
"""Test-time augmentations ``tta`` in submission.toml and ``helpkit heatmap --tta`` accept."""

DEFAULT_TTA = "none"

TTA_HELP = "Test-time augmentation: " + "; ".join(f"{k} ({v})" for k, v in TTAS.items()) + "."
