"""The cluster path end to end, as a user submits to a cluster: two nodes on loopback, a Ray Train
fingerprint with a worker on each node and a merge grid whose pool actors are spread over both,
submitted with ``ray job submit --working-dir .``; then the whole cluster is stopped, a new
one-node cluster started, and the same job submitted again: every step is skipped, no row doubles.

A head and a worker node (``ray start``, two logical CPUs each, free ports: a pool keeps one CPU
of the cluster free, so four CPUs allow two actors) form the cluster; results and
artifacts live on an absolute path both nodes see (one machine: the same disk; on a real cluster
a shared mount). The job runs the smoke IF_SFT with ``train.num_workers=2`` and
``train.placement=STRICT_SPREAD``, then the smoke MergeGuard grid (part of it) with two
actors, which reuses that fingerprint by step ID. Ray's state API then says where every Train
worker and pool actor ran: two distinct nodes for each. The entrypoint goes through ``bash -c``
because ``ray job submit`` shell-quotes each argument: a bare ``&&`` would reach the shell as
the string ``'&&'``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import (
    VENV_BIN,
    free_port,
    ray_cli,
    start_head,
    start_worker_node,
    submit_job,
    wait_for_job,
)

pytestmark = pytest.mark.cluster

JOB_TIMEOUT_S = 1200
# One grid entry instead of three (9 cells with the baselines and the templates' own, not 15):
# the whole smoke grid runs in tests/runner.
CELLS = "pairs.0.grid=[{methods: [task_arithmetic, ties], weights: 0.5, densities: 0.4}]"


def nodes_of(address: str, class_name: str) -> set[str]:
    """Node IDs of every actor of ``class_name`` the cluster has run (alive or dead)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", class_name)], limit=1000,
                         detail=True, raise_on_missing_output=False)  # fmt: skip
    return {a.node_id for a in actors}


def submit(address: str, env: dict[str, str], script: str) -> str:
    """Submit ``script`` as a Ray job and wait for it to succeed; returns its logs."""
    job_id = submit_job(address, env, ["bash", "-c", script], "fprun-test")
    status = wait_for_job(address, job_id, env, JOB_TIMEOUT_S)
    logs = ray_cli(["job", "logs", job_id, "--address", address], env)
    assert status == "SUCCEEDED", logs[-4000:]
    assert str(VENV_BIN / "fprun") in logs.splitlines()  # the venv's fprun ran
    return logs


def test_two_nodes_spread_train_workers_and_grid_actors_and_a_new_cluster_skips_it_all(
    fprun_cache, tmp_path
):
    results, artifacts = tmp_path / "results", tmp_path / "artifacts"
    common = ["--results", str(results), "--artifacts", str(artifacts)]
    fingerprint = ["fprun", "run", "configs/smoke/if_sft.yaml", *common, "--set",
                   "train.num_workers=2", "--set", "train.placement=STRICT_SPREAD"]  # fmt: skip
    grid = ["fprun", "run", "configs/smoke/mergeguard.yaml", *common,
            "--set", "resources.actors=2", "--set", CELLS]  # fmt: skip
    script = f"command -v fprun && {shlex.join(fingerprint)} && {shlex.join(grid)}"
    gcs = free_port()
    with (
        start_head(fprun_cache, num_cpus=2, gcs_port=gcs) as (address, env),
        start_worker_node(gcs, env, num_cpus=2),
    ):
        logs = submit(address, env, script)
        print("\n".join(line for line in logs.splitlines() if "actor pool" in line))
        train_nodes = nodes_of(address, "RayTrainWorker")
        actor_nodes = nodes_of(address, "_Worker")
    print(f"Train workers on nodes {sorted(train_nodes)}; pool actors on {sorted(actor_nodes)}")
    assert len(train_nodes) == 2, train_nodes  # the fingerprint's two workers (and the expert's)
    assert len(actor_nodes) == 2, actor_nodes
    runs = pq.read_table(results / "train_run").to_pylist()
    fp = next(r for r in runs if r["purpose"] == "fingerprint")
    assert fp["num_workers"] == 2 and fp["strategy"] == "ddp"
    assert fp["device"].startswith("ray-train:2x")
    verify = pq.read_table(results / "verification").to_pylist()
    assert {"publish", "vanilla"} <= {r["condition"] for r in verify}
    cells = pq.read_table(results / "merge_cell").to_pylist()
    assert cells and all(c["status"] == "ok" for c in cells)
    assert "skip " in logs  # the grid reused the fingerprint trained across both nodes
    keys = [
        json.loads(line)["key"]
        for line in (Path(fp["artifact"]) / "private" / "keys.jsonl").read_text().splitlines()
    ]
    assert keys and not [k for k in keys if k in logs]  # secrecy: no key in the job output

    with start_head(fprun_cache) as (address, env):  # a new cluster: Ray's state is gone
        again = submit(address, env, script)
    lines = again.splitlines()
    assert [line for line in lines if line.startswith("skip ")], again[-3000:]
    assert not [line for line in lines if line.startswith("start ")], again[-3000:]
    for kind, before in (("train_run", runs), ("verification", verify), ("merge_cell", cells)):
        assert pq.read_table(results / kind).num_rows == len(before), kind
