"""Defaults shared by several stages, in one place so they cannot drift apart."""

PATCH_LEVEL = 1
"""Pyramid level patches are read at (downsample 2 on synthetic slides)."""

PATCH_SIZE = 64
"""Patch side in pixels at ``PATCH_LEVEL``."""

MASK_DOWNSAMPLE = 16
"""Annotation masks are PNGs at 1/16 of level 0, as the reference team read them."""

FALLBACK_PROBABILITY = 0.5
"""What inference writes for a slide that cannot be read: uninformative, never missing."""
