"""Two nodes on loopback: a Ray Train fingerprint with a worker on each node, and a merge grid
whose pool actors are spread over both, submitted with ``ray job submit``.

A head and a worker node (``ray start``, two logical CPUs each, free ports: a pool keeps one CPU
of the cluster free, so four CPUs allow two actors) form the cluster; results and
artifacts live on an absolute path both nodes see (one machine: the same disk; on a real cluster
a shared mount). The job runs the smoke IF_SFT with ``train.num_workers=2`` and
``train.placement=STRICT_SPREAD``, then the smoke MergeGuard grid with two actors, which reuses
that fingerprint by step ID. Ray's state API then says where every Train worker and pool actor
ran: two distinct nodes for each.
"""

from __future__ import annotations

import json
import shlex
import uuid

import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import (
    free_port,
    ray_cli,
    start_head,
    start_worker_node,
    upload_excludes,
    wait_for_job,
)

pytestmark = pytest.mark.cluster

JOB_TIMEOUT_S = 1200


def nodes_of(address: str, class_name: str) -> set[str]:
    """Node IDs of every actor of ``class_name`` the cluster has run (alive or dead)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", class_name)], limit=1000,
                         detail=True, raise_on_missing_output=False)  # fmt: skip
    return {a.node_id for a in actors}


def test_train_workers_and_grid_actors_land_on_both_nodes(fprun_cache, tmp_path):
    results, artifacts = tmp_path / "results", tmp_path / "artifacts"
    common = ["--results", str(results), "--artifacts", str(artifacts)]
    fingerprint = ["fprun", "run", "configs/smoke/if_sft.yaml", *common, "--set",
                   "train.num_workers=2", "--set", "train.placement=STRICT_SPREAD"]  # fmt: skip
    grid = ["fprun", "run", "configs/smoke/mergeguard.yaml", *common,
            "--set", "resources.actors=2"]  # fmt: skip
    gcs = free_port()
    with (
        start_head(fprun_cache, num_cpus=2, gcs_port=gcs) as (address, env),
        start_worker_node(gcs, env, num_cpus=2),
    ):
        job_id = f"fprun-2nodes-{uuid.uuid4().hex[:8]}"
        ray_cli(
            ["job", "submit", "--address", address, "--submission-id", job_id,
             "--working-dir", ".", "--runtime-env-json",
             json.dumps({"excludes": upload_excludes()}), "--no-wait", "--", "bash", "-c",
             f"{shlex.join(fingerprint)} && {shlex.join(grid)}"],
            env,
        )  # fmt: skip
        status = wait_for_job(address, job_id, env, JOB_TIMEOUT_S)
        logs = ray_cli(["job", "logs", job_id, "--address", address], env)
        assert status == "SUCCEEDED", logs[-4000:]
        print("\n".join(line for line in logs.splitlines() if "actor pool" in line))
        train_nodes = nodes_of(address, "RayTrainWorker")
        actor_nodes = nodes_of(address, "_Worker")
    print(f"Train workers on nodes {sorted(train_nodes)}; pool actors on {sorted(actor_nodes)}")
    assert len(train_nodes) == 2, train_nodes  # the fingerprint's two workers (and the expert's)
    assert len(actor_nodes) == 2, actor_nodes
    runs = pq.read_table(results / "train_run").to_pylist()
    fp = next(r for r in runs if r["purpose"] == "fingerprint")
    assert fp["num_workers"] == 2 and fp["strategy"] == "ddp"
    cells = pq.read_table(results / "merge_cell").to_pylist()
    assert cells and all(c["status"] == "ok" for c in cells)
    assert "skip " in logs  # the grid reused the fingerprint trained across both nodes
