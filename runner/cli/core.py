"""Core verbs: run, demo, validate, ls, results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Artifacts,
    Results,
    SetOpt,
    configs_dir,
    finish_run,
)
from tasks.errors import ConfigError


def run(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    set_: SetOpt = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    local: Annotated[bool, typer.Option("--local", help="in-process reference executor")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the steps only")] = False,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Run any experiment; re-running resumes (finished steps are skipped)."""
    from runner.exec.run import run_experiment

    if local and address:
        raise ConfigError("--local and --address exclude each other", "pass only one")
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
    out: Annotated[Path | None, typer.Option(help="put results/ and artifacts/ here")] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="the full IF protocols (~70 min on 2 cores): configs/demo_full.yaml"
        ),
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="in-process reference executor")] = False,
) -> None:
    """Run configs/demo.yaml (IF_SFT and HuRef on SmolLM2, ~15 min on 2 cores) or --full."""
    from runner.exec.run import run_experiment

    results = str(out / "results") if out else DEFAULT_RESULTS
    artifacts = str(out / "artifacts") if out else DEFAULT_ARTIFACTS
    config = configs_dir() / ("demo_full.yaml" if full else "demo.yaml")
    finish_run(run_experiment(config, results=results, artifacts=artifacts, local=local))
    typer.echo(f"results: {results}  (fprun results show --results {results})")


def validate(configs: Annotated[list[Path], typer.Argument(help="YAML files")]) -> None:
    """Check configs against their schema without importing torch or ray."""
    from runner.config import load_experiment

    for path in configs:
        cfg = load_experiment(path)
        typer.echo(f"ok  {path}  (kind {cfg.kind})")


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
