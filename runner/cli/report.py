"""``fprun report RESULTS --out DIR``: the HTML page of a result store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    results: Annotated[Path, typer.Argument(help="results folder of one or more runs")],
    out: Annotated[Path, typer.Option(help="folder for index.html and its PNGs")],
) -> None:
    """Write a static HTML page with plots of every result kind present (no recomputation)."""
    from runner.results.report.page import build_report

    page = build_report(results, out)
    typer.echo(f"report: {page}")
