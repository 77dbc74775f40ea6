"""``fprun sweep``: a Ray Tune sweep (``kind: sweep`` YAML), resumable with ``Tuner.restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import DEFAULT_ARTIFACTS, DEFAULT_RESULTS, Artifacts, Results, SetOpt


def sweep(
    config: Annotated[Path, typer.Argument(help="sweep YAML (kind: sweep)")],
    set_: SetOpt = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="resume an interrupted sweep from ARTIFACTS/tune/<sweep_id> (finished steps are "
            "reused either way)",
        ),
    ] = True,
    restart_errored: Annotated[
        bool,
        typer.Option(
            "--restart-errored/--keep-errored",
            help="on resume, run errored trials again (finished phases are reused)",
        ),
    ] = True,
) -> None:
    """Run a Ray Tune sweep over an experiment; prints the trial table and the best trial."""
    from runner.sweep.tuner import run_sweep

    out = run_sweep(
        config,
        set_ or [],
        results=results,
        artifacts=artifacts,
        address=address,
        resume=resume,
        restart_errored=restart_errored,
        log=typer.echo,
    )
    typer.echo(out.text)
    typer.echo(
        f"tune experiment: {out.experiment_path}  (rows: fprun results show "
        f"--kind sweep_trial --results {results})"
    )
    if not out.ok:
        raise typer.Exit(1)
