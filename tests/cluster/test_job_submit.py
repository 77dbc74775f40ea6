"""The cluster path end to end: a real ``ray start --head`` and ``ray job submit --working-dir .``
of ``fprun run configs/smoke/if_sft.yaml``, exactly as a user submits to a cluster; then the whole
cluster is stopped, a new one started, and the same job submitted again: every finished step is
skipped and no row is doubled.

The private head and the ``ray`` helpers live in ``conftest.py``. The entrypoint goes through
``bash -c`` because ``ray job submit`` shell-quotes each argument (``shlex.join``): a bare ``&&``
would reach the shell as the string ``'&&'``.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import (
    VENV_BIN,
    ray_cli,
    start_head,
    upload_excludes,
    wait_for_job,
)

pytestmark = pytest.mark.cluster

JOB_TIMEOUT_S = 900


def test_ray_job_submit_runs_the_smoke_experiment_and_a_restarted_cluster_skips_it(
    fprun_cache, tmp_path
):
    results, artifacts = tmp_path / "results", tmp_path / "artifacts"
    with start_head(fprun_cache) as (address, env):
        logs = submit_and_check(address, env, results, artifacts)
    train = pq.read_table(results / "train_run").to_pylist()
    verify = pq.read_table(results / "verification").to_pylist()
    assert len(train) == 1 and train[0]["device"].startswith("ray-train:1x")
    assert {r["condition"] for r in verify} == {"publish", "vanilla"}
    assert all(r["fingerprint_id"] == train[0]["fingerprint_id"] for r in verify)
    keys = [
        json.loads(line)["key"]
        for line in (Path(train[0]["artifact"]) / "private" / "keys.jsonl").read_text().splitlines()
    ]
    assert keys and not [k for k in keys if k in logs]  # secrecy: no key in the job output

    with start_head(fprun_cache) as (address, env):  # a new cluster: Ray's state is gone
        again = submit_and_check(address, env, results, artifacts)
    lines = again.splitlines()
    assert sum(line.startswith("skip ") for line in lines) == 3, again[-3000:]
    assert not [line for line in lines if line.startswith("start ")]
    assert pq.read_table(results / "train_run").num_rows == 1
    assert pq.read_table(results / "verification").num_rows == len(verify)


def submit_and_check(address: str, env: dict[str, str], results: Path, artifacts: Path) -> str:
    """Submit the smoke run as a Ray job, wait for it to succeed; returns its logs."""
    job_id = f"fprun-test-{uuid.uuid4().hex[:8]}"
    run = shlex.join(
        [
            "fprun",
            "run",
            "configs/smoke/if_sft.yaml",
            "--results",
            str(results),
            "--artifacts",
            str(artifacts),
        ]
    )
    ray_cli(
        [
            "job",
            "submit",
            "--address",
            address,
            "--submission-id",
            job_id,
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps({"excludes": upload_excludes()}),
            "--no-wait",
            "--",
            "bash",
            "-c",
            f"command -v fprun && {run}",
        ],
        env,
    )
    status = wait_for_job(address, job_id, env, JOB_TIMEOUT_S)
    logs = ray_cli(["job", "logs", job_id, "--address", address], env)
    assert status == "SUCCEEDED", logs[-3000:]
    assert str(VENV_BIN / "fprun") in logs.splitlines()  # the venv's fprun ran
    return logs
