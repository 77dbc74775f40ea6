"""``fprun sweep``: a Ray Tune sweep (``kind: sweep`` YAML), resumable with ``Tuner.restore``.

``--dry-run`` plans every grid point's trial without starting Ray and prints the union of their
steps as one table (steps that trials share appear once), with the trials that use each.
``--local`` does not apply: a sweep is Ray Tune (docs/cli.md).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    Artifacts,
    Results,
    SetOpt,
    log_err,
)


def sweep(
    config: Annotated[Path, typer.Argument(help="sweep YAML (kind: sweep)")],
    set_: SetOpt = None,
    address: Address = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the trials' steps as a table; run nothing")
    ] = False,
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
    if dry_run:
        from runner.experiments.sweep import load_sweep

        typer.echo(dry_run_text(load_sweep(config, set_ or []), results, artifacts))
        return
    from runner.sweep.tuner import run_sweep

    out = run_sweep(
        config,
        set_ or [],
        results=results,
        artifacts=artifacts,
        address=address,
        resume=resume,
        restart_errored=restart_errored,
        log=log_err,
    )
    typer.echo(out.text)
    typer.echo(
        f"tune experiment: {out.experiment_path}  (rows: fprun results show "
        f"--kind sweep_trial --results {results})"
    )
    if not out.ok:
        raise typer.Exit(1)


def grid_points(cfg: Any) -> list[dict[str, Any]]:
    """Every grid combination; random dimensions at their first value (Tune draws the rest)."""
    keys = [d.key for d in cfg.search]
    values = [d.grid if d.sampler == "grid" else d.candidates()[:1] for d in cfg.search]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def dry_run_text(cfg: Any, results: str, artifacts: str) -> str:
    """The sweep's trials and the table of the steps they run (torch- and ray-free)."""
    from runner.estimates import estimate_plan
    from runner.exec.driver import artifact_dir
    from runner.experiments.sweep import plan_context, sweep_id, trial_experiment, trial_plan
    from runner.plan import Plan, executor_text
    from runner.results.records import record_path
    from runner.results.store import ResultStore

    points = grid_points(cfg)
    ctx = plan_context(cfg.config_dir, results, artifacts)
    trials = [trial_plan(trial_experiment(cfg, p), ctx) for p in points]
    plan = Plan([s for steps in trials for s in steps])
    store = ResultStore(results)
    done = {
        s.step_id
        for s in plan
        if store.done(s.result_kind, s.step_id) or record_path(artifact_dir(artifacts, s)).is_file()
    }
    index = {s.step_id: i for i, s in enumerate(plan, 1)}
    random = [d.key for d in cfg.search if d.sampler != "grid"]
    t = cfg.tune
    lines = [
        f"sweep {cfg.name} ({sweep_id(cfg)}): {len(points)} grid point(s) x {t.num_samples} "
        f"sample(s); {t.max_concurrent_trials} trial(s) at a time, each reserving "
        f"{t.trial.cpus:g} CPU" + (f", {t.trial.gpus:g} GPU" if t.trial.gpus else ""),
    ]
    if random:
        lines.append(f"  random dimensions ({', '.join(random)}) shown at their first value")
    for p, steps in zip(points, trials, strict=True):
        params = ", ".join(f"{k}={v}" for k, v in p.items())
        ids = ",".join(str(index[s.step_id]) for s in Plan(steps))  # inputs included
        lines.append(f"  trial {params}: steps {ids}")
    table = plan.dry_run_text(
        done=done,
        estimates=estimate_plan(plan, store, artifacts),
        executor=lambda s: executor_text(s) if s.executor == "train" else "in the trial",
    )
    return "\n".join(lines) + "\n" + table
