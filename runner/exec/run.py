"""``fprun run``: load a config, plan it, execute it on a backend, print its summary.

Also used directly by tests and by the other CLI verbs (``fprun fingerprint`` is a one-experiment
run, the single-step verbs go through :func:`execute_with`), so there is one code path from YAML
to Parquet whatever the entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config import load_experiment
from runner.exec.driver import LocalBackend, RunSummary, execute_plan
from runner.exec.progress import RunProgress
from runner.experiments import get_kind
from runner.plan import Plan, PlanContext
from runner.results.store import ResultStore


@dataclass
class RunResult:
    plan: Plan
    summary: RunSummary | None
    text: str  # the experiment's summary table, or the dry-run table


def plan_experiment(cfg, config_path: str | Path, results: str, artifacts: str) -> tuple:
    """Expand a validated config into a deduplicated, ordered :class:`Plan`."""
    ctx = PlanContext(config_path=Path(config_path), results=results, artifacts=artifacts)
    module = get_kind(cfg.kind)
    return Plan(module.plan(cfg, ctx)), module, ctx


def check_config(path: str | Path, *, results: str, artifacts: str) -> str:
    """Load and plan a config exactly as a run would, without running anything; its kind.

    Planning resolves model names and referenced files (``fprun validate``). A sweep plans its
    base experiment (trials are created by Ray Tune while it runs).
    """
    cfg = load_experiment(path)
    if cfg.kind == "sweep":
        from runner.experiments.sweep import plan_context, trial_plan

        trial_plan(cfg.experiment, plan_context(str(Path(path).parent), results, artifacts))
    else:
        plan_experiment(cfg, path, results, artifacts)
    return cfg.kind


def dry_run_text(plan: Plan, results: str, artifacts: str, *, local: bool) -> str:
    """The plan as a table (runner.plan), with what ``results`` already holds and estimates."""
    from runner.estimates import estimate_plan

    store = ResultStore(results)
    done = {s.step_id for s in plan if store.done(s.result_kind, s.step_id)}
    return plan.dry_run_text(
        local=local, done=done, estimates=estimate_plan(plan, store, artifacts)
    )


def make_backend(
    results: str, artifacts: str, *, local: bool, address: str | None, default_local: bool
) -> Any:
    """In-process for ``local`` (or ``default_local`` without a cluster address), else Ray."""
    if local or (default_local and not (address or os.environ.get("RAY_ADDRESS"))):
        return LocalBackend()
    from runner.exec.ray_tasks import RayBackend  # local: imports ray

    return RayBackend(address=address, results=results, artifacts=artifacts)


def execute_with(
    plan: Plan,
    results: str,
    artifacts: str,
    *,
    local: bool,
    address: str | None,
    default_local: bool = False,
    log: Callable[[str], None] | None = None,
    progress: RunProgress | None = None,
) -> RunSummary:
    """Run ``plan`` on the backend the flags choose; the roots are checked before Ray starts."""
    from runner.exec.driver import check_roots

    store = ResultStore(results)
    if any(not store.done(s.result_kind, s.step_id) for s in plan):
        check_roots(store, artifacts)
    backend = make_backend(
        results, artifacts, local=local, address=address, default_local=default_local
    )
    if progress is None and log is None:
        progress = RunProgress.for_stream()
    try:
        return execute_plan(plan, store, artifacts, backend, log=log, progress=progress)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def run_experiment(
    config_path: str | Path,
    overrides: Iterable[str] = (),
    *,
    results: str,
    artifacts: str,
    local: bool = False,
    address: str | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    progress: RunProgress | None = None,
    flags: dict[str, tuple[str, Any]] | None = None,
) -> RunResult:
    """Plan and run one experiment YAML; re-running skips the steps already in ``results``.

    Progress goes to ``progress``, else plain lines to ``log``, else the display that suits
    stderr (rich on a terminal, plain lines elsewhere). ``flags``: a verb's options, see
    :func:`runner.config.load_experiment`.
    """
    cfg = load_experiment(config_path, list(overrides), flags)
    plan, module, ctx = plan_experiment(cfg, config_path, results, artifacts)
    if dry_run:
        return RunResult(plan, None, dry_run_text(plan, results, artifacts, local=local))
    summary = execute_with(
        plan, results, artifacts, local=local, address=address, log=log, progress=progress
    )
    store = ResultStore(results)
    text = module.summarize(cfg, store, ctx) if hasattr(module, "summarize") else ""
    return RunResult(plan, summary, text)
