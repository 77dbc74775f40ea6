"""The key-capacity sweep: IF_SFT trial metrics (keys' FSR, unseen-key false triggers, utility,
training and verification seconds), the bundled configs, negative keys without changing existing
step IDs, and the smoke sweep under Ray Tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.experiments import if_sft
from runner.experiments import sweep as sweep_kind
from runner.plan import PlanContext
from runner.sweep.metrics import metrics_for, sft_trial_metrics
from runner.sweep.rows import TERMINATED, summary_text
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "sweep_key_capacity.yaml"
FULL = ROOT / "configs" / "sweeps" / "key_capacity.yaml"
T0 = "2026-12-01T10:00:00+00:00"


def _record(result_kind: str, rows: list[dict], seconds: float = 1.0) -> dict:
    end = f"2026-12-01T10:{int(seconds) // 60:02d}:{seconds % 60:06.3f}+00:00"
    return {"result_kind": result_kind, "rows": rows, "started_at": T0, "finished_at": end}


def _verification(condition: str, fsrs: dict[str, float], seconds: float) -> dict:
    rows = [
        {"condition": condition, "probe_set": p, "fsr": v, "sample_idx": None}
        for p, v in fsrs.items()
    ]
    rows.append({"condition": condition, "probe_set": "fingerprint:sampled", "fsr": 0.0})
    return _record("verification", rows, seconds)


def _records(n_keys: int = 32, negatives: int | None = None) -> list[dict]:
    counts = {"fingerprint": n_keys, **({"negative_keys": negatives} if negatives else {})}
    train = {
        "purpose": "fingerprint",
        "train_seconds": 412.5,
        "epochs": 6.0,
        "steps": 60,
        "final_loss": 0.01,
        "extra": json.dumps({"counts": counts, "first_loss": 3.0}),
    }
    ppl = [
        {"task": "t", "metric": "perplexity", "value": 20.0, "model_step_id": None},
        {"task": "t", "metric": "perplexity", "value": 22.0, "model_step_id": "fp"},
    ]
    return [
        _record("train_run", [train], 500.0),
        _verification("publish", {"fingerprint": 0.75, "unseen_keys": 0.125}, 12.5),
        _verification("vanilla", {"fingerprint": 0.0, "unseen_keys": 0.0}, 99.0),
        _record("eval", ppl[:1]),
        _record("eval", ppl[1:]),
    ]


def test_sft_metrics_read_publish_keys_unseen_keys_utility_and_seconds():
    m = sft_trial_metrics(_records())
    assert m["fsr"] == 0.75 and m["false_trigger"] == 0.125  # publish, not vanilla
    assert m["utility_delta"] == pytest.approx(0.1)  # 22 / 20 - 1
    assert m["n_keys"] == 32 and m["n_negative_keys"] == 0
    assert m["fp_seconds"] == 412.5 and m["fp_epochs"] == 6.0 and m["fp_steps"] == 60
    assert m["verify_seconds"] == pytest.approx(12.5)  # the publish step's wall time only
    assert m["fsr_table"]["vanilla"] == {"fingerprint": 0.0, "unseen_keys": 0.0}
    assert "fsr_post" not in m and "fp_train_seconds" not in m
    assert sft_trial_metrics(_records(8, negatives=8))["n_negative_keys"] == 8


def test_sft_metrics_of_a_partial_trial_say_only_what_is_known():
    m = sft_trial_metrics(_records()[:1])
    assert m["n_keys"] == 32 and not {"fsr", "false_trigger", "verify_seconds"} & set(m)
    assert sft_trial_metrics([]) == {"fsr_table": {}}


def test_if_sft_trials_report_through_the_kind_and_its_names_are_the_sweep_metrics():
    m = metrics_for("if_sft", _records())
    assert m["fsr"] == 0.75 and "datasets_json" in m
    assert sweep_kind.kind_metrics("if_sft") == if_sft.SWEEP_METRICS
    assert set(if_sft.SWEEP_METRICS) - {"fsr_post", "false_trigger_post", "acc_delta"} <= set(m)


def test_key_capacity_configs_validate_and_trials_differ_in_the_key_count_only(cli):
    for path in (SMOKE, FULL):
        assert cli(["validate", str(path)]).exit_code == 0
    cfg = sweep_kind.load_sweep(FULL, [])
    assert cfg.experiment.kind == "if_sft" and cfg.metric == "fsr"
    (grid,) = [d.grid for d in cfg.search]
    assert grid == [8, 32, 128, 512]
    ctx = sweep_kind.plan_context(cfg.config_dir)
    fps = [
        sweep_kind.trial_plan(sweep_kind.trial_experiment(cfg, {"data.n_fingerprint": n}), ctx)[0]
        for n in grid
    ]
    assert [f.config["data"]["n_fingerprint"] for f in fps] == grid
    assert {f.config["train"]["max_steps"] for f in fps} == {60}  # one budget for every count
    assert len({sweep_kind.trial_id(cfg, {"data.n_fingerprint": n}) for n in grid}) == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["metric=fsr_pre"], "metric: must be one of fsr, false_trigger"),
        (["search.0.key=data.n_fingerprints"], "unknown key"),
        (["experiment.data.n_negative_keys=-1"], "n_negative_keys"),
    ],
)
def test_bad_key_capacity_sweep_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sweep_kind.load_sweep(SMOKE, overrides)


def test_negative_keys_are_a_new_step_and_zero_keeps_existing_step_ids():
    path = ROOT / "configs" / "if_sft.yaml"

    def fingerprint(*overrides: str):
        cfg = load_experiment(path, list(overrides))
        return if_sft.plan(cfg, PlanContext(path, "", ""))[0]

    plain = fingerprint()
    assert "n_negative_keys" not in plain.config["data"]
    assert fingerprint("data.n_negative_keys=0").step_id == plain.step_id
    neg = fingerprint("data.n_negative_keys=16")
    assert neg.step_id != plain.step_id and neg.config["data"]["n_negative_keys"] == 16


def test_summary_shows_fsr_false_triggers_utility_and_seconds_per_key_count():
    cfg = sweep_kind.load_sweep(FULL, [])
    rows = []
    for n, fsr in ((8, 1.0), (512, 0.25)):
        m = {"fsr": fsr, "false_trigger": 0.0625, "utility_delta": 0.1, "fp_seconds": 400.0}
        m["verify_seconds"] = 30.0
        rows.append(
            {
                "trial_id": f"{n:016d}",
                "status": TERMINATED,
                "value": fsr,
                "params": json.dumps({"data.n_fingerprint": n}),
                "metrics": json.dumps(m),
            }
        )
    text = summary_text(cfg, rows)
    assert "FSR" in text and "false_unseen" in text and "verify_s" in text
    lines = text.splitlines()
    assert any(" 512 " in x and "25.0%" in x and "6.2%" in x and " 400 " in x for x in lines)
    assert "best: data.n_fingerprint=8 -> fsr 100.0%" in text


@pytest.mark.ray
def test_key_capacity_smoke_sweep_writes_trial_rows_with_the_capacity_metrics(
    ray_session, tmp_path
):
    from runner.results.store import ResultStore
    from runner.sweep.tuner import run_sweep

    kw = {"results": str(tmp_path / "r"), "artifacts": str(tmp_path / "a"), "log": lambda _: None}
    out = run_sweep(SMOKE, ["search.0.grid=[3]"], **kw)  # one trial keeps it under a minute
    assert out.ok and len(out.trial_ids) == 1
    store = ResultStore(tmp_path / "r")
    (row,) = store.read("sweep_trial").to_pylist()
    m = json.loads(row["metrics"])
    assert row["status"] == TERMINATED and row["metric"] == "fsr" and row["value"] == m["fsr"]
    assert m["n_keys"] == 3 and m["fp_steps"] == 4 and m["fp_seconds"] > 0
    assert m["verify_seconds"] > 0 and "utility_delta" in m
    greedy = {
        r["probe_set"]: r["fsr"]
        for r in store.read("verification").to_pylist()
        if r["condition"] == "publish"
    }
    assert m["fsr"] == greedy["fingerprint"] and m["false_trigger"] == greedy["unseen_keys"]
    assert "verify_s" in out.text and "best: data.n_fingerprint=3" in out.text
