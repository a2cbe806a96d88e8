"""Synthetic whole-slide-image competitions in the HeLP layout, with known ground truth."""

from helpkit.synth.competition import make_competition, make_slide

__all__ = ["make_competition", "make_slide"]
