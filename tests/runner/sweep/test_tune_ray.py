"""The smoke sweep end to end under Ray Tune: Ray Train inside trials, one row per trial, every
step computed once, a rerun that resumes without work, errored trials rerun under a fresh tuner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.experiments import sweep as sweep_kind
from runner.results.store import ResultStore
from runner.sweep.rows import ERROR, TERMINATED
from tasks.errors import ConfigError
from tests.runner.sweep.smoke import FULL, ROOT, SMOKE, smoke  # noqa: F401


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    """The smoke sweep (2 trials) on the session's Ray instance, then the same command again."""
    from runner.sweep.tuner import run_sweep

    tmp = tmp_path_factory.mktemp("sweep")
    kw = {"results": str(tmp / "r"), "artifacts": str(tmp / "a"), "log": lambda _: None}
    first = run_sweep(SMOKE, **kw)
    second = run_sweep(SMOKE, **kw)
    return tmp, first, second


def _log(tmp: Path, tid: str) -> list[dict]:
    path = tmp / "a" / "sweep" / tid / "phases.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sweep_runs_ray_train_in_tune_trials_and_writes_one_row_per_trial(swept):
    tmp, first, _ = swept
    assert first.ok and not first.restored and len(first.trial_ids) == 2
    rows = ResultStore(tmp / "r").read("sweep_trial").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted(first.trial_ids)
    cfg = smoke()
    for r in rows:
        assert r["status"] == TERMINATED and 0.0 <= r["value"] <= 1.0
        m = json.loads(r["metrics"])
        assert m["phase"] == "post" and m["training_iteration"] == 3
        assert 0.0 <= m["fsr_pre"] <= 1.0 and "utility_delta" in m
        assert r["trial_id"] == sweep_kind.trial_id(cfg, json.loads(r["params"]))
        assert r["sweep_id"] == first.sweep_id
    assert sorted(json.loads(r["params"])["adapter.dim"] for r in rows) == [4, 8]
    train = ResultStore(tmp / "r").read("train_run").to_pylist()
    assert len(train) == 4 and all(t["device"].startswith("ray-train:1x") for t in train)
    assert {t["purpose"] for t in train} == {"fingerprint", "finetune"}
    assert "best: adapter.dim=" in first.text
    assert (tmp / "a" / "tune" / first.sweep_id).is_dir()


def test_every_step_is_computed_once_and_a_rerun_resumes_without_work(swept):
    tmp, first, second = swept
    assert second.ok and second.restored and sorted(second.trial_ids) == sorted(first.trial_ids)
    assert ResultStore(tmp / "r").read("sweep_trial").num_rows == 2
    computed: dict[str, int] = {}
    for tid in first.trial_ids:
        events = _log(tmp, tid)
        for e in events:
            if e["event"] == "step" and e["computed"]:
                computed[e["step_id"]] = computed.get(e["step_id"], 0) + 1
        ends = [e["phase"] for e in events if e["event"] == "end"]
        assert ends == ["fingerprint", "finetune", "post"]  # the restore ran nothing again
    assert set(computed.values()) == {1}
    # 2 x (fingerprint, publish_w_adapter, publish ppl, finetune, tuned_w_adapter) + 1 shared
    # vanilla perplexity eval, computed by the first trial only
    assert len(computed) == 11


def test_errored_trials_rerun_under_a_fresh_tuner_and_finished_ones_are_reused(swept, tmp_path):
    """Tune's own restart_errored re-queues errored trials outside the concurrency limit, so a
    resume with errored trials starts a fresh Tuner; finished steps come from their DONE files.

    The good trial (dim 4, max_seq_len 256) is the smoke sweep's dim-4 trial under another grid
    (the same config, so the same trial ID): its steps are found in a copy of ``swept``'s
    folders, so neither pass trains it again."""
    from runner.sweep.tuner import run_sweep

    shutil.copytree(swept[0] / "r", tmp_path / "r")
    shutil.copytree(swept[0] / "a", tmp_path / "a")
    before = {t: len(_log(tmp_path, t)) for t in swept[1].trial_ids}
    logs: list[str] = []
    kw = {"results": str(tmp_path / "r"), "artifacts": str(tmp_path / "a"), "log": logs.append}
    grid = [
        "search.0={key: adapter.dim, grid: [4]}",
        "search.1={key: train.max_seq_len, grid: [8, 256]}",
    ]  # 8 cuts the key rows: an error
    for _ in range(2):
        with pytest.raises(ConfigError, match="raise train.max_seq_len"):
            run_sweep(SMOKE, grid, **kw)
    assert any("1 errored and 0 unfinished trial(s)" in m for m in logs)
    rows = ResultStore(tmp_path / "r").read("sweep_trial").to_pylist()
    mine = [r for r in rows if r["sweep_id"] != swept[1].sweep_id]
    assert sorted(r["status"] for r in mine) == [ERROR, TERMINATED]
    (good,) = [r["trial_id"] for r in mine if r["status"] == TERMINATED]
    assert good in before  # the smoke sweep's own dim-4 trial
    steps = [e for e in _log(tmp_path, good)[before[good] :] if e["event"] == "step"]
    assert len(steps) == 12 and not [e for e in steps if e["computed"]]  # 2 passes x 6, reused
