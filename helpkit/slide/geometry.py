"""Patch geometry in microns: the one description of what a patch is, shared by every stage.

A model sees patches of ``patch_size`` pixels at ``mpp`` microns per pixel, laid out every
``stride`` pixels (at ``mpp``), on tissue found in a mask at ``tissue_mpp``. Which pyramid
level a slide is read from follows from the slide's own microns per pixel
(``SlideReader.read_region_mpp``), so a slide with another pyramid or another scanner
resolution is read at the same physical scale as the training slides.

Importable without numpy (the CLI builds its options from ``GEOMETRY_FIELDS``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from helpkit.errors import HelpkitError

PATCH_MPP = 2.0
"""Microns per pixel of patches: 64 px cover 128 um, some 30-60 tumour cells or a few hundred
lymphocytes, enough to see nuclear size, crowding and architecture; level 2 of a 0.5 um/px (20x)
scan, level 3 of a 0.25 um/px (40x) one. Small enough to train on CPU cores."""

PATCH_SIZE = 64
"""Patch side in pixels at ``PATCH_MPP``."""

TISSUE_MPP = 8.0
"""Microns per pixel of tissue masks (downsample 16 of a 0.5 um/px level 0, 32 of a 0.25 um/px one)."""

FALLBACK_MPP = 0.25
"""Level-0 microns per pixel assumed for a slide that does not say (a 40x scan); logged once per slide."""

MPP_TOLERANCE = 0.01
"""A level within 1% of the target resolution is read as it is, without resizing."""


@dataclass(frozen=True)
class PatchGeometry:
    """What a patch is, in physical units (recorded in run folders, patch indexes and heatmaps)."""

    mpp: float = PATCH_MPP
    patch_size: int = PATCH_SIZE
    stride: int | None = None
    tissue_mpp: float = TISSUE_MPP

    def __post_init__(self) -> None:
        if not self.mpp > 0 or not self.tissue_mpp > 0:
            raise HelpkitError(f"mpp and tissue_mpp must be positive, got {self.mpp} and {self.tissue_mpp}")
        if self.patch_size <= 0 or (self.stride is not None and self.stride <= 0):
            raise HelpkitError(f"patch size and stride must be positive, got {self.patch_size} and {self.stride}")
        if self.stride is None:  # unset: no overlap; resolved so equal layouts compare equal
            object.__setattr__(self, "stride", self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchGeometry:
        """Read back ``to_dict`` (unknown keys ignored, missing ones default)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        return cls(
            mpp=float(values.get("mpp", PATCH_MPP)),
            patch_size=int(values.get("patch_size", PATCH_SIZE)),
            stride=int(values["stride"]) if "stride" in values else None,
            tissue_mpp=float(values.get("tissue_mpp", TISSUE_MPP)),
        )

    @classmethod
    def from_json(cls, text: str) -> PatchGeometry:
        return cls.from_dict(json.loads(text))

    def key(self) -> str:
        """A short name for file names: ``M2_P64_S64_T8``."""
        return f"M{self.mpp:g}_P{self.patch_size}_S{self.stride}_T{self.tissue_mpp:g}"


GEOMETRY_FIELDS: dict[str, tuple[type, Any, str]] = {
    "mpp": (float, PATCH_MPP, "Microns per pixel patches are read at (the pyramid level at or finer "
            "than it, resized by area averaging when no level matches)."),
    "patch_size": (int, PATCH_SIZE, "Patch side in pixels at mpp."),
    "stride": (int, None, "Grid step in pixels at mpp (default: the patch size, no overlap)."),
    "tissue_mpp": (float, TISSUE_MPP, "Microns per pixel of the tissue mask."),
}
"""Each geometry field's type, default and help: the CLI options and submission.toml's model
fields are built from this one table."""
