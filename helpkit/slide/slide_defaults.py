"""Defaults of the slide stage, importable without numpy so the CLI's --help stays fast."""

TUMOUR_THRESHOLD = 0.5
"""A cell is tumour when at least this share of it is annotated tumour."""

MIN_TISSUE = 0.5
"""Cells with less tissue than this share are not patches worth training on."""
