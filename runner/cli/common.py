"""What the verbs share: option spellings, one-step runs, and placing a result at ``--out``.

Every verb spells ``--results``, ``--artifacts`` and ``--set`` the same way, runs a single step
through the same driver as ``fprun run`` (so its row gets provenance and a re-run is skipped), and
follows one ``--out`` rule: a new or empty folder, never an overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Results = Annotated[str, typer.Option("--results", help="results root (folder or pyarrow.fs URI)")]
Artifacts = Annotated[str, typer.Option("--artifacts", help="artifacts root (shared folder)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config key: a.b=value (repeatable)")
]
DEFAULT_RESULTS = "./fprun-results"
DEFAULT_ARTIFACTS = "./fprun-artifacts"
REPO_ROOT = Path(__file__).resolve().parents[2]


def configs_dir() -> Path:
    """configs/ of the checkout fprun runs from (editable install), else of the current folder."""
    from tasks.errors import ConfigError

    for cand in (REPO_ROOT / "configs", Path.cwd() / "configs"):
        if cand.is_dir():
            return cand
    raise ConfigError("no configs/ folder found", "run fprun from its checkout")


def finish_run(result: Any) -> None:
    """Print an experiment's summary; exit 1 when a step failed or was blocked."""
    if result.text:
        typer.echo(result.text)
    if result.summary is not None and not result.summary.ok:
        failed = len(result.summary.failed) + len(result.summary.blocked)
        typer.echo(f"{failed} step(s) failed or were blocked; fix and re-run to resume", err=True)
        raise typer.Exit(1)


def run_single_step(step: Any, results: str, artifacts: str) -> Path:
    """Execute a one-step plan locally; return the step's artifact folder (exit 1 on failure)."""
    from runner.exec.driver import LocalBackend, artifact_dir, execute_plan
    from runner.plan import Plan
    from runner.results.store import ResultStore

    summary = execute_plan(
        Plan([step]),
        ResultStore(results),
        artifacts,
        LocalBackend(),
        log=lambda line: typer.echo(line, err=True),
    )
    if not summary.ok:
        typer.echo(
            f"step {step.step_id} failed: {summary.failed.get(step.step_id, 'blocked')}", err=True
        )
        raise typer.Exit(1)
    return artifact_dir(artifacts, step)


def check_out(out: Path) -> None:
    """``--out`` must be new (or an empty folder), so nothing of the user's is overwritten."""
    from tasks.errors import StoreError

    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise StoreError(f"--out {out} already exists and is not empty", "pass a new folder")


def place_out(src: Path, out: Path, *, link: bool = False) -> Path:
    """Put the artifact folder ``src`` at ``out``: a symlink, or hard links file by file (no extra
    disk; copies where links cannot cross filesystems)."""
    from tasks.files import atomic_copytree

    out = out.expanduser()
    if out.exists():
        out.rmdir()
    if link:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(src.resolve(), target_is_directory=True)
        return out
    return atomic_copytree(src, out, hardlink=True)
