"""Core verbs: run, demo, validate, ls, results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_REPORT,
    DEFAULT_RESULTS,
    Address,
    Artifacts,
    Local,
    Results,
    SetOpt,
    check_executor,
    configs_dir,
    finish_run,
    log_err,
)
from tasks.errors import ConfigError, FprunError


def run(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    set_: SetOpt = None,
    address: Address = None,
    local: Local = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan as a table; run nothing")
    ] = False,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Run any experiment; re-running resumes (finished steps are skipped)."""
    from runner.exec.run import run_experiment

    check_executor(local, address)
    finish_run(
        run_experiment(
            config,
            set_ or [],
            results=results,
            artifacts=artifacts,
            local=local,
            address=address,
            dry_run=dry_run,
        )
    )


def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            help="workspace for results/ and artifacts/ (reused on purpose: a second run resumes)"
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="the full IF protocols (~70 min on 2 cores): configs/demo_full.yaml"
        ),
    ] = False,
    local: Local = False,
    address: Address = None,
) -> None:
    """Run configs/demo.yaml (IF_SFT, HuRef and a small merge grid on SmolLM2, ~15 min on 2
    cores) or --full, then write the HTML report of its results."""
    from runner.cli.report import write_report
    from runner.exec.run import run_experiment

    check_executor(local, address)
    results = str(out / "results") if out else DEFAULT_RESULTS
    artifacts = str(out / "artifacts") if out else DEFAULT_ARTIFACTS
    config = configs_dir() / ("demo_full.yaml" if full else "demo.yaml")
    finish_run(
        run_experiment(config, results=results, artifacts=artifacts, local=local, address=address)
    )
    typer.echo(f"results: {results}  (fprun results show --results {results})")
    # the demo's own workspace: its report is rebuilt from the results on every run
    page = write_report(results, out / "report" if out else Path(DEFAULT_REPORT))
    typer.echo(f"report: {page.resolve().as_uri()}")


def validate(configs: Annotated[list[Path], typer.Argument(help="YAML files")]) -> None:
    """Check configs as a run would (schema, model names, referenced files), without torch or
    ray; every file is checked and every bad one reported."""
    from runner.exec.run import check_config

    bad = 0
    for path in configs:
        try:
            kind = check_config(path, results=DEFAULT_RESULTS, artifacts=DEFAULT_ARTIFACTS)
        except FprunError as exc:
            bad += 1
            line = exc.one_line()
            log_err(f"error: {line}" if str(path) in line else f"error: {path}: {line}")
            continue
        typer.echo(f"ok  {path}  (kind {kind})")
    if bad:
        raise typer.Exit(2)


def ls_(
    what: Annotated[str, typer.Argument(help="models | methods | configs")] = "configs",
) -> None:
    """List zoo models, experiment kinds or the bundled configs."""
    if what == "methods":
        from runner.experiments import KINDS

        for k in sorted(KINDS):
            typer.echo(k)
    elif what == "configs":
        root = configs_dir()
        for p in sorted(root.rglob("*.yaml")):
            first = p.read_text(encoding="utf-8").splitlines()[:1]
            doc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
            typer.echo(f"{p.relative_to(root.parent)}  {doc}")
    elif what == "models":
        from tasks.models.zoo import list_zoo

        for m in list_zoo():
            typer.echo(f"{m['name']:<28} {m.get('kind', ''):<5} {m.get('description', '')}")
    else:
        raise ConfigError(f"cannot list {what!r}", "use models, methods or configs")
