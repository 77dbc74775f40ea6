"""A private one-node Ray cluster for ``cluster`` tests, and helpers to submit jobs to it.

The head is private to the test: loopback addresses, free ports (another Ray on the machine keeps
running), its own ``--temp-dir``, and ``--block`` so that stopping it means terminating the one
process the fixture started (``ray stop`` would also kill other users' Ray instances on a shared
machine). ``RAY_AUTH_MODE=disabled`` is set for every ray call: a token left by a local
``ray.init`` would otherwise turn auth on and plain ``ray job submit`` would fail.

Every cluster test uses it (``test_two_nodes.py`` twice: a cluster restart).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
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
    with start_head(fprun_cache) as started:
        yield started


@contextlib.contextmanager
def start_head(
    fprun_cache: Path, num_cpus: int = 2, gcs_port: int | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """Start a private head; stopping it on exit stops the whole cluster (a test may start
    another one afterwards: a cluster restart). ``gcs_port`` is where other nodes join."""
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
        f"--num-cpus={num_cpus}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--port={gcs_port or free_port()}",
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


@contextlib.contextmanager
def start_worker_node(gcs_port: int, env: dict[str, str], num_cpus: int = 1) -> Iterator[None]:
    """Join a second node (its own raylet, on loopback, with free ports) to the head at
    ``gcs_port``; stopped on exit. Blocks until the cluster lists two alive nodes.

    The node has a temp dir of its own: sharing the head's, its runtime-env agent would delete
    the job's unpacked working dir (``runtime_resources/``) under the head's running driver."""
    lo = free_port()
    workers = range(lo + 1, lo + 201)  # the node's worker ports; the others must lie outside

    def port() -> int:
        while (p := free_port()) in workers:
            pass
        return p

    temp = tempfile.mkdtemp(prefix="fprun-ray2-", dir="/tmp")
    cmd = [
        RAY, "start", f"--address=127.0.0.1:{gcs_port}", "--block", f"--num-cpus={num_cpus}",
        "--node-ip-address=127.0.0.1", f"--node-manager-port={port()}",
        f"--object-manager-port={port()}", f"--dashboard-agent-listen-port={port()}",
        f"--dashboard-agent-grpc-port={port()}", f"--metrics-export-port={port()}",
        f"--runtime-env-agent-port={port()}", f"--min-worker-port={workers[0]}",
        f"--max-worker-port={workers[-1]}", "--disable-usage-stats", f"--temp-dir={temp}",
    ]  # fmt: skip
    log = Path(temp) / "ray-start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while alive_nodes(env, gcs_port) < 2:
            assert proc.poll() is None, f"ray start (worker node) exited: {log.read_text()[-2000:]}"
            assert time.time() < deadline, "the second node did not join within 120 s"
            time.sleep(2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        shutil.rmtree(temp, ignore_errors=True)


def alive_nodes(env: dict[str, str], gcs_port: int) -> int:
    out = subprocess.run(
        [RAY, "status", f"--address=127.0.0.1:{gcs_port}"], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    text = out.stdout.split("Pending:")[0] if out.returncode == 0 else ""
    return text.count("node_")


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


def submit_job(address: str, env: dict[str, str], entrypoint: list[str], prefix: str) -> str:
    """``ray job submit --no-wait`` of ``entrypoint`` with this checkout as the working dir (the
    clusters' upload excludes), as a user submits; returns the job ID."""
    job_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ray_cli(
        ["job", "submit", "--address", address, "--submission-id", job_id,
         "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": upload_excludes()}),
         "--no-wait", "--", *entrypoint],
        env,
    )  # fmt: skip
    return job_id


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
