"""helpkit: win whole-slide-image challenges without losing a submission to the platform."""

__version__ = "0.1.0"
