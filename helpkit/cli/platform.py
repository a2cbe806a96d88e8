"""CLI commands: ``helpkit platform train|infer``, the stages exactly as the container runs them."""

from __future__ import annotations

from pathlib import Path

import typer

from helpkit.cli.options import LAYOUT_HELP
from helpkit.submission.paths import PLATFORM

platform_app = typer.Typer(
    help="The platform's two stages (what train.sh and inference.sh call). Paths default to "
    "the container's; override them to run a stage on this machine.",
    no_args_is_help=True,
)

CONFIG_HELP = "The submission.toml that says which models, features and ensemble to use."


@platform_app.command("train")
def train_cmd(
    data: Path = typer.Option(Path(PLATFORM.train), help="Training data (read only): a HeLP or CAMELYON training folder."),
    model_dir: Path = typer.Option(Path(PLATFORM.model), help="Where everything the inference stage needs goes."),
    config: Path = typer.Option(Path(PLATFORM.config), help=CONFIG_HELP),
    strict: bool = typer.Option(False, "--strict", help="Training-label problems (a mask that contradicts its "
                                "class folder, a class folder not in lower case) are errors, not warnings."),
    layout: str = typer.Option("auto", "--layout", help=LAYOUT_HELP),
) -> None:
    """Train stage: index patches, train every model by slide folds, out-of-fold heatmaps and
    features, fit the ensemble. Writes only under MODEL_DIR."""
    from helpkit import pipeline
    from helpkit.config import load_submission, resolve_submission_path

    path = resolve_submission_path(config)
    pipeline.train(data, model_dir, load_submission(path), submission_dir=path.parent, strict=strict, layout=layout)


@platform_app.command("infer")
def infer_cmd(
    data: Path = typer.Option(Path(PLATFORM.test), help="Test slides (read only)."),
    model_dir: Path = typer.Option(Path(PLATFORM.model), help="What the train stage wrote."),
    output: Path = typer.Option(Path(PLATFORM.output_csv), help="The predictions file (no header, slide_id,probability)."),
    config: Path = typer.Option(Path(PLATFORM.config), help=CONFIG_HELP),
    work_dir: Path | None = typer.Option(
        None, envvar="HELPKIT_WORK_DIR", show_default=False,
        help="Scratch for heatmaps and features (default: helpkit-inference in the system temp dir, "
        "/tmp/helpkit-inference in the container). Nothing is written under MODEL_DIR."),
    layout: str = typer.Option("auto", "--layout", help=LAYOUT_HELP),
) -> None:
    """Inference stage: one probability per test slide into OUTPUT, a failed slide included
    (it gets the submission's fallback probability and a log line saying why). MODEL_DIR is
    only read, so it may be mounted read-only."""
    from helpkit import pipeline
    from helpkit.config import load_submission

    pipeline.infer(data, model_dir, output, load_submission(config), work_dir=work_dir, layout=layout)


def register(app: typer.Typer) -> None:
    """Add ``helpkit platform`` to ``app``."""
    app.add_typer(platform_app, name="platform")
