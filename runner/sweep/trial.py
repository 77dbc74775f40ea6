"""One sweep trial inside Ray Tune: the IF_adapter protocol in three checkpointed phases.

A trial is the Tune *driver* of its Ray Train runs (Ray's Train V2 layering): it builds the trial's
plan with the ``if_adapter`` kind (same steps, same step IDs as ``fprun run``), then runs it phase
by phase:

1. ``fingerprint``: the IF_adapter training step as a Ray Train ``TorchTrainer`` run
   (``runner.train.run_train_step``), then FSR_pre (``publish_w_adapter`` and any other
   pre-attack condition) and the utility evals of the vanilla and the published model;
2. ``finetune``: the user fine-tune(s), again as Ray Train runs;
3. ``post``: FSR_post (``tuned_w_adapter`` ...).

Training goes to Ray Train workers in their own placement group; verification and evals run in
the trial's own process (its Tune resources), one step at a time.

After each phase the trial reports its metrics with ``tune.report``; the first two reports carry a
Tune checkpoint holding which phases are done, so a trial that was in flight when the sweep was
interrupted resumes after its last finished phase (DESIGN.md 8.9). Underneath, every step's output
is keyed by its step ID (``ARTIFACTS/<kind>/<step_id>/``) and marked done by ``DONE_FILE`` once
complete, so even without a Tune checkpoint a re-run computes no finished step again; a step shared
by trials (the vanilla model's utility evals) is computed once, under a file lock.

Every phase and step execution appends a line to ``ARTIFACTS/sweep/<trial_id>/phases.jsonl``
(start, end, restored; per step computed or cached): the audit trail that shows no work ran twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.execute import StepSpec, artifact_dir, device_name, run_step_inline
from runner.experiments import sweep as sweep_kind
from runner.plan import Step
from runner.results import now
from runner.tune_metrics import trial_metrics

PHASES = ("fingerprint", "finetune", "post")
DONE_FILE = ".fprun-sweep-done.json"  # in a step's artifact folder: its rows, written last
PHASE_LOG = "phases.jsonl"  # in ARTIFACTS/sweep/<trial_id>/
STATE_FILE = "trial_state.json"  # inside a Tune checkpoint
SWEEP_DIR = "sweep"


def sweep_trainable(params: dict[str, Any], *, sweep: dict[str, Any], artifacts: str,
                    cwd: str) -> None:
    """The Tune trainable (function API): one trial of the sweep ``sweep`` (a Config dump).

    ``params`` is the trial's point of the search space (dotted experiment keys). Bad input is
    re-raised as a picklable carrier, so the driver can still exit 2 with the one-line message.
    """
    from runner.ray_exec import carried_errors

    with carried_errors():
        _run_trial(params, sweep_kind.Config.model_validate(sweep), Path(artifacts), cwd)


def _run_trial(params: dict[str, Any], cfg: sweep_kind.Config, artifacts: Path,
               cwd: str) -> None:
    from ray import tune

    if Path(cwd).is_dir():  # Tune starts a trial in its own folder; relative refs are the caller's
        os.chdir(cwd)
    _set_threads(cfg.tune.trial)
    tid = sweep_kind.trial_id(cfg, params)
    phases = split_phases(sweep_kind.trial_plan(sweep_kind.trial_experiment(cfg, params)))
    log = PhaseLog(artifacts / SWEEP_DIR / tid / PHASE_LOG)
    state = _restored_state(tune.get_checkpoint()) or {
        "trial_id": tid, "trial_started_at": now().isoformat(), "phase_seconds": {}}
    records: list[dict[str, Any]] = []
    for phase in PHASES:
        done = phase in state["phase_seconds"] and all(
            _done_file(artifacts, s).is_file() for s in phases[phase])
        if done:
            log.write(phase, "restored")
        else:
            log.write(phase, "start")
            t0 = time.perf_counter()
            ran = [run_step_cached(step, artifacts, log, phase) for step in phases[phase]]
            records += ran
            state["phase_seconds"][phase] = _phase_seconds(ran, time.perf_counter() - t0)
            log.write(phase, "end", seconds=state["phase_seconds"][phase])
        if done:
            records += [_read_done(artifacts, s) for s in phases[phase]]
        _report(tune, phase, state, records)


def split_phases(steps: list[Step]) -> dict[str, list[Step]]:
    """The plan's steps by phase: user fine-tunes, what depends on them, and the rest (in order)."""
    ft_ids = {s.step_id for s in steps if s.kind == "finetune"}

    def after_finetune(step: Step) -> bool:
        return any(d.step_id in ft_ids or after_finetune(d) for d in step.inputs.values())

    out: dict[str, list[Step]] = {p: [] for p in PHASES}
    for s in steps:
        phase = "finetune" if s.step_id in ft_ids else "post" if after_finetune(s) \
            else "fingerprint"
        out[phase].append(s)
    return out


def run_step_cached(step: Step, artifacts: Path, log: PhaseLog | None = None,
                    phase: str = "") -> dict[str, Any]:
    """Run one step unless its ``DONE_FILE`` exists; returns its record (rows and provenance).

    Training steps go to Ray Train (``runner.train.run_train_step``), the others run in this
    process. A lock next to the artifact folder makes trials that share a step (the vanilla evals)
    compute it once; a leftover folder without ``DONE_FILE`` belongs to an interrupted run and is
    emptied by the step runner.
    """
    out = artifact_dir(artifacts, step)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f".{step.step_id}.lock"):
        computed = not (out / DONE_FILE).is_file()
        if computed:
            _write_done(out, step, _execute(step, artifacts))
        record = _read_done(artifacts, step) | {"computed": computed}
    if log is not None:
        log.write(phase, "step", step_id=step.step_id, kind=step.kind, computed=computed)
    return record


def _phase_seconds(ran: list[dict[str, Any]], measured: float) -> float:
    """A phase's wall time: as measured, unless every step was reused from its done file.

    That happens when a fresh Tuner re-runs a trial an earlier run finished (``runner.tune``);
    the trial's cost is then the steps' recorded durations, not the milliseconds of reading them.
    """
    if any(r.get("computed", True) for r in ran):
        return round(measured, 3)
    return round(sum(_recorded_seconds(r) for r in ran), 3)


def _recorded_seconds(record: dict[str, Any]) -> float:
    from datetime import datetime

    started, finished = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def _execute(step: Step, artifacts: Path) -> Any:
    spec = StepSpec(step_id=step.step_id, kind=step.kind, fn=step.fn, config=step.config,
                    inputs={n: str(artifact_dir(artifacts, d)) for n, d in step.inputs.items()},
                    out_dir=str(artifact_dir(artifacts, step)), executor=step.executor,
                    resources=step.resources, label=step.label)
    if step.executor == "train":
        from runner.train import run_train_step

        return run_train_step(spec)
    return run_step_inline(spec)


def _write_done(out: Path, step: Step, outcome: Any) -> None:
    record = {"kind": step.kind, "step_id": step.step_id, "result_kind": step.result_kind,
              "config_hash": step.config_hash, "label": step.label, "rows": outcome.rows,
              "started_at": outcome.started_at.isoformat(),
              "finished_at": outcome.finished_at.isoformat(), "device": outcome.device}
    tmp = out / f"{DONE_FILE}.tmp"
    tmp.write_text(json.dumps(record, default=_json_default), encoding="utf-8")
    os.replace(tmp, out / DONE_FILE)


def _done_file(artifacts: Path, step: Step) -> Path:
    return artifact_dir(artifacts, step) / DONE_FILE


def _read_done(artifacts: Path, step: Step) -> dict[str, Any]:
    return json.loads(_done_file(artifacts, step).read_text(encoding="utf-8"))


def read_done_file(path: Path) -> dict[str, Any] | None:
    """A step's done record by path (the driver reads them to write the step tables)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"result rows hold a {type(obj).__name__}, which is not JSON")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` (released by the OS if the holder dies). Hand-written because the
    standard library has no portable lock object; fcntl suffices on the Linux nodes Ray runs on."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class PhaseLog:
    """Append-only JSON lines of one trial's phase and step executions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.execution = uuid.uuid4().hex[:8]  # one per trial launch (a log nonce, not an ID)
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, phase: str, event: str, **extra: Any) -> None:
        line = {"execution": self.execution, "phase": phase, "event": event, "pid": os.getpid(),
                "at": now().isoformat(), **extra}
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


def _report(tune: Any, phase: str, state: dict[str, Any], records: list[dict]) -> None:
    """``tune.report`` of everything known so far; a checkpoint at every phase boundary."""
    metrics = trial_metrics(records)
    metrics.update(
        fprun_trial_id=state["trial_id"], phase=phase, phases_done=PHASES.index(phase) + 1,
        phase_seconds=dict(state["phase_seconds"]), trial_started_at=state["trial_started_at"],
        device=f"tune-trial:{device_name()}",
        steps_json=json.dumps([{k: r[k] for k in ("kind", "step_id", "result_kind")}
                               for r in records]))
    with tempfile.TemporaryDirectory(prefix="fprun-trial-") as tmp:
        (Path(tmp) / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
