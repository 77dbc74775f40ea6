"""Core verbs: run, demo, validate, ls, results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli import app
from runner.cli.options import DEFAULT_ARTIFACTS, DEFAULT_RESULTS, Artifacts, Results, SetOpt
from tasks.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def configs_dir() -> Path:
    """configs/ of the checkout fprun runs from (editable install), else of the current folder."""
    for cand in (REPO_ROOT / "configs", Path.cwd() / "configs"):
        if cand.is_dir():
            return cand
    raise ConfigError("no configs/ folder found", "run fprun from its checkout")


def _finish(result) -> None:
    if result.text:
        typer.echo(result.text)
    if result.summary is not None and not result.summary.ok:
        failed = len(result.summary.failed) + len(result.summary.blocked)
        typer.echo(f"{failed} step(s) failed or were blocked; fix and re-run to resume", err=True)
        raise typer.Exit(1)


@app.command()
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
    from runner.run import run_experiment

    if local and address:
        raise ConfigError("--local and --address exclude each other", "pass only one")
    _finish(run_experiment(config, set_ or [], results=results, artifacts=artifacts,
                           local=local, address=address, dry_run=dry_run))


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="put results/ and artifacts/ here")] = None,
    local: Annotated[bool, typer.Option("--local", help="in-process reference executor")] = False,
) -> None:
    """Run configs/demo.yaml, the embedded default experiment on SmolLM2."""
    from runner.run import run_experiment

    results = str(out / "results") if out else DEFAULT_RESULTS
    artifacts = str(out / "artifacts") if out else DEFAULT_ARTIFACTS
    _finish(run_experiment(configs_dir() / "demo.yaml", results=results, artifacts=artifacts,
                           local=local))
    typer.echo(f"results: {results}  (fprun results show --results {results})")


@app.command()
def validate(configs: Annotated[list[Path], typer.Argument(help="YAML files")]) -> None:
    """Check configs against their schema without importing torch or ray."""
    from runner.config import load_experiment

    for path in configs:
        cfg = load_experiment(path)
        typer.echo(f"ok  {path}  (kind {cfg.kind})")


@app.command("ls")
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
        from tasks.zoo import list_zoo

        for m in list_zoo():
            typer.echo(f"{m['name']:<28} {m.get('kind', ''):<5} {m.get('description', '')}")
    else:
        raise ConfigError(f"cannot list {what!r}", "use models, methods or configs")


results_app = typer.Typer(help="Read the result tables.", no_args_is_help=True)
app.add_typer(results_app, name="results")


@results_app.command("show")
def results_show(
    kind: Annotated[str | None, typer.Option(help="result kind (default: all)")] = None,
    results: Results = DEFAULT_RESULTS,
    provenance: Annotated[bool, typer.Option(help="include provenance columns")] = False,
    limit: Annotated[int, typer.Option(help="rows per kind")] = 50,
) -> None:
    """Print result rows as tables."""
    from runner.report_text import show_tables

    typer.echo(show_tables(results, kind, provenance=provenance, limit=limit))


@results_app.command("export")
def results_export(
    out: Annotated[Path, typer.Option(help="output file (or folder for parquet)")],
    kind: Annotated[str, typer.Option(help="result kind")],
    fmt: Annotated[str, typer.Option("--format", help="parquet | csv | json")] = "parquet",
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Export one result kind to a single Parquet, CSV or JSON-lines file."""
    from runner.report_text import export_kind

    typer.echo(export_kind(results, kind, out, fmt))
