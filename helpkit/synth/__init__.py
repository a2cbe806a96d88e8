"""Synthetic whole-slide-image competitions in the HeLP layout, with known ground truth.

- ``make_competition(out, n_train, n_test, size, seed, shift, phase1=, phase2=)``: train/test
  slides, masks, ``labels.csv`` and ``synth.json`` (see docs/contracts.md); each split is drawn
  from a preset of ``PRESETS`` (``phase2``: the test split's, a phase-2 test set) and ``shift``
  moves the test slides' stain centre.
- ``make_slide(path, size, seed, positive, ..., spec=)``: one slide (and mask); benches use it
  to make 50k-100k pixel slides in bounded memory.

Modules: ``field`` (hashed noise and plan sampling), ``plan`` (tissue/tumour layout and
masks), ``artefacts`` (holes, folds, crush, focus, pen), ``stain`` (H&E colour model and the
bounded stain space), ``tissue_render`` (tile rendering), ``tiff`` (pyramidal JPEG TIFF
writer), ``presets`` (one spec per split, the named presets), ``competition`` (slides and the
layout). Names are exported lazily, so the CLI can list the presets without the renderer.
"""

from __future__ import annotations

from helpkit.lazy import lazy_exports

_EXPORTS = {
    "make_competition": "competition",
    "make_slide": "competition",
    "generator_version": "competition",
    "is_current": "competition",
    "PRESETS": "presets",
    "SplitSpec": "presets",
    "get_preset": "presets",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
