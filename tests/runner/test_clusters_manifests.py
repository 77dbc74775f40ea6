"""clusters/: the launcher YAML, the KubeRay RayJob and the runtime env say what matters.

Every manifest runs the same entrypoint (``fprun run <config> --results/--artifacts`` on shared
storage), asks for GPUs, keeps the dashboard off public interfaces, turns Ray token auth on, and
holds nothing that looks like a credential.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
RAY_DIR = Path(importlib.util.find_spec("ray").origin).parent  # without importing ray
SHARED = "/mnt/shared/"
SECRETISH = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{20,}|xox[bp]-"
    r"|(?i:(password|secret|api_key|access_key|auth_token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{12,})"
)


def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTERS / name).read_text()) if d]


def check_entrypoint(cmd: str) -> None:
    """``fprun run CONFIG ... --results /mnt/shared/... --artifacts /mnt/shared/...``."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["fprun", "run"] and argv[2].endswith(".yaml"), cmd
    for flag in ("--results", "--artifacts"):
        assert argv[argv.index(flag) + 1].startswith(SHARED), (flag, cmd)


def test_every_cluster_file_is_yaml_without_credentials():
    names = sorted(p.name for p in CLUSTERS.glob("*.yaml"))
    assert {"aws-gpu.yaml", "rayjob.yaml", "runtime_env.yaml"} <= set(names)
    for name in names:
        text = (CLUSTERS / name).read_text()
        assert load_all(name), name
        assert not SECRETISH.search(text), f"{name} holds something that looks like a secret"


def test_launcher_yaml_is_valid_and_runs_fprun_on_gpus_with_shared_storage():
    (cfg,) = load_all("aws-gpu.yaml")
    schema = json.loads((RAY_DIR / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)  # Ray's own schema for cluster-launcher configs
    check_entrypoint(cfg["metadata"]["fprun"]["entrypoint"])
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers)
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert all("RAY_AUTH_MODE=token" in c for c in cmds if "ray start" in c)
    init = " ".join(cfg["initialization_commands"])
    assert "mount" in init and SHARED.rstrip("/") in init
    assert any(SHARED.rstrip("/") in opt for opt in cfg["docker"]["run_options"])
    assert any("fprun" in c and "pip install" in c for c in cfg["setup_commands"])


def test_rayjob_runs_fprun_with_gpu_workers_token_auth_and_a_private_dashboard():
    docs = load_all("rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    check_entrypoint(spec["entrypoint"])
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["rayVersion"] == importlib.metadata.version("ray")
    head = cluster["headGroupSpec"]
    # The sidecar submitter reaches the dashboard on localhost; nothing else can.
    assert spec["submissionMode"] == "SidecarMode"
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and "ingress" not in str(head)
    gpus = [
        g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        for g in cluster["workerGroupSpecs"]
    ]
    assert any(int(g or 0) >= 1 for g in gpus)
    claims = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in d["spec"]["accessModes"]
    }
    for pod in [head, *cluster["workerGroupSpecs"]]:
        pspec = pod["template"]["spec"]
        mounts = {m["mountPath"] for m in pspec["containers"][0]["volumeMounts"]}
        assert SHARED.rstrip("/") in mounts
        assert {v["persistentVolumeClaim"]["claimName"] for v in pspec["volumes"]} <= claims
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["FPRUN_CACHE"].startswith(SHARED)


@pytest.mark.parametrize("excluded", [".venv/", ".git/", "fprun-results/", "fprun-artifacts/"])
def test_runtime_env_keeps_the_upload_small(excluded):
    (env,) = load_all("runtime_env.yaml")
    assert env["working_dir"] == "." and excluded in env["excludes"]
    shared = {k: v for k, v in env["env_vars"].items() if k.endswith(("CACHE", "HOME"))}
    assert shared and all(v.startswith(SHARED) for v in shared.values())
