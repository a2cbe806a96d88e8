"""Defaults of the slide stage, importable without numpy so the CLI's --help stays fast."""

TUMOUR_THRESHOLD = 0.5
"""A cell is tumour when at least this share of it is annotated tumour."""

TUMOUR_THRESHOLD_HELP = ("A training cell is tumour (1) when at least this share of it is annotated tumour, normal (0) "
                         "when none is; cells in between are ambiguous and left out. Lower it (the stacked "
                         "submissions use 0.1) so that isolated tumour cells and small micro-metastases, which never "
                         "fill half a cell, are learnt.")
"""The help of ``helpkit index``/``helpkit train --tumour-threshold`` and of submission.toml's ``tumour_threshold``."""

MIN_TISSUE = 0.5
"""Cells with less tissue than this share are not patches worth training on."""
