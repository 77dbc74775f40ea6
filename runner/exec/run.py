"""``fprun run``: load a config, plan it, execute it on a backend, print its summary.

Also used directly by tests and by the other CLI verbs (``fprun fingerprint`` is a one-experiment
run), so there is one code path from YAML to Parquet whatever the entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runner.config import load_experiment
from runner.exec.driver import LocalBackend, RunSummary, execute_plan
from runner.experiments import get_kind
from runner.plan import Plan, PlanContext
from runner.results.store import ResultStore


@dataclass
class RunResult:
    plan: Plan
    summary: RunSummary | None
    text: str  # the experiment's summary table ('' for a dry run)


def plan_experiment(cfg, config_path: str | Path, results: str, artifacts: str) -> tuple:
    """Expand a validated config into a deduplicated, ordered :class:`Plan`."""
    ctx = PlanContext(config_path=Path(config_path), results=results, artifacts=artifacts)
    module = get_kind(cfg.kind)
    return Plan(module.plan(cfg, ctx)), module, ctx


def run_experiment(
    config_path: str | Path,
    overrides: Iterable[str] = (),
    *,
    results: str,
    artifacts: str,
    local: bool = False,
    address: str | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Plan and run one experiment YAML; re-running skips the steps already in ``results``."""
    cfg = load_experiment(config_path, list(overrides))
    plan, module, ctx = plan_experiment(cfg, config_path, results, artifacts)
    if dry_run:
        return RunResult(plan, None, plan.dry_run_text())
    store = ResultStore(results)
    if local:
        backend = LocalBackend()
    else:
        from runner.exec.ray_tasks import RayBackend  # local: imports ray

        backend = RayBackend(address=address, results=results, artifacts=artifacts)
    try:
        summary = execute_plan(plan, store, artifacts, backend, log=log)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    text = module.summarize(cfg, store, ctx) if hasattr(module, "summarize") else ""
    return RunResult(plan, summary, text)
