"""``fprun report RESULTS --out DIR``: the HTML page of a result store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import Force, check_out, clear_out


def report(
    results: Annotated[Path, typer.Argument(help="results folder of one or more runs")],
    out: Annotated[Path, typer.Option(help="new folder for index.html and its PNGs")],
    force: Force = False,
) -> None:
    """Write a static HTML page with plots of every result kind present (no recomputation)."""
    check_out(out, force=force)
    typer.echo(f"report: {write_report(results, out)}")


def write_report(results: Path | str, out: Path) -> Path:
    """Build the page into a temporary sibling and swap it in whole (replacing ``out``, which
    the caller checked); returns the page's path."""
    from runner.results.report.page import build_report
    from tasks.files import atomic_path

    with atomic_path(out) as tmp:  # the page appears whole, or not at all
        page = build_report(results, tmp)
        clear_out(out)
    return out / page.name
