"""Heatmaps: full-coverage sliding-window inference over tissue, one ``.npz`` per slide and model."""

from helpkit.heatmap.engine import EngineResult, run_heatmap
from helpkit.heatmap.store import SCHEMA_VERSION, Heatmap, heatmap_path, read_heatmap, write_heatmap

__all__ = [
    "SCHEMA_VERSION",
    "EngineResult",
    "Heatmap",
    "heatmap_path",
    "read_heatmap",
    "run_heatmap",
    "write_heatmap",
]
