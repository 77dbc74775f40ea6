"""One sweep trial inside Ray Tune: the base experiment's plan in three checkpointed phases.

A trial builds its plan with the base experiment's own kind (same step IDs as ``fprun run``) and
drives its own Ray Train runs (the Train V2 layering): ``fingerprint`` (everything before the
fine-tunes: training through :func:`runner.exec.train.run_train_step`, FSR_pre, utility evals),
``finetune`` (the fine-tune steps: a user's attack, a merge grid's expert) and ``post`` (what
depends on them: FSR_post, merge cells); other steps run in the trial's own process. Each
phase reports with ``tune.report``, the first two with a checkpoint of the phases done, so an
interrupted trial resumes after its last finished phase; a shared step runs once under a file
lock. ``ARTIFACTS/sweep/<trial_id>/phases.jsonl`` logs every phase and step (nothing runs twice).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from runner.exec.driver import artifact_dir, device_name, run_step_inline, step_spec
from runner.experiments import sweep as sweep_kind
from runner.plan import Plan, Step
from runner.results.records import Outcome, find_record, write_record
from runner.results.store import ResultStore, now
from runner.sweep.metrics import metrics_for, step_seconds
from tasks.files import locked

PHASES = ("fingerprint", "finetune", "post")
PHASE_LOG = "phases.jsonl"  # in ARTIFACTS/sweep/<trial_id>/
STATE_FILE = "trial_state.json"  # inside a Tune checkpoint
SWEEP_DIR = "sweep"


def sweep_trainable(
    params: dict[str, Any],
    *,
    sweep: dict[str, Any],
    artifacts: str,
    results: str | None,
    cwd: str,
    config_dir: str | None = None,
) -> None:
    """The Tune trainable (function API): one trial of the sweep ``sweep`` (a Config dump).

    ``params`` is the trial's point of the search space (dotted experiment keys). Bad input is
    re-raised as a picklable carrier, so the driver can still exit 2 with the one-line message.
    """
    from runner.exec.ray_tasks import carried_errors

    with carried_errors():
        store = ResultStore(results) if results else None
        cfg = sweep_kind.Config.model_validate(sweep).model_copy(update={"config_dir": config_dir})
        _run_trial(params, cfg, Path(artifacts), store, cwd)


def _run_trial(
    params: dict[str, Any],
    cfg: sweep_kind.Config,
    artifacts: Path,
    store: ResultStore | None,
    cwd: str,
) -> None:
    from ray import tune

    if Path(cwd).is_dir():  # Tune starts a trial in its own folder; relative refs are the caller's
        os.chdir(cwd)
    _set_threads(cfg.tune.trial)
    tid = sweep_kind.trial_id(cfg, params)
    ctx = sweep_kind.plan_context(cfg.config_dir, str(store.root) if store else "", str(artifacts))
    experiment = sweep_kind.trial_experiment(cfg, params)
    # Plan(...) brings in the upstream steps a kind wires only as inputs (a merge grid's
    # fingerprint), in dependency order.
    phases = split_phases(list(Plan(sweep_kind.trial_plan(experiment, ctx))))
    log = PhaseLog(artifacts / SWEEP_DIR / tid / PHASE_LOG)
    state = _restored_state(tune.get_checkpoint()) or {
        "trial_id": tid,
        "trial_started_at": now().isoformat(),
        "phase_seconds": {},
    }
    records: list[dict[str, Any]] = []
    for phase in PHASES:
        found = [find_record(store, s, artifact_dir(artifacts, s)) for s in phases[phase]]
        done = phase in state["phase_seconds"] and all(f is not None for f in found)
        if done:
            log.write(phase, "restored")
        else:
            log.write(phase, "start")
            t0 = time.perf_counter()
            ran = [run_step_cached(step, artifacts, store, log, phase) for step in phases[phase]]
            records += ran
            state["phase_seconds"][phase] = _phase_seconds(ran, time.perf_counter() - t0)
            log.write(phase, "end", seconds=state["phase_seconds"][phase])
        if done:
            records += [step_record(s, f) for s, f in zip(phases[phase], found, strict=True)]
        _report(tune, phase, state, records, experiment.kind)


def split_phases(steps: list[Step]) -> dict[str, list[Step]]:
    """The plan's steps by phase: user fine-tunes, what depends on them, and the rest (in order)."""
    ft_ids = {s.step_id for s in steps if s.kind == "finetune"}

    def after_finetune(step: Step) -> bool:
        return any(d.step_id in ft_ids or after_finetune(d) for d in step.inputs.values())

    out: dict[str, list[Step]] = {p: [] for p in PHASES}
    for s in steps:
        phase = (
            "finetune" if s.step_id in ft_ids else "post" if after_finetune(s) else "fingerprint"
        )
        out[phase].append(s)
    return out


def run_step_cached(
    step: Step,
    artifacts: Path,
    store: ResultStore | None = None,
    log: PhaseLog | None = None,
    phase: str = "",
) -> dict[str, Any]:
    """Run one step unless it is finished; returns its record (step identity, rows, provenance).

    Finished means in the result store (``fprun run`` did it) or holding a record file (another
    trial did it; the driver writes its table when the trial reports). Training steps go to Ray
    Train (``runner.exec.train.run_train_step``), the others run in this process. A lock next to
    the artifact folder makes trials that share a step (the vanilla evals) compute it once.
    """
    out = artifact_dir(artifacts, step)
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out.parent / f".{step.step_id}.lock"):
        found = find_record(store, step, out)
        computed = found is None
        if found is None:
            found = _execute(step, artifacts)
            write_record(out, found)
    if log is not None:
        log.write(phase, "step", step_id=step.step_id, kind=step.kind, computed=computed)
    return step_record(step, found) | {"computed": computed}


def step_record(step: Step, outcome: Outcome) -> dict[str, Any]:
    """A step's identity plus its Outcome as JSON: what trial metrics and the driver read."""
    return {
        "kind": step.kind,
        "step_id": step.step_id,
        "result_kind": step.result_kind,
        "config_hash": step.config_hash,
        "label": step.label,
        **outcome.to_json(),
    }


def _phase_seconds(ran: list[dict[str, Any]], measured: float) -> float:
    """A phase's wall time: as measured, unless every step was reused from its record.

    That happens when a fresh Tuner re-runs a trial an earlier run finished
    (``runner.sweep.tuner``); the trial's cost is then the steps' recorded durations, not the
    milliseconds of reading them.
    """
    if any(r.get("computed", True) for r in ran):
        return round(measured, 3)
    return round(sum(step_seconds(r) for r in ran), 3)


def _execute(step: Step, artifacts: Path) -> Outcome:
    spec = step_spec(step, artifacts)
    if step.executor == "train":
        from runner.exec.train import run_train_step

        return run_train_step(spec)
    return run_step_inline(spec)


class PhaseLog:
    """Append-only JSON lines of one trial's phase and step executions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.execution = uuid.uuid4().hex[:8]  # one per trial launch (a log nonce, not an ID)
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, phase: str, event: str, **extra: Any) -> None:
        line = {
            "execution": self.execution,
            "phase": phase,
            "event": event,
            "pid": os.getpid(),
            "at": now().isoformat(),
            **extra,
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def _set_threads(trial: Any) -> None:
    import torch

    torch.set_num_threads(trial.threads or max(1, int(trial.cpus)))


def _restored_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _report(tune: Any, phase: str, state: dict[str, Any], records: list[dict], kind: str) -> None:
    """``tune.report`` of everything known so far; a checkpoint at every phase boundary."""
    metrics = metrics_for(kind, records)
    metrics.update(
        fprun_trial_id=state["trial_id"],
        phase=phase,
        phases_done=PHASES.index(phase) + 1,
        phase_seconds=dict(state["phase_seconds"]),
        trial_started_at=state["trial_started_at"],
        device=f"tune-trial:{device_name()}",
        steps_json=json.dumps(
            [{k: r[k] for k in ("kind", "step_id", "result_kind", "config_hash")} for r in records]
        ),
    )
    with tempfile.TemporaryDirectory(prefix="fprun-trial-") as tmp:
        (Path(tmp) / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
