"""Synthetic whole-slide-image competitions in the HeLP layout, with known ground truth.

- ``make_competition(out, n_train, n_test, size, seed, shift)``: train/test slides, masks,
  ``labels.csv`` and ``synth.json`` (see docs/contracts.md); ``shift`` moves the test
  slides' staining and scanner look away from train, as HeLP phase 2 did.
- ``make_slide(path, size, seed, positive, ...)``: one slide (and mask); benches use it to
  make 50k-100k pixel slides in bounded memory.

Modules: ``field`` (hashed noise and plan sampling), ``plan`` (tissue/tumour layout and
masks), ``stain`` (H&E colour model and the shift), ``tissue`` (tile rendering), ``tiff``
(pyramidal JPEG TIFF writer), ``competition`` (slides and the layout).
"""

from helpkit.synth.competition import make_competition, make_slide

__all__ = ["make_competition", "make_slide"]
