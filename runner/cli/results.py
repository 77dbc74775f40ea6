"""``fprun results show|export``: read the result tables without Python."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import DEFAULT_RESULTS, Force, Results


def results_show(
    kind: Annotated[str | None, typer.Option(help="result kind (default: all)")] = None,
    results: Results = DEFAULT_RESULTS,
    provenance: Annotated[bool, typer.Option(help="include provenance columns")] = False,
    limit: Annotated[int, typer.Option(min=0, help="rows per kind (>= 0)")] = 50,
) -> None:
    """Print result rows as tables."""
    from runner.results.show import show_tables

    typer.echo(show_tables(results, kind, provenance=provenance, limit=limit))


def results_export(
    out: Annotated[Path, typer.Option(help="output file (new, or replaced with --force)")],
    kind: Annotated[str, typer.Option(help="result kind")],
    fmt: Annotated[str, typer.Option("--format", help="parquet | csv | json")] = "parquet",
    force: Force = False,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Export one result kind to a single Parquet, CSV or JSON-lines file."""
    from runner.results.show import export_kind

    typer.echo(export_kind(results, kind, out, fmt, force=force))
