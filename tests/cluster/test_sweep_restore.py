"""An interrupted sweep resumes with ``Tuner.restore`` and runs no trial twice.

On a private one-node cluster (``head`` in conftest.py) the smoke sweep (2 trials of tiny-llama)
is submitted as a Ray job. Once trial A has finished (its ``sweep_trial`` row is in the store) and
trial B has finished its first phase (fingerprint, checkpointed), the job is stopped with
``ray job stop``; the same command is then submitted again. Each trial's
``ARTIFACTS/sweep/<trial_id>/phases.jsonl`` records every phase and step execution, so the test
checks: every step was computed exactly once over both jobs (the shared vanilla eval included),
A ran nothing after the stop, B resumed from its checkpoint (its finished phases are ``restored``,
not re-run), and the final table has one row per trial.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from runner.results.store import ResultStore
from tests.cluster.conftest import job_status, ray_cli, submit_job, wait_for_job

pytestmark = pytest.mark.cluster

SMOKE = "configs/smoke/sweep_adapter_dim.yaml"
INTERRUPT_TIMEOUT_S = 600
JOB_TIMEOUT_S = 900


def submit(address: str, env: dict[str, str], results: Path, artifacts: Path) -> str:
    sweep = ["fprun", "sweep", SMOKE, "--results", str(results), "--artifacts", str(artifacts)]
    return submit_job(address, env, sweep, "fprun-sweep")


def trial_logs(artifacts: Path) -> dict[str, list[dict]]:
    """trial_id -> its phase/step events (complete lines only)."""
    out = {}
    for path in sorted((artifacts / "sweep").glob("*/phases.jsonl")):
        lines = path.read_text().splitlines()
        out[path.parent.name] = [json.loads(x) for x in lines if x.endswith("}")]
    return out


def ended(events: list[dict], phase: str) -> bool:
    return any(e["event"] == "end" and e["phase"] == phase for e in events)


def wait_for_interrupt_point(address, job_id, env, results: Path, artifacts: Path):
    """Trial A complete and recorded, trial B past its first phase and its Tune checkpoint
    persisted (each trial keeps one, so two checkpoint folders): returns (A, B)."""
    deadline = time.time() + INTERRUPT_TIMEOUT_S
    while time.time() < deadline:
        logs = trial_logs(artifacts)
        rows = ResultStore(results).read("sweep_trial").to_pylist()
        done = [t for t, ev in logs.items() if ended(ev, "post")]
        going = [t for t, ev in logs.items() if ended(ev, "fingerprint") and t not in done]
        checkpoints = list((artifacts / "tune").glob("*/*/checkpoint_*"))
        if len(done) == 1 and rows and going and len(checkpoints) >= 2:
            return done[0], going[0]
        status = job_status(address, job_id, env)
        assert status in (None, "PENDING", "RUNNING"), (
            f"the first sweep job ended ({status}) before it could be interrupted:\n"
            + ray_cli(["job", "logs", job_id, "--address", address], env)[-3000:]
        )
        time.sleep(0.5)
    raise AssertionError(
        f"no interrupt point within {INTERRUPT_TIMEOUT_S} s: {trial_logs(artifacts)}"
    )


def test_interrupted_sweep_resumes_without_running_a_trial_twice(head, tmp_path):
    address, env = head
    results, artifacts = tmp_path / "results", tmp_path / "artifacts"

    first = submit(address, env, results, artifacts)
    a, b = wait_for_interrupt_point(address, first, env, results, artifacts)
    time.sleep(1)  # the driver snapshots its experiment state right after a trial checkpoint
    ray_cli(["job", "stop", first, "--address", address], env, timeout=180)
    assert wait_for_job(address, first, env, 180) == "STOPPED"
    stopped_at = datetime.now().astimezone()
    before = trial_logs(artifacts)
    assert not ended(before[b], "post"), "trial B finished before the stop; nothing to resume"

    second = submit(address, env, results, artifacts)
    status = wait_for_job(address, second, env, JOB_TIMEOUT_S)
    logs = ray_cli(["job", "logs", second, "--address", address], env)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "resuming sweep smoke_adapter_dim" in logs

    rows = ResultStore(results).read("sweep_trial").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted([a, b])
    assert all(r["status"] == "TERMINATED" and r["value"] is not None for r in rows)

    after = trial_logs(artifacts)
    computed: dict[str, int] = {}
    for events in after.values():
        for e in events:
            if e["event"] == "step" and e["computed"]:
                computed[e["step_id"]] = computed.get(e["step_id"], 0) + 1
    assert computed and set(computed.values()) == {1}, computed  # no step ran twice

    def since_stop(events):
        return [e for e in events if datetime.fromisoformat(e["at"]) > stopped_at]

    assert not [
        e for e in since_stop(after[a]) if e["event"] in ("start", "end") or e.get("computed")
    ], "trial A ran again after the stop"
    resumed = since_stop(after[b])
    finished_before = [p for p in ("fingerprint", "finetune") if ended(before[b], p)]
    assert [e["phase"] for e in resumed if e["event"] == "restored"] == finished_before
    assert [e["phase"] for e in resumed if e["event"] == "end"] == [
        p for p in ("fingerprint", "finetune", "post") if p not in finished_before
    ]

    fp_dirs = list((artifacts / "if_adapter").glob("*/private/keys.jsonl"))
    keys = [json.loads(x)["key"] for p in fp_dirs for x in p.read_text().splitlines()]
    first_logs = ray_cli(["job", "logs", first, "--address", address], env)
    assert keys and not [k for k in keys if k in logs or k in first_logs]  # secrecy
