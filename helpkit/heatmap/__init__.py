"""Heatmaps: full-coverage sliding-window inference over tissue, one ``.npz`` per slide and model.

Names are re-exported lazily (PEP 562) so that importing a light submodule such as
``helpkit.heatmap.tta_spec`` (what submission.toml is checked with) does not pull in numpy.
"""

from __future__ import annotations

from helpkit.lazy import lazy_exports

_EXPORTS = {
    "SCHEMA_VERSION": "store",
    "EngineResult": "engine",
    "Heatmap": "store",
    "heatmap_path": "store",
    "read_heatmap": "store",
    "run_heatmap": "engine",
    "write_heatmap": "store",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
