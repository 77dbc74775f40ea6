"""Ray Train around the real IF_SFT training function: 2-worker DDP over gloo, DeepSpeed ZeRO-2
on CPU, bad input from a training worker, and the named DeepSpeed strategies.

The Ray tests are kept to three short runs on the tiny smoke config (2 epochs of 16 rows); the
first DeepSpeed run of a machine also JIT-compiles one op (~60 s, cached in
``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.exec.deepspeed import STRATEGIES, resolve_strategy, zero_config
from runner.exec.driver import StepSpec, artifact_dir
from runner.experiments import if_sft
from runner.results.records import RECORD_FILE
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "if_sft.yaml"


def fingerprint_spec(artifacts: Path, *overrides: str) -> StepSpec:
    """The smoke config's IF_SFT step as the driver would hand it to a backend."""
    step = if_sft.fingerprint_step(load_experiment(SMOKE, list(overrides)))
    return StepSpec(
        step_id=step.step_id,
        kind=step.kind,
        fn=step.fn,
        config=step.config,
        inputs={},
        out_dir=str(artifact_dir(artifacts, step)),
        executor=step.executor,
        resources=step.resources,
        label=step.label,
    )


def run_on_ray(spec: StepSpec, results: Path):
    from runner.exec.ray_tasks import RayBackend

    backend = RayBackend(results=str(results), artifacts=str(Path(spec.out_dir).parents[1]))
    _, outcome = backend.wait([backend.submit(spec)])
    backend.close()
    return outcome


@pytest.fixture(scope="module")
def ddp(ray_session, tmp_path_factory):
    """One 2-worker DDP run (gloo) of fingerprint_if_sft, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ddp")
    spec = fingerprint_spec(tmp / "a", "train.num_workers=2")
    return spec, run_on_ray(spec, tmp / "r")


def test_two_worker_ddp_returns_rank0_row_and_writes_the_fingerprint(ddp):
    spec, outcome = ddp
    assert not isinstance(outcome, BaseException), outcome
    (row,) = outcome.rows
    assert row["num_workers"] == 2 and row["strategy"] == "ddp" and row["steps"] > 0
    assert json.loads(row["extra"])["grad_accum"] == 1  # total batch 4 = 2 workers x 2
    assert outcome.device.startswith("ray-train:2xcpu")
    out = Path(spec.out_dir)
    assert (out / "published" / "model.safetensors").is_file()
    assert not (out / RECORD_FILE).exists()  # read and removed by the launcher
    assert (out.parents[1] / "ray_train" / spec.step_id).is_dir()  # Ray Train's storage_path


def test_deepspeed_zero2_on_cpu_matches_ddp(ddp, tmp_path):
    _, ddp_outcome = ddp
    spec = fingerprint_spec(tmp_path / "a", "train.num_workers=2", "train.strategy=deepspeed_zero2")
    outcome = run_on_ray(spec, tmp_path / "r")
    assert not isinstance(outcome, BaseException), outcome
    (row,) = outcome.rows
    assert row["strategy"] == "deepspeed_zero2" and row["num_workers"] == 2
    # ZeRO-2 partitions optimizer state and gradients but computes the same update as DDP
    assert row["final_loss"] == pytest.approx(ddp_outcome.rows[0]["final_loss"], rel=1e-4)
    assert (Path(spec.out_dir) / "published" / "model.safetensors").is_file()


def test_bad_input_in_a_training_worker_arrives_as_its_family(ray_session, tmp_path):
    spec = fingerprint_spec(tmp_path / "a", "train.max_seq_len=8")  # cuts the key rows
    outcome = run_on_ray(spec, tmp_path / "r")
    assert type(outcome) is ConfigError and "raise train.max_seq_len" in outcome.one_line()
    # bad input leaves nothing behind: neither the step's folder nor Ray Train's run folder
    assert not Path(spec.out_dir).exists()
    assert not (tmp_path / "a" / "ray_train" / spec.step_id).exists()


@pytest.mark.ray
def test_train_workers_run_without_ray_trains_print_patch():
    """Train V2's print patch logged dill's captured dis.dis output: a bytecode listing in the
    run's log (runner.exec.train.worker_env)."""
    from runner.exec.train import worker_env

    env = worker_env(2.0)
    assert env == {"OMP_NUM_THREADS": "2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def test_named_strategies_and_deepspeed_files(tmp_path):
    assert resolve_strategy("ddp") == ("ddp", None)
    for name in STRATEGIES[1:]:
        strategy, cfg = resolve_strategy(name)
        assert strategy == "deepspeed" and cfg["zero_optimization"]["stage"] in (2, 3)
    z3 = zero_config(3, offload=True)["zero_optimization"]
    assert z3["stage3_gather_16bit_weights_on_model_save"] and z3["offload_param"]["device"]
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert resolve_strategy(f"deepspeed:{own}")[1]["zero_optimization"]["stage"] == 1
    for bad, needle in (
        ("dpp", "unknown training strategy"),
        (f"deepspeed:{tmp_path / 'nope.json'}", "does not exist"),
    ):
        with pytest.raises(ConfigError, match=needle):
            resolve_strategy(bad)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_strategy(f"deepspeed:{tmp_path / 'bad.json'}")


def test_stale_extension_build_locks_are_cleared_fresh_ones_kept(tmp_path, monkeypatch):
    """A killed DeepSpeed op build leaves torch's bare ``lock`` file; later runs wait forever."""
    import os
    import time

    from runner.exec.train import clear_stale_extension_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stale, fresh = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "cpu_adam" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir()
        lock.touch()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert clear_stale_extension_locks() == [stale]
    assert not stale.exists() and fresh.exists()
    monkeypatch.setenv("FPRUN_EXT_LOCK_STALE_S", "-1")
    assert clear_stale_extension_locks() == [fresh]
