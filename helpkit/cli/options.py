"""CLI options built from one definition: the patch geometry's ``--mpp``, ``--patch-size``,
``--stride`` and ``--tissue-mpp`` come from ``helpkit.slide.geometry.GEOMETRY_FIELDS``, the
same table ``submission.toml``'s model fields are built from."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from helpkit.slide.geometry import GEOMETRY_FIELDS, PatchGeometry
from helpkit.slide.slide_defaults import TUMOUR_THRESHOLD_HELP

LAYOUT_HELP = ("Data layout: auto (detect), help (HeLP: train/image/{positive,negative}, test/), camelyon16 "
               "(training/{tumor,normal}, lesion_annotations, testing/images) or camelyon17 "
               "(center_K/patient_NNN_node_M, stage CSV).")

LayoutOption = Annotated[str, typer.Option("--layout", help=LAYOUT_HELP)]
"""``--layout`` of every command that discovers slides (``helpkit.layouts``)."""

TumourThresholdOption = Annotated[float, typer.Option("--tumour-threshold", help=TUMOUR_THRESHOLD_HELP)]
"""``--tumour-threshold`` of the commands that label patches (``helpkit index``, ``helpkit train --data``)."""


def geometry_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the geometry options in place of its ``geometry: PatchGeometry`` parameter."""
    signature = inspect.signature(func, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "geometry"]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Optional[kind] if default is None else kind, typer.Option(help=help_)],  # noqa: UP045
            default=default,
        )
        for name, (kind, default, help_) in GEOMETRY_FIELDS.items()
    ]
    keyword_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        geometry = PatchGeometry(**{name: kwargs.pop(name) for name in GEOMETRY_FIELDS})
        return func(**kwargs, geometry=geometry)

    wrapper.__signature__ = signature.replace(parameters=keyword_only + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in keyword_only + added}
    del wrapper.__wrapped__  # typer must see the new signature, not the wrapped one
    return wrapper

SchedulerOption = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--scheduler", help="Run one task per slide on the running Dask cluster at this address (tcp://HOST:PORT; "
    "workers must see the same paths). Default: $HELPKIT_SCHEDULER, else in this process.")]
"""``--scheduler`` of every per-slide command (``helpkit.slidemap.Executor``)."""

WorkersOption = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--workers", help="Run one task per slide on a local Dask cluster of this many worker processes "
    "(one thread each). Default: $HELPKIT_WORKERS, else in this process.")]
"""``--workers`` of every per-slide command: a LocalCluster of N processes."""
