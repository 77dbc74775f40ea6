"""A private one-node Ray cluster for ``cluster`` tests, and helpers to submit jobs to it.

The head is private to the test: loopback addresses, free ports (another Ray on the machine keeps
running), its own ``--temp-dir``, and ``--block`` so that stopping it means terminating the one
process the fixture started (``ray stop`` would also kill other users' Ray instances on a shared
machine). ``RAY_AUTH_MODE=disabled`` is set for every ray call: a token left by a local
``ray.init`` would otherwise turn auth on and plain ``ray job submit`` would fail.

(Factored out of ``test_job_submit.py``'s fixture, unchanged in behaviour, so several cluster
tests can share it.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """``ray ARGS`` with the test's env; fails the test with Ray's output if it fails."""
    out = subprocess.run(
        [RAY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"ray {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture
def head(fprun_cache: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster on 127.0.0.1; yields (dashboard address, env for ray calls)."""
    temp = tempfile.mkdtemp(prefix="fprun-ray-", dir="/tmp")  # short: unix socket paths
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FPRUN_CACHE": str(fprun_cache),
        "OMP_NUM_THREADS": "1",
    }
    dash = free_port()
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_for_jobs_api(address, env, proc)
        yield address, env
    finally:
        proc.terminate()  # --block: ray start stops the processes it started, then exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_jobs_api(address: str, env: dict[str, str], proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, "ray start --head exited early"
        out = subprocess.run(
            [RAY, "job", "list", "--address", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError("the Ray head's job API did not come up within 120 s")


def upload_excludes() -> list[str]:
    """The working-dir excludes shipped for clusters (the venv, results, git history...)."""
    return yaml.safe_load((ROOT / "clusters" / "runtime_env.yaml").read_text())["excludes"]


def job_status(address: str, job_id: str, env: dict[str, str]) -> str:
    """PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED, from the job SDK (the CLI prints the
    state only in prose: "Job 'x' succeeded")."""
    from ray.job_submission import JobSubmissionClient

    os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"]
    return JobSubmissionClient(address).get_job_status(job_id).value


def wait_for_job(address: str, job_id: str, env: dict[str, str], timeout_s: float) -> str:
    """Block until the job reaches a final state; returns it."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = job_status(address, job_id, env)
        if status in FINAL_STATES:
            return status
        time.sleep(3)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s} s")
