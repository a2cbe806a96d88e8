"""One typed spec per split of a synthetic competition, and the named presets.

A ``SplitSpec`` says everything a split's slides are drawn from: the stain space, the scanner
(level-0 mpp, JPEG quality), the deposit mix of positives, the mimic share of negatives and
the artefact rates. ``make_competition(phase1=..., phase2=...)`` and ``helpkit synth
--phase1/--phase2`` take the names of ``PRESETS``; every number of every preset is here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from helpkit.errors import HelpkitError
from helpkit.synth.artefacts import ArtefactRates
from helpkit.synth.stain import StainSpace

DEPOSITS = ("macro", "micro", "itc")
"""CAMELYON size classes of a positive slide's largest deposit (helpkit.layouts.size_class)."""


@dataclass(frozen=True)
class DepositMix:
    """Shares of positive slides whose largest deposit is macro, micro or ITC (sum 1)."""

    macro: float = 0.58
    micro: float = 0.32
    itc: float = 0.10

    def __post_init__(self) -> None:
        shares = [getattr(self, k) for k in DEPOSITS]
        if min(shares) < 0 or abs(sum(shares) - 1) > 1e-9:
            raise HelpkitError(f"deposit shares must be >= 0 and sum to 1, got {shares}")


@dataclass(frozen=True)
class SplitSpec:
    """How one split's slides are drawn."""

    name: str
    description: str
    """A few words; ``summary()`` adds the numbers (``helpkit synth --help``)."""
    stain: StainSpace = field(default_factory=StainSpace)
    mpp: float = 1.0
    """Level-0 microns per pixel (1.0: a 10x scan, the synthetic default; 0.5: 20x; 0.25: 40x)."""
    jpeg_quality: int = 90
    deposits: DepositMix = field(default_factory=DepositMix)
    mimics: float = 0.10
    """Share of negative slides carrying tumour mimics."""
    artefacts: ArtefactRates = field(default_factory=ArtefactRates)
    """Expected artefact counts per slide (Poisson)."""

    def summary(self) -> str:
        """One line: the description and the spec's numbers."""
        d, rates = self.deposits, asdict(self.artefacts)
        return (f"{self.description}; {self.mpp:g} um/px, JPEG {self.jpeg_quality}, positives "
                f"{d.macro:.0%} macro / {d.micro:.0%} micro / {d.itc:.0%} ITC, {self.mimics:.0%} of negatives "
                f"with mimics, {sum(rates.values()):.2g} artefacts per slide")

    def __post_init__(self) -> None:
        if not 0 <= self.mimics <= 1:
            raise HelpkitError(f"preset {self.name!r}: mimic share must be in 0..1, got {self.mimics}")
        if not 1 <= self.jpeg_quality <= 100:
            raise HelpkitError(f"preset {self.name!r}: JPEG quality must be in 1..100, got {self.jpeg_quality}")
        if self.mpp <= 0:
            raise HelpkitError(f"preset {self.name!r}: mpp must be > 0, got {self.mpp}")


PHASE1_ARTEFACTS = ArtefactRates(holes=0.0, folds=0.03, crush=0.03, focus=0.02, pen=0.02)
"""About 0.1 artefacts per slide."""

_STAIN_SHIFT = StainSpace(hue=-6.0, saturation=0.82, h_gain=1.18, e_gain=0.84, blur_um=0.3, blur_tail=0.1,
                          brightness=1.03, white=246.0, faded=0.15)
"""Another lab's staining and scanner colour: bluer, less saturated, more H, less E, softer."""

PRESETS: dict[str, SplitSpec] = {
    spec.name: spec
    for spec in (
        SplitSpec("default", "phase 1", artefacts=PHASE1_ARTEFACTS),
        SplitSpec("stain", "another lab's stain and scanner colour (bluer, paler, more H, less E, some faded)",
                  stain=_STAIN_SHIFT, jpeg_quality=80, artefacts=PHASE1_ARTEFACTS),
        SplitSpec("scanner", "another scanner: 20x (twice the pixels of the same tissue), softer focus, stronger JPEG",
                  stain=StainSpace(hue=2.0, saturation=1.06, blur_um=0.45, blur_spread=0.15, blur_tail=0.15,
                                   white=248.0),
                  mpp=0.5, jpeg_quality=60, artefacts=PHASE1_ARTEFACTS),
        SplitSpec("frozen", "frozen sections: ice-crystal holes, folds, crush and out-of-focus bands, pen marks",
                  stain=StainSpace(saturation=0.9, h_gain=1.1, e_gain=0.85, blur_um=0.3, blur_tail=0.2,
                                   faded=0.3),
                  artefacts=ArtefactRates(holes=2.0, folds=1.0, crush=1.0, focus=1.0, pen=0.5)),
        SplitSpec("small-mets", "more micro-metastases and isolated tumour cells",
                  deposits=DepositMix(macro=0.20, micro=0.45, itc=0.35), artefacts=PHASE1_ARTEFACTS),
        SplitSpec("help22", "a HeLP-2-2-like phase 2: stain shift, softer focus, more mimics, small deposits "
                  "and artefacts",
                  stain=StainSpace(hue=-4.0, saturation=0.86, h_gain=1.12, e_gain=0.88, blur_um=0.35,
                                   blur_tail=0.1, brightness=1.02, white=245.0, faded=0.1),
                  jpeg_quality=60, deposits=DepositMix(macro=0.40, micro=0.35, itc=0.25), mimics=0.30,
                  artefacts=ArtefactRates(holes=0.05, folds=0.1, crush=0.1, focus=0.1, pen=0.1)),
    )
}
"""The named split specs; 'default' is phase 1."""


def get_preset(name: str) -> SplitSpec:
    """The preset called ``name``; a HelpkitError lists the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise HelpkitError(f"unknown synth preset {name!r}: choose one of {', '.join(PRESETS)}") from None
