"""``kind: sweep`` and ``fprun sweep``: search-space validation (exit 2), stable trial and sweep
IDs, trial metrics, phase splitting, the step cache, the row writer, and one short Ray Tune sweep
of tiny-llama with Ray Train inside the trials, resumed once.
"""

from __future__ import annotations

import json

import pytest

from runner.config import load_experiment
from runner.experiments import sweep as sweep_kind
from runner.plan import Step
from runner.results.records import RECORD_FILE, Outcome, write_result
from runner.results.store import ResultStore, now
from runner.sweep.metrics import trial_metrics
from runner.sweep.rows import ERROR, STOPPED, TERMINATED, RowWriter, TrialOutcome, best_row
from runner.sweep.trial import (
    PhaseLog,
    _phase_seconds,
    run_step_cached,
    split_phases,
)
from tasks.errors import ConfigError, FprunError
from tests.runner.sweep.smoke import FULL, ROOT, SMOKE, smoke  # noqa: F401

# --- search space: parsing and bad input ---------------------------------------------------


def test_bundled_sweeps_validate_and_expand_to_the_grid(cli):
    for path in (SMOKE, FULL):
        assert cli(["validate", path]).exit_code == 0
    full = load_experiment(FULL)
    dims = {d.key: d for d in full.search}
    assert dims["adapter.dim"].grid == [4, 8, 16, 32, 64] and full.metric == "fsr_post"
    from runner.sweep.tuner import param_space

    space = param_space(smoke())
    assert space["adapter.dim"] == {"grid_search": [4, 8]}
    assert sorted(space["train.lr"].categories) == [0.01]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.0.key=adapter.dimm"], "unknown key 'adapter.dimm'; did you mean 'dim'"),
        (["search.0.gird=[4]"], "unknown key 'search.0.gird'; did you mean 'grid'"),
        (["experiment.adapter.dimm=4"], "unknown key 'experiment.adapter.dimm'"),
        (["search.0.grid=[0]"], "adapter.dim: must be greater than or equal to 1"),
        (["search.1={key: train.lr, loguniform: [0.1, 0.01]}"], "low < high"),
        (["search.1={key: train.lr, loguniform: [0, 0.01]}"], "loguniform needs low > 0"),
        (["search.1={key: train.lr, grid: [0.1], choice: [0.2]}"], "exactly one of"),
        (["search.1.key=adapter.dim"], "search repeats a key"),
        (["search.1.key=name"], "cannot be swept"),
        (["experiment.verify.conditions=[publish_w_adapter]"], "lacks tuned_w_adapter"),
        (
            ["tune.num_samples=3", "search.1={key: train.lr, grid: [0.01]}"],
            "grid-only search repeats identical",
        ),
        (["metric=accuracy"], "metric: must be"),
        (["tune.scheduler.type=hyperband"], "tune.scheduler.type: must be"),
    ],
)
def test_bad_search_space_exits_2_with_one_line(overrides, message, cli):
    res = cli(["sweep", SMOKE, *sum([["--set", o] for o in overrides], [])])
    assert res.exit_code == 2, res.output  # checked at load, before Ray starts
    assert message in res.output and "\n" not in res.output.strip()


def test_sweep_verb_refuses_other_kinds_and_run_refuses_sweeps(cli):
    res = cli(["sweep", ROOT / "configs" / "smoke" / "if_adapter.yaml"])
    assert res.exit_code == 2 and "not a sweep" in res.output
    res = cli(["run", SMOKE, "--dry-run"])
    assert res.exit_code == 2 and "fprun sweep" in res.output
    res = cli(["sweep", ROOT / "configs" / "smoke" / "no_such.yaml"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_artifacts_uri_is_refused_before_ray_starts(tmp_path, cli):
    res = cli(["sweep", SMOKE, "--artifacts", "s3://bucket/a", "--results", tmp_path])
    assert res.exit_code == 2 and "is a URI" in res.output


# --- identity --------------------------------------------------------------------------------


def test_trial_id_is_stable_and_follows_what_the_trial_computes():
    cfg = smoke()
    a = sweep_kind.trial_id(cfg, {"adapter.dim": 4, "train.lr": 0.01})
    assert a == sweep_kind.trial_id(cfg, {"train.lr": 1e-2, "adapter.dim": 4})  # order, spelling
    assert a == sweep_kind.trial_id(smoke(), {"adapter.dim": 4, "train.lr": 0.01})  # re-load
    assert a != sweep_kind.trial_id(cfg, {"adapter.dim": 8, "train.lr": 0.01})
    assert a != sweep_kind.trial_id(cfg, {"adapter.dim": 4, "train.lr": 0.02})
    assert a != sweep_kind.trial_id(smoke("name=other"), {"adapter.dim": 4, "train.lr": 0.01})
    # resources change where a step runs, not what it computes: same trial
    assert a == sweep_kind.trial_id(
        smoke("experiment.train.cpus_per_worker=2"), {"adapter.dim": 4, "train.lr": 0.01}
    )
    assert len(a) == 16 and int(a, 16) >= 0


def test_sweep_id_ignores_execution_knobs_only():
    sid = sweep_kind.sweep_id(smoke())
    assert sid == sweep_kind.sweep_id(smoke("tune.max_concurrent_trials=4", "tune.trial.cpus=2"))
    assert sid != sweep_kind.sweep_id(smoke("search.0.grid=[4,8,16]"))
    assert sid != sweep_kind.sweep_id(smoke("tune.seed=1"))
    assert sid != sweep_kind.sweep_id(smoke("experiment.train.epochs=2"))


def test_trial_experiment_applies_values_and_splits_into_phases():
    exp = sweep_kind.trial_experiment(smoke(), {"adapter.dim": 8, "train.lr": 0.02})
    assert exp.adapter.dim == 8 and exp.train.lr == 0.02 and exp.kind == "if_adapter"
    phases = split_phases(sweep_kind.trial_plan(exp))
    fp = phases["fingerprint"][0]
    assert fp.kind == "if_adapter" and fp.executor == "train" and fp.config["adapter"]["dim"] == 8
    assert {s.kind for s in phases["fingerprint"]} == {"if_adapter", "verify_adapter", "eval"}
    assert [s.kind for s in phases["finetune"]] == ["finetune"]
    assert phases["finetune"][0].executor == "train"
    (post,) = phases["post"]
    assert post.config["condition"] == "tuned_w_adapter"
    assert post.inputs["suspect"] is phases["finetune"][0]
    # the vanilla evals do not depend on the trial: every trial shares their step IDs
    other = split_phases(
        sweep_kind.trial_plan(
            sweep_kind.trial_experiment(smoke(), {"adapter.dim": 4, "train.lr": 0.01})
        )
    )
    vanilla = {s.step_id for s in phases["fingerprint"] if s.kind == "eval" and not s.inputs}
    assert vanilla and vanilla <= {s.step_id for s in other["fingerprint"]}


# --- metrics, step cache, rows ---------------------------------------------------------------


def _ver(condition, probe, fsr):
    return {
        "condition": condition,
        "probe_set": probe,
        "sample_idx": None,
        "fsr": fsr,
        "dataset": "keys",
    }


def test_trial_metrics_from_step_records():
    records = [
        {
            "result_kind": "verification",
            "rows": [
                _ver("publish_w_adapter", "fingerprint", 1.0),
                _ver("publish_w_adapter", "unseen_keys", 0.25),
            ],
        },
        {"result_kind": "verification", "rows": [_ver("tuned_w_adapter", "fingerprint", 0.5)]},
        {
            "result_kind": "verification",
            "rows": [
                _ver("tuned_w_adapter", "fingerprint", 1.0),
                {**_ver("tuned_w_adapter", "fingerprint", 0.0), "sample_idx": 3},
            ],
        },
        {
            "result_kind": "eval",
            "rows": [
                {"task": "t", "metric": "perplexity", "value": 10.0, "model_step_id": None},
                {"task": "t", "metric": "perplexity", "value": 11.0, "model_step_id": "fp"},
                {"task": "m", "metric": "accuracy", "value": 0.5, "model_step_id": None},
                {"task": "m", "metric": "accuracy", "value": 0.4, "model_step_id": "fp"},
            ],
        },
        {
            "result_kind": "train_run",
            "rows": [
                {
                    "purpose": "fingerprint",
                    "final_loss": 0.1,
                    "steps": 5,
                    "train_seconds": 2.0,
                    "extra": json.dumps({"first_loss": 3.0}),
                    "fingerprint_id": "f" * 16,
                    "datasets": ["a", "b"],
                }
            ],
        },
    ]
    m = trial_metrics(records)
    assert m["fsr_pre"] == 1.0 and m["false_trigger_pre"] == 0.25
    assert m["fsr_post"] == 0.75  # mean over two user models; the sampled row is left out
    assert "false_trigger_post" not in m
    assert m["utility_delta"] == pytest.approx(0.1) and m["acc_delta"] == pytest.approx(-0.1)
    assert m["fp_first_loss"] == 3.0 and m["fp_steps"] == 5 and m["fingerprint_id"] == "f" * 16
    assert json.loads(m["datasets_json"]) == ["a", "b", "keys"]
    assert trial_metrics([])["fsr"] == {} and "fsr_post" not in trial_metrics([])


def test_step_cache_computes_once_and_logs_it(tmp_path):
    step = Step("toy_make", "tests.toy_kind:make", {"value": 3.0}, "eval")
    log = PhaseLog(tmp_path / "sweep" / "t1" / "phases.jsonl")
    first = run_step_cached(step, tmp_path / "a", log=log, phase="fingerprint")
    second = run_step_cached(step, tmp_path / "a", log=log, phase="fingerprint")
    assert (first.pop("computed"), second.pop("computed")) == (True, False)
    assert first == second and first["rows"][0]["value"] == 3.0
    assert first["step_id"] == step.step_id and first["config_hash"] == step.config_hash
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    assert [x["computed"] for x in lines] == [True, False]
    out = tmp_path / "a" / "toy_make" / step.step_id
    assert (out / RECORD_FILE).is_file() and (out / "value.json").read_text() == "3.0"


def test_a_phase_whose_steps_were_all_reused_reports_their_recorded_time():
    def rec(computed, seconds):
        return {
            "computed": computed,
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": f"2026-01-01T00:0{seconds // 60}:{seconds % 60:02d}+00:00",
        }

    assert _phase_seconds([rec(False, 300), rec(False, 30)], 0.004) == 330.0
    assert _phase_seconds([rec(True, 300), rec(False, 30)], 12.5) == 12.5  # this run's work


def test_step_cache_reruns_a_step_without_its_record_file(tmp_path):
    step = Step("toy_make", "tests.toy_kind:make", {"value": 2.0}, "eval")
    out = tmp_path / "toy_make" / step.step_id
    out.mkdir(parents=True)
    (out / "half-written").write_text("x")  # an interrupted run's leftover
    rec = run_step_cached(step, tmp_path)
    assert rec["rows"][0]["value"] == 2.0 and not (out / "half-written").exists()


def test_bad_input_in_a_cached_step_leaves_no_record_file(tmp_path):
    step = Step("toy_make", "tests.toy_kind:make", {"value": 1.0, "bad_input_on": 1.0}, "eval")
    with pytest.raises(FprunError, match="toy dataset is empty"):
        run_step_cached(step, tmp_path)
    assert not (tmp_path / "toy_make" / step.step_id / RECORD_FILE).exists()


def test_step_cache_reuses_a_step_that_fprun_run_finished(tmp_path):
    """The sweep consults the result store first: a step in it is not computed again."""
    step = Step("toy_make", "tests.toy_kind:make", {"value": 7.0}, "eval")
    store = ResultStore(tmp_path / "r")
    t = now()
    row = {"suite": "toy", "task": "make", "metric": "value", "value": 7.0, "dataset": "toy"}
    write_result(store, step, Outcome([row], t, t, "cpu"))
    rec = run_step_cached(step, tmp_path / "a", store)
    assert rec["computed"] is False and rec["rows"][0]["value"] == 7.0
    assert not (tmp_path / "a" / "toy_make" / step.step_id).exists()  # nothing was run


@pytest.fixture
def writer(tmp_path):
    cfg = smoke()
    return RowWriter(cfg, sweep_kind.sweep_id(cfg), ResultStore(tmp_path / "r"), tmp_path / "a")


def _outcome(dim, **kw):
    metrics = {
        "phase": "post",
        "fsr_pre": 1.0,
        "fsr_post": 0.5,
        "done": True,
        "trial_started_at": "2026-01-01T00:00:00+00:00",
        "timestamp": 1767225700,
        "device": "tune-trial:cpu",
        "phase_seconds": {"fingerprint": 1.5},
        "hostname": "h",
        **kw.pop("metrics", {}),
    }
    return TrialOutcome({"adapter.dim": dim, "train.lr": 0.01}, metrics, f"t_{dim}", **kw)


def test_row_writer_one_row_per_trial_even_when_written_again(writer):
    tid = writer.write(_outcome(4, ended=True))
    writer.write(_outcome(4, ended=True))  # the callback and the final pass both write
    writer.write(_outcome(8, error=ConfigError("bad", "fix"), metrics={"phase": "fingerprint"}))
    rows = {r["trial_id"]: r for r in writer.store.read("sweep_trial").to_pylist()}
    assert len(rows) == 2 and tid in rows
    ok = rows[tid]
    assert ok["status"] == TERMINATED and ok["value"] == 0.5 and ok["metric"] == "fsr_post"
    assert ok["run_key"] == f"{tid}/{tid}" and ok["step_id"] == tid
    assert ok["sweep"] == "smoke_adapter_dim" and ok["tune_trial_id"] == "t_4"
    assert json.loads(ok["params"]) == {"adapter.dim": 4, "train.lr": 0.01}
    metrics = json.loads(ok["metrics"])
    assert metrics["fsr_pre"] == 1.0 and "hostname" not in metrics and "done" not in metrics
    assert ok["started_at"].year == 2026 and ok["device"] == "tune-trial:cpu"
    (bad,) = [r for r in rows.values() if r["trial_id"] != tid]
    assert bad["status"] == ERROR and bad["value"] is None
    assert "ConfigError: bad; fix" in json.loads(bad["metrics"])["error"]


def test_row_writer_skips_unfinished_and_marks_scheduler_stops(writer):
    assert writer.write(_outcome(4, metrics={"phase": "finetune", "done": False})) is None
    assert writer.store.read("sweep_trial").num_rows == 0
    writer.write(_outcome(8, metrics={"phase": "fingerprint", "fsr_post": None}, ended=True))
    (row,) = writer.store.read("sweep_trial").to_pylist()
    assert row["status"] == STOPPED and row["value"] is None


def test_row_writer_writes_the_step_tables_from_record_files(writer, tmp_path):
    step = Step("toy_make", "tests.toy_kind:make", {"value": 5.0}, "eval")
    run_step_cached(step, tmp_path / "a")
    ref = {
        "kind": "toy_make",
        "step_id": step.step_id,
        "result_kind": "eval",
        "config_hash": step.config_hash,
    }
    writer.write(_outcome(4, ended=True, metrics={"steps_json": json.dumps([ref])}))
    (row,) = writer.store.read("eval").to_pylist()
    assert row["step_id"] == step.step_id and row["value"] == 5.0
    assert row["config_hash"] == step.config_hash


def test_best_row_breaks_ties_on_false_triggers_then_harm(writer):
    def row(tid, value, false, harm, status=TERMINATED):
        return {
            "trial_id": tid,
            "status": status,
            "value": value,
            "metrics": json.dumps({"false_trigger_post": false, "utility_delta": harm}),
        }

    cfg = writer.cfg
    rows = [
        row("a", 1.0, 0.5, 0.0),
        row("b", 1.0, 0.0, 0.2),
        row("c", 1.0, 0.0, 0.1),
        row("d", 0.9, 0.0, 0.0),
        row("e", None, 0, 0, ERROR),
    ]
    assert best_row(cfg, rows)["trial_id"] == "c"
    assert best_row(cfg, [rows[-1]]) is None


# --- one real sweep on a local Ray instance ----------------------------------------------------
