"""A Ray Train worker killed mid-run: training resumes from its last checkpoint, and no row is lost
or doubled.

``fprun run`` (its own local Ray) trains the smoke IF_SFT fingerprint for 800 optimizer steps with
``train.checkpoint_every=40``. Once Ray Train's run storage lists a reported checkpoint, the test
kills the Train worker process (SIGKILL). The launcher task sees the dead worker and retries the
step; the retry starts a Ray Train run of the same name on the same storage, so the workers get
the latest checkpoint and continue from its step. The run must then finish with one ``train_run``
row that records ``resumed_from_step`` > 0 and ran all 800 steps, the fingerprint must verify
(FSR 100% on the published model, 0% on the vanilla one), and the checkpoints must be gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runner.results.store import ResultStore

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke" / "if_sft.yaml"
STEPS, EVERY = 800, 40


def train_workers(driver: psutil.Process) -> list[psutil.Process]:
    """Ray Train worker processes under the driver's private Ray instance."""
    out = []
    for p in driver.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def reported_checkpoint(storage: Path) -> bool:
    """Whether Ray Train's run folder has a manager snapshot that lists a checkpoint."""
    for snap in storage.rglob("checkpoint_manager_snapshot.json"):
        try:
            if "checkpoint_" in snap.read_text():
                return True
        except OSError:
            continue
    return False


def test_killed_train_worker_resumes_from_its_checkpoint(tmp_path):
    results, artifacts = tmp_path / "r", tmp_path / "a"
    cmd = [
        str(Path(sys.executable).with_name("fprun")), "run", str(SMOKE), "--results", str(results),
        "--artifacts", str(artifacts), "--set", f"train.epochs={STEPS // 4}",
        "--set", f"train.checkpoint_every={EVERY}",
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    driver, killed, deadline = psutil.Process(proc.pid), None, time.time() + 600
    try:
        while proc.poll() is None and time.time() < deadline and killed is None:
            workers = train_workers(driver)
            if workers and reported_checkpoint(artifacts / "ray_train"):
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        assert killed is not None, "training finished before a checkpoint could be interrupted"
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "run.log").read_text()
    assert rc == 0, text[-3000:]
    store = ResultStore(results)
    (run,) = store.read("train_run").to_pylist()  # one row: the lost attempt wrote none
    extra = json.loads(run["extra"])
    assert run["steps"] == STEPS and EVERY <= extra["resumed_from_step"] < STEPS, extra
    rows = {(r["condition"], r["probe_set"]): r for r in store.read("verification").to_pylist()}
    assert rows[("publish", "fingerprint")]["fsr"] == 1.0
    assert rows[("vanilla", "fingerprint")]["fsr"] == 0.0
    assert not list((artifacts / "ray_train").glob("*/checkpoint_*"))  # removed once done
