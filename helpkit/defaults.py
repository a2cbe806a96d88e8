"""Defaults shared by several stages, in one place so they cannot drift apart (the patch
geometry's own live with it, in ``helpkit.slide.geometry``)."""

MASK_DOWNSAMPLE = 16
"""Annotation masks are PNGs at 1/16 of level 0, as the reference team read them."""

FALLBACK_PROBABILITY = 0.5
"""What inference writes for a slide that cannot be read: uninformative, never missing."""
