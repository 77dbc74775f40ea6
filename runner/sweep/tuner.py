"""Ray Tune sweeps (``fprun sweep``): a ``Tuner`` over any experiment's search space.

The driver (this module) runs a :class:`ray.tune.Tuner`; each trial (``runner.sweep.trial``)
drives its own Ray Train runs, whose workers get their own placement group, as Ray documents Train
V2 inside Tune. Trials reserve ``tune.trial`` through a ``PlacementGroupFactory``, and
``tune.max_concurrent_trials`` leaves CPUs/GPUs for the Train workers. Tune's experiment lives in
``ARTIFACTS/tune/<sweep_id>``; running the same sweep again calls ``Tuner.restore``, so finished
trials never rerun. Only the driver writes results (:class:`runner.results.store.ResultStore`):
each ``sweep_trial`` row when Tune reports it (again at the end, idempotently) and the step tables.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from runner.exec.ray_tasks import (
    alive_nodes,
    check_shared_paths,
    init_ray,
    job_working_dir,
    unwrap,
)
from runner.experiments import sweep as sweep_kind
from runner.results.store import ResultStore
from runner.sweep.rows import RowWriter, TrialOutcome, summary_text
from tasks.errors import ConfigError, FprunError, StoreError

TUNE_DIR = "tune"  # ARTIFACTS/tune/<sweep_id>/: Tune's storage_path and experiment name
# The RowWriter of the sweep this process is running. Tune pickles the run config (callbacks
# included) into the experiment and restores it on resume, so the callback holds no paths of its
# own: it writes through whatever the *resuming* command configured.
_ACTIVE: dict[str, RowWriter] = {}


@dataclass
class SweepResult:
    """What ``fprun sweep`` prints and how it exits."""

    sweep_id: str
    experiment_path: Path
    trial_ids: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    unfinished: int = 0
    restored: bool = False
    seconds: float = 0.0  # wall time of Tuner.fit (Ray start-up excluded)
    text: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.unfinished


def run_sweep(
    config_path: str | Path,
    overrides: Iterable[str] = (),
    *,
    results: str,
    artifacts: str,
    address: str | None = None,
    resume: bool = True,
    restart_errored: bool = True,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run (or resume) a sweep YAML under Ray Tune; write its rows; return the summary.

    Raises:
        ConfigError, StoreError: bad config or paths, before Ray starts; or the first bad-input
            error a trial raised, after the rows of the other trials are written.
    """
    # Over 60 lines on purpose: Ray's start, the Tuner and the row writer share one try/finally.
    cfg = sweep_kind.load_sweep(config_path, list(overrides))
    artifacts_root = _local_root(artifacts)
    results_root = results if "://" in str(results) else str(Path(results).expanduser().resolve())
    _require_train_v2()
    # Each phase checkpoint (num_to_keep=1) forces a snapshot of Tune's experiment state; that is
    # what keeps a restore exact, and at three tiny snapshots per trial it costs nothing.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sid = sweep_kind.sweep_id(cfg)
    storage = artifacts_root / TUNE_DIR
    out = SweepResult(sid, storage / sid)
    owns = not ray.is_initialized()
    if owns:
        init_ray(address or os.environ.get("RAY_ADDRESS") or None)
    try:
        check_shared_paths(
            results_root, str(artifacts_root), n_nodes=alive_nodes(), job_dir=job_working_dir()
        )
        writer = RowWriter(cfg, sid, ResultStore(results_root), artifacts_root)
        _ACTIVE["writer"] = writer
        tuner, out.restored = _tuner(
            cfg,
            sid,
            storage,
            artifacts_root,
            results_root,
            resume=resume,
            restart_errored=restart_errored,
            log=log,
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        out.seconds = time.perf_counter() - t0
        _collect(grid, writer, out)
    finally:
        _ACTIVE.pop("writer", None)
        if owns:
            ray.shutdown()
    rows = writer.store.read("sweep_trial", out.trial_ids).to_pylist()
    out.text = (
        summary_text(cfg, rows)
        + f"\n  sweep wall time {out.seconds:.0f} s"
        + (" (resumed)" if out.restored else "")
    )
    if out.unfinished:
        out.text += (
            f"\n  {out.unfinished} trial(s) unfinished: run the same command again to resume"
        )
    bad = [e for e in out.errors if isinstance(e, FprunError)]
    if bad:
        log(out.text)
        raise bad[0]
    return out


def _local_root(artifacts: str) -> Path:
    if "://" in str(artifacts):
        raise StoreError(
            f"--artifacts {artifacts} is a URI",
            "artifacts (and Tune's experiment) need a (shared) filesystem path",
        )
    return Path(artifacts).expanduser().resolve()


def _require_train_v2() -> None:
    """Trials launch Train V2 ``TorchTrainer`` runs; V1 inside Tune is a different API."""
    flag = os.environ.get("RAY_TRAIN_V2_ENABLED", "1").strip().lower()
    if flag in ("0", "false", "no", "off"):
        raise ConfigError(
            "RAY_TRAIN_V2_ENABLED is off, but fprun sweep runs Ray Train V2 inside Tune trials",
            "unset RAY_TRAIN_V2_ENABLED (or set it to 1)",
        )
    os.environ["RAY_TRAIN_V2_ENABLED"] = "1"


def _tuner(
    cfg: sweep_kind.Config,
    sid: str,
    storage: Path,
    artifacts: Path,
    results: str,
    *,
    resume: bool,
    restart_errored: bool,
    log: Callable[[str], None],
) -> tuple[Any, bool]:
    """``Tuner.restore`` when the experiment folder can be restored (and ``resume``), else a
    fresh ``Tuner`` (an unrestorable or unwanted old folder is removed: it only holds Tune's
    bookkeeping; trial outputs live in the step artifact folders and are reused)."""
    from ray import tune

    path = storage / sid
    trainable = _trainable(cfg, artifacts, results)
    resumed = False
    if resume and tune.Tuner.can_restore(str(path)):
        errored, unfinished = _saved_trials(path, trainable)
        limit = cfg.tune.max_concurrent_trials
        if not (errored and restart_errored) and not (limit and unfinished > limit):
            log(f"resuming sweep {cfg.name} from {path}")
            return tune.Tuner.restore(
                str(path),
                trainable=trainable,
                resume_unfinished=True,
                restart_errored=restart_errored,
            ), True
        # Tune's restore starts every restored unfinished trial and re-queues errored ones
        # outside BasicVariantGenerator's concurrency count, so they ran side by side (seen on 2
        # cores: two SmolLM2 trials at once, each starving the other's Train worker). A fresh
        # Tuner over the same grid keeps the limit exact; trials that finished come back from
        # their steps' records in seconds, and the rows are keyed by trial ID.
        log(
            f"sweep {cfg.name}: {errored} errored and {unfinished} unfinished trial(s) would "
            "not respect max_concurrent_trials under Tune's restore; running the grid under a "
            "fresh Tuner (finished steps are reused from their artifact folders)"
        )
        resumed = True
    elif path.exists():
        log(f"starting sweep {cfg.name} afresh (removing Tune state in {path})")
    shutil.rmtree(path, ignore_errors=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg),
        tune_config=_tune_config(cfg),
        run_config=tune.RunConfig(
            name=sid,
            storage_path=str(storage),
            callbacks=[_RowCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    ), resumed


def _saved_trials(path: Path, trainable: Any) -> tuple[int, int]:
    """(errored, unfinished) trial counts of the saved experiment at ``path`` (reads its state;
    runs nothing)."""
    from ray import tune

    grid = tune.Tuner.restore(str(path), trainable=trainable).get_results()
    return grid.num_errors, len(grid) - grid.num_errors - grid.num_terminated


def _trainable(cfg: sweep_kind.Config, artifacts: Path, results: str) -> Any:
    from runner.sweep.trial import sweep_trainable

    t = cfg.tune.trial
    bundle = {"CPU": t.cpus, **({"GPU": t.gpus} if t.gpus else {})}
    fn = tune.with_parameters(
        sweep_trainable,
        sweep=cfg.model_dump(mode="json"),
        artifacts=str(artifacts),
        results=results,
        cwd=os.getcwd(),
        config_dir=cfg.config_dir,
    )
    return tune.with_resources(fn, tune.PlacementGroupFactory([bundle]))


def param_space(cfg: sweep_kind.Config) -> dict[str, Any]:
    """The search space as Tune samplers, keyed by the dotted experiment keys."""
    make = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
    }
    return {d.key: make[d.sampler](list(getattr(d, d.sampler))) for d in cfg.search}


def _tune_config(cfg: sweep_kind.Config) -> Any:
    """No ``metric`` here on purpose: FSR_post exists only in a trial's last report, and Tune
    rejects reports lacking the TuneConfig metric; the best trial is picked from the rows."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = cfg.tune.scheduler
    scheduler = None
    if s.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=s.metric,
            mode=s.mode,
            max_t=3,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    # The concurrency limit goes to the search algorithm itself: Tune ignores TuneConfig's
    # max_concurrent_trials when a BasicVariantGenerator is passed in (seeded here).
    search = BasicVariantGenerator(
        max_concurrent=cfg.tune.max_concurrent_trials, random_state=cfg.tune.seed
    )
    return tune.TuneConfig(num_samples=cfg.tune.num_samples, search_alg=search, scheduler=scheduler)


class _RowCallback(tune.Callback):
    """Writes a trial's rows the moment Tune reports it complete (driver side)."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        writer = _ACTIVE.get("writer")
        if writer is not None:
            writer.write(
                TrialOutcome(
                    dict(trial.config), dict(trial.last_result or {}), trial.trial_id, ended=True
                )
            )


def _collect(grid: Any, writer: RowWriter, out: SweepResult) -> None:
    """Write every ended trial's rows from the final ResultGrid; count errors and unfinished."""
    for result in grid:
        error = unwrap(result.error) if result.error is not None else None
        metrics = dict(result.metrics or {})
        outcome = TrialOutcome(
            dict(result.config or {}),
            metrics,
            metrics.get("trial_id"),
            error=error,
            ended=bool(metrics.get("done")),
        )
        tid = writer.write(outcome)
        if tid is None:
            out.unfinished += 1
            continue
        if tid not in out.trial_ids:
            out.trial_ids.append(tid)
        if error is not None:
            out.errors.append(error)
