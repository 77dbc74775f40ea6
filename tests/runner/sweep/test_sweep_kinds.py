"""The sweep beyond IF_adapter: any experiment kind, constraints on the best trial, and a real
merge-weight sweep on tiny models that reuses what ``fprun run`` finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.experiments import sweep as sweep_kind
from runner.sweep.rows import ERROR, TERMINATED, best_row, summary_text
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "sweep_merge.yaml"
FULL = ROOT / "configs" / "sweeps" / "merge_weights.yaml"


def test_merge_sweeps_validate_and_plan_with_the_mergeguard_kind(cli):
    for path in (SMOKE, FULL):
        assert cli(["validate", path]).exit_code == 0
    cfg = sweep_kind.load_sweep(SMOKE, [])
    assert cfg.experiment.kind == "mergeguard" and cfg.constraints[0].metric == "fsr"
    one = sweep_kind.trial_experiment(cfg, {"pairs.0.grid.0.weights": 0.3})
    steps = sweep_kind.trial_plan(one, sweep_kind.plan_context(cfg.config_dir))
    assert [s.kind for s in steps] == ["merge_cell"]
    assert steps[0].config["cell"]["models"][0]["parameters"]["weight"] == 0.3
    a = sweep_kind.trial_id(cfg, {"pairs.0.grid.0.weights": 0.3})
    assert a == sweep_kind.trial_id(cfg, {"pairs.0.grid.0.weights": 0.1 + 0.2})  # canonical cell
    assert a != sweep_kind.trial_id(cfg, {"pairs.0.grid.0.weights": 0.7})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["metric=fsr_post"], "metric: must be one of fsr, false_trigger_rate"),
        (["constraints=[{metric: fsr_pre, min: 0.5}]"], "metric: must be one of fsr"),
        (["search.0.key=pairs.0.grid.0.weigths"], "unknown key"),
        (["experiment.kind=suite"], "cannot be swept"),
    ],
)
def test_bad_merge_sweep_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        sweep_kind.load_sweep(SMOKE, overrides)


def _row(tid, value, fsr, status=TERMINATED):
    metrics = {"math_accuracy": value, "fsr": fsr}
    params = json.dumps({"pairs.0.grid.0.weights": fsr})
    return {
        "trial_id": tid,
        "status": status,
        "value": value,
        "metrics": json.dumps(metrics),
        "params": params,
    }


def test_best_trial_meets_the_constraints():
    cfg = sweep_kind.load_sweep(FULL, [])  # math_accuracy, max, subject to fsr >= 0.9
    rows = [
        _row("a", 0.9, 0.5),
        _row("b", 0.6, 1.0),
        _row("c", 0.7, 0.9),
        _row("d", None, 1.0, ERROR),
    ]
    assert best_row(cfg, rows)["trial_id"] == "c"
    assert best_row(cfg, rows[:1]) is None
    text = summary_text(cfg, rows)
    assert "fsr >= 0.9" in text and "best: pairs.0.grid.0.weights=0.9" in text
    assert "no trial meets the constraints" in summary_text(cfg, rows[:1])


@pytest.mark.ray
def test_merge_sweep_runs_and_reuses_steps_fprun_run_finished(ray_session, tmp_path):
    """The tiny IF_SFT fingerprint is finished by a plain run first; the sweep's trials then
    only merge, and each writes one sweep_trial row; the best obeys the constraint."""
    from runner.exec.driver import LocalBackend, execute_plan
    from runner.plan import Plan
    from runner.results.store import ResultStore
    from runner.sweep.tuner import run_sweep

    res, art = tmp_path / "r", tmp_path / "a"
    cfg = sweep_kind.load_sweep(SMOKE, [])
    step = sweep_kind.trial_plan(cfg.experiment, sweep_kind.plan_context(cfg.config_dir))[0]
    upstream = Plan([d for d in step.inputs.values()])
    assert execute_plan(upstream, ResultStore(res), art, LocalBackend(), log=lambda _: None).ok
    out = run_sweep(SMOKE, results=str(res), artifacts=str(art), log=lambda _: None)
    assert out.ok and len(out.trial_ids) == 2
    rows = ResultStore(res).read("sweep_trial").to_pylist()
    assert len(rows) == 2 and all(r["metric"] == "math_accuracy" for r in rows)
    assert all(json.loads(r["metrics"])["cells"] == 1 for r in rows)
    logs = [
        json.loads(line)
        for tid in out.trial_ids
        for line in (art / "sweep" / tid / "phases.jsonl").read_text().splitlines()
    ]
    computed = {(e["kind"], e["computed"]) for e in logs if e["event"] == "step"}
    assert ("if_sft", False) in computed and ("if_sft", True) not in computed
    assert len(ResultStore(res).read("merge_cell")) == 2
    assert "best: pairs.0.grid.0.weights=" in out.text
    assert load_experiment(SMOKE).metric == "math_accuracy"
