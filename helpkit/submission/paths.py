"""The platform's paths inside a stage container, shared by the templates and the validator."""

from __future__ import annotations

from dataclasses import dataclass

APP_DIR = "/app"
"""The image's working directory: train.sh, inference.sh and submission.toml live here."""


@dataclass(frozen=True)
class PlatformPaths:
    """Where the platform mounts data (docs/platform.md, "Data as mounted in the stage containers")."""

    train: str = "/data/train"
    test: str = "/data/test"
    model: str = "/data/model"
    output: str = "/data/output"
    config: str = f"{APP_DIR}/submission.toml"

    @property
    def output_csv(self) -> str:
        """The predictions file the inference stage must write."""
        return f"{self.output}/output.csv"


PLATFORM = PlatformPaths()
