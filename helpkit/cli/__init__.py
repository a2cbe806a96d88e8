"""The ``helpkit`` command: one verb per stage, each registered by its own module.

Command modules import heavy libraries (TensorFlow, LightGBM, Docker) inside the
command bodies, so ``helpkit --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from helpkit.errors import HelpkitError

app = typer.Typer(
    name="helpkit",
    help="Whole-slide-image challenge toolkit: synth, index, train, heatmap, features, "
    "ensemble, score, and Docker submissions that meet the platform contract.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

from helpkit.cli import (  # noqa: E402  (each module adds its commands to ``app``)
    augment_preview,
    data,
    ensemble,
    heatmap,
    lesions,
    platform,
    project,
    report,
    scoring,
    submission,
    synth,
    train,
)

for _module in (project, synth, data, train, augment_preview, heatmap, lesions, ensemble, scoring, submission,
                platform, report):
    _module.register(app)


def _version(value: bool) -> None:
    if value:
        from helpkit import __version__

        typer.echo(f"helpkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print helpkit's version and exit."),
    verbose: bool = typer.Option(False, "-v", "--verbose",
                                 help="Show TensorFlow's start-up and INFO log lines (hidden by default)."),
) -> None:
    """Whole-slide-image challenge toolkit."""
    from helpkit.cli.quiet import quiet_host_logs

    quiet_host_logs(verbose)


def main() -> None:
    """Console-script entry point: a HelpkitError becomes one line on stderr, exit 2."""
    try:
        app()
    except HelpkitError as err:
        print(f"helpkit: error: {err}", file=sys.stderr)
        sys.exit(2)
