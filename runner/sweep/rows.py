"""The sweep's result rows, written by the driver only: one ``sweep_trial`` row per trial, plus the
``train_run`` / ``verification`` / ``eval`` rows of every step the trials computed.

A row's ``step_id`` is the trial's stable ``trial_id`` (a hash of the sweep name and the trial's
step IDs), so writing it again after a restore or a re-run replaces the same Parquet file: a sweep
never duplicates a trial. Step rows come from the done records the trials leave in the step
artifact folders (``runner.results.records``) and go under the step's own ID, exactly as
``fprun run`` would write them, so a later ``fprun run`` of one trial's experiment skips them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from runner.experiments import sweep as sweep_kind
from runner.results.records import read_record, write_result
from runner.results.store import ResultStore, finalize_rows, now
from runner.results.text import num, pct, render
from runner.sweep.trial import PHASES

TERMINATED, STOPPED, ERROR = "TERMINATED", "STOPPED", "ERROR"
SECONDS = {"fp_seconds", "verify_seconds"}  # summary columns shown as numbers, not percentages
# Tune's own bookkeeping in a result dict: not part of the trial's metrics JSON.
TUNE_NOISE = {
    "config",
    "date",
    "hostname",
    "node_ip",
    "pid",
    "timestamp",
    "done",
    "checkpoint_dir_name",
    "should_checkpoint",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "episodes_this_iter",
    "timesteps_this_iter",
    "experiment_tag",
    "trial_id",
    "steps_json",
}


@dataclass
class TrialOutcome:
    """What the driver knows about one trial at the end (or the completion) of it."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    tune_trial_id: str | None
    error: BaseException | None = None
    ended: bool = False  # Tune ended it (completed, stopped by the scheduler, or errored)

    @property
    def status(self) -> str | None:
        """TERMINATED (every phase), STOPPED (scheduler), ERROR, or None (unfinished)."""
        if self.error is not None:
            return ERROR
        if self.metrics.get("phase") == PHASES[-1]:
            return TERMINATED
        return STOPPED if self.ended else None


class RowWriter:
    """Writes trial rows (and their steps' rows) into the result store, atomically per file."""

    def __init__(
        self, cfg: sweep_kind.Config, sweep_id: str, store: ResultStore, artifacts: str | Path
    ) -> None:
        self.cfg, self.sweep_id, self.store, self.artifacts = cfg, sweep_id, store, artifacts

    def write(self, outcome: TrialOutcome) -> str | None:
        """Write one trial's rows if it has ended; returns its trial_id (None if unfinished)."""
        status = outcome.status
        if status is None:
            return None
        tid = sweep_kind.trial_id(self.cfg, outcome.params)
        self._write_steps(outcome.metrics)
        row = sweep_row(self.cfg, self.sweep_id, tid, outcome)
        m = outcome.metrics
        table = finalize_rows(
            "sweep_trial",
            [row],
            step_id=tid,
            config_hash=sweep_kind.trial_config_hash(self.cfg, outcome.params),
            started_at=_when(m.get("trial_started_at")),
            finished_at=_when(m.get("timestamp")),
            device=m.get("device") or "tune-trial",
        )
        self.store.write("sweep_trial", tid, table)
        return tid

    def _write_steps(self, metrics: dict[str, Any]) -> None:
        for ref in json.loads(metrics.get("steps_json") or "[]"):
            kind, sid, result_kind = ref["kind"], ref["step_id"], ref["result_kind"]
            if self.store.done(result_kind, sid):
                continue
            outcome = read_record(Path(self.artifacts) / kind / sid)
            if outcome is None:
                continue  # removed since; the trial row still says what was measured
            write_result(self.store, SimpleNamespace(**ref), outcome)


def sweep_row(
    cfg: sweep_kind.Config, sweep_id: str, tid: str, outcome: TrialOutcome
) -> dict[str, Any]:
    """The ``sweep_trial`` row of one trial (no provenance: the store adds it)."""
    metrics = {k: v for k, v in outcome.metrics.items() if k not in TUNE_NOISE}
    metrics["steps"] = json.loads(outcome.metrics.get("steps_json") or "[]")
    datasets = json.loads(metrics.pop("datasets_json", None) or "[]")
    if outcome.error is not None:
        metrics["error"] = f"{type(outcome.error).__name__}: {outcome.error}"[:2000]
    value = outcome.metrics.get(cfg.metric) if outcome.status != ERROR else None
    return {
        "sweep": cfg.name,
        "sweep_id": sweep_id,
        "trial_id": tid,
        "tune_trial_id": outcome.tune_trial_id,
        "params": json.dumps(outcome.params, sort_keys=True),
        "status": outcome.status,
        "metric": cfg.metric,
        "value": None if value is None else float(value),
        "metrics": json.dumps(metrics, sort_keys=True, default=str),
        "datasets": datasets,
    }


def _when(value: Any) -> datetime:
    """A provenance timestamp from an ISO string or Tune's epoch seconds (now if absent)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return now()


def best_row(cfg: sweep_kind.Config, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best completed trial by ``cfg.metric`` among those meeting ``cfg.constraints``; ties
    go to fewer false triggers after the attack, then to less utility harm (FSR_post is often
    100% for several dims)."""
    done = [
        r
        for r in rows
        if r["status"] == TERMINATED
        and r["value"] is not None
        and all(c.holds(json.loads(r["metrics"])) for c in cfg.constraints)
    ]
    if not done:
        return None
    sign = 1.0 if cfg.mode == "max" else -1.0

    def key(r: dict[str, Any]) -> tuple[float, float, float]:
        m = json.loads(r["metrics"])
        false = m.get("false_trigger_post", m.get("false_trigger", 0.0))
        return (sign * r["value"], -false, -m.get("utility_delta", 0.0))

    return max(done, key=key)


def _columns(cfg: sweep_kind.Config) -> list[tuple[str, str]]:
    """(metric, header) of the summary's metric columns, by the base experiment's kind."""
    kind = cfg.experiment.kind
    if kind == "if_adapter":
        return [
            ("fsr_pre", "FSR_pre"),
            ("fsr_post", "FSR_post"),
            ("false_trigger_post", "false_post"),
            ("utility_delta", "utility_delta"),
            ("acc_delta", "acc_delta"),
        ]
    if kind == "if_sft":
        return [
            ("fsr", "FSR"),
            ("false_trigger", "false_unseen"),
            ("utility_delta", "utility_delta"),
            ("fp_seconds", "train_s"),
            ("verify_seconds", "verify_s"),
        ]
    shown = list(dict.fromkeys([cfg.metric, *(c.metric for c in cfg.constraints)]))
    shown += [m for m in sweep_kind.kind_metrics(kind) if m not in shown][:2]
    return [(m, m) for m in shown]


def summary_text(cfg: sweep_kind.Config, rows: list[dict[str, Any]]) -> str:
    """One line per trial (search values, the metrics, wall time) and the best one."""
    keys = [d.key for d in cfg.search]
    shown = _columns(cfg)
    header = ["trial", *keys, "status", *(name for _, name in shown), "wall_s"]
    lines = []
    for r in sorted(rows, key=lambda r: [json.loads(r["params"]).get(k) for k in keys]):
        p, m = json.loads(r["params"]), json.loads(r["metrics"])
        lines.append(
            [
                r["trial_id"][:8],
                *(num(p.get(k)) for k in keys),
                r["status"],
                *(num(m.get(k)) if k in SECONDS else pct(m.get(k), "%") for k, _ in shown),
                num(sum((m.get("phase_seconds") or {}).values()) or None),
            ]
        )
    rule = "".join(
        f", {c.metric}"
        + (f" >= {c.min:g}" if c.min is not None else "")
        + (f" <= {c.max:g}" if c.max is not None else "")
        for c in cfg.constraints
    )
    out = [
        f"sweep {cfg.name}: {len(rows)} trial(s), metric {cfg.metric} ({cfg.mode}){rule}",
        render(header, lines),
    ]
    best = best_row(cfg, rows)
    if best is None:
        why = "meets the constraints" if cfg.constraints else "finished every phase"
        out.append(f"  best: none (no trial {why})")
    else:
        p = json.loads(best["params"])
        where = ", ".join(f"{k}={num(v)}" for k, v in sorted(p.items()))
        out.append(
            f"  best: {where} -> {cfg.metric} {pct(best['value'], '%')} (trial {best['trial_id']})"
        )
    return "\n".join(out)
