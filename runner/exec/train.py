"""Ray Train around ``tasks``' training functions (DDP over gloo/NCCL, or DeepSpeed ZeRO).

A training step (``executor="train"``) runs its task function on ``Resources.num_workers`` Ray
Train workers through a ``TorchTrainer``, passing hooks so ``tasks/`` never imports Ray:
``callbacks=[RayTrainReportCallback()]``, ``trainer_hook=prepare_trainer`` and ``distributed=``
(strategy, DeepSpeed config, GPU use) for ``TrainingArguments``. Rows travel back through the
artifact folder, since Train V2 keeps only metrics reported with a checkpoint: rank 0 writes the
step's record file (:mod:`runner.results.records`) and the launcher reads it after ``fit()``; on
a multi-node cluster ``out_dir`` must be on shared storage (see :mod:`runner.exec.ray_tasks`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from runner.exec.deepspeed import resolve_strategy
from runner.exec.driver import StepSpec, accepts, device_name, fresh_dir, remove_created
from runner.exec.progress import ProgressFile, clear_progress
from runner.exec.ray_tasks import carried_errors, threads_for, unwrap
from runner.plan import resolve_fn
from runner.results.records import Outcome, take_record, write_record
from runner.results.store import now
from tasks.errors import FprunError

STORAGE_DIR = "ray_train"  # ARTIFACTS/ray_train/<step_id>/: Ray Train's storage_path and name


class TrainWorkerLost(RuntimeError):
    """A training worker's process or node died: the launcher retries the whole step."""


def run_train_step(spec: StepSpec) -> Outcome:
    """Run one training step on ``spec.resources.num_workers`` Ray Train workers.

    The artifact folder is emptied first (a leftover belongs to a run that died before its
    results were written). With ``resources.checkpoint_every`` the workers report a checkpoint
    every N optimizer steps to the run's storage (``ARTIFACTS/ray_train/<step_id>``), which is
    kept: the launcher's retry after a lost worker, or ``fprun run`` after a killed driver or
    cluster, starts a run of the same name there and Ray Train hands the workers the latest
    checkpoint to resume from (the step ID fixes the config, so it is always the same training);
    the storage is removed once the step succeeds. Without checkpoints a leftover run folder is
    removed. A bad-input error on any worker is raised as its own family; a dead worker raises
    :class:`TrainWorkerLost`; any other worker exception is raised as it was.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = spec.resources
    out = Path(spec.out_dir)
    created = fresh_dir(out)
    storage = out.parents[1] / STORAGE_DIR
    if not res.checkpoint_every:
        shutil.rmtree(storage / spec.step_id, ignore_errors=True)
    strategy, ds_config = resolve_strategy(res.strategy)
    per_worker: dict[str, float] = {"CPU": res.num_cpus}
    if res.use_gpu:
        per_worker["GPU"] = max(res.num_gpus, 1.0)
    if res.memory_gb:
        per_worker["memory"] = res.memory_gb * 2**30
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={
            "fn": spec.fn,
            "config": spec.config,
            "inputs": spec.inputs,
            "out_dir": str(out),
            "distributed": {
                "strategy": strategy,
                "deepspeed_config": ds_config,
                "use_gpu": res.use_gpu,
                "checkpoint_every": res.checkpoint_every,
            },
        },
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res.num_workers,
            use_gpu=res.use_gpu,
            resources_per_worker=per_worker,
            placement_strategy=res.placement,
        ),
        run_config=RunConfig(
            name=spec.step_id,
            storage_path=str(storage),
            # Retries happen one level up (the launcher task), and only for dead workers: a
            # Python error in the training function would fail the same way again. Ray Train's
            # FailureConfig retries every worker error, so it stays at 0; the retry resumes from
            # the checkpoint all the same (same run name and storage).
            failure_config=FailureConfig(max_failures=0),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            worker_runtime_env={"env_vars": worker_env(res.num_cpus)},
        ),
    )
    started = now()
    try:
        _fit(trainer)
    except FprunError:  # bad input leaves nothing behind (Ray Train's run folder included)
        remove_created(out, created)
        shutil.rmtree(storage / spec.step_id, ignore_errors=True)
        raise
    clear_progress(out)
    if res.checkpoint_every:  # the step is done: its checkpoints (model + optimizer) are not needed
        shutil.rmtree(storage / spec.step_id, ignore_errors=True)
    rank0 = take_record(out)
    return Outcome(rank0.rows, started, now(), f"ray-train:{res.num_workers}x{rank0.device}")


def worker_env(num_cpus: float) -> dict[str, str]:
    """Environment of each Train worker: BLAS threads, and Ray Train's print patch off.

    Train V2 replaces ``builtins.print`` in its workers with a logger that also receives what a
    library prints into a redirected ``sys.stdout``. ``datasets`` fingerprints every Dataset
    through dill, whose ``detect.nestedglobals`` disassembles pickled local functions with
    ``dis.dis`` into a captured stdout; with the patch, that bytecode listing reached the run's
    log. Unpatched, ``print`` writes to the worker's stdout like any Ray task's.
    """
    return {"OMP_NUM_THREADS": threads_for(num_cpus), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def _train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """What each Ray Train worker runs: the task function with Ray's hooks plugged in."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from tasks.progress import quiet_third_party

    quiet_third_party()
    out = Path(cfg["out_dir"])
    if cfg["distributed"]["strategy"] == "deepspeed":
        clear_stale_extension_locks()
    fn = resolve_fn(cfg["fn"])
    rank0 = ray.train.get_context().get_world_rank() == 0
    distributed = dict(cfg["distributed"])
    checkpoint = ray.train.get_checkpoint()  # the latest one an earlier attempt reported
    resume = Path(tempfile.mkdtemp(prefix="fprun-resume-")) if checkpoint is not None else None
    if checkpoint is not None:
        checkpoint.to_directory(str(resume))
        # RayTrainReportCallback stores the HF checkpoint folder under this name
        distributed["resume_from"] = str(resume / RayTrainReportCallback.CHECKPOINT_NAME)
    # rank 0 reports progress to the file the driver polls; the others train the same steps
    extra = {"progress": ProgressFile(out)} if rank0 and accepts(fn, "progress") else {}
    started = now()
    try:
        with carried_errors():
            rows = fn(
                cfg["config"],
                inputs={k: Path(v) for k, v in cfg["inputs"].items()},
                out_dir=out,
                callbacks=[RayTrainReportCallback()],
                trainer_hook=prepare_trainer,
                distributed=distributed,
                **extra,
            )
    finally:
        if resume is not None:
            shutil.rmtree(resume, ignore_errors=True)
    if rank0:
        write_record(out, Outcome(list(rows or []), started, now(), device_name()))


def clear_stale_extension_locks(max_age_s: float | None = None) -> list[Path]:
    """Remove torch-extension build locks older than ``max_age_s`` (default 900 s).

    DeepSpeed JIT-builds ops (on CPU, ``deepspeed_shm_comm``) under torch's extension folder,
    guarded by a bare ``lock`` file (``torch.utils.file_baton``): no PID, no timeout. A build
    killed mid-way leaves the file behind and every later DeepSpeed run on that machine waits on
    it forever. A build takes ~60 s on 2 CPU cores and a few minutes for CUDA ops, so a lock
    older than ``$FPRUN_EXT_LOCK_STALE_S`` (900 s) is taken as stale. torch has no API for this;
    the folder layout is the one ``torch.utils.cpp_extension`` documents.
    """
    import time

    from torch.utils.cpp_extension import get_default_build_root

    if max_age_s is None:
        max_age_s = float(os.environ.get("FPRUN_EXT_LOCK_STALE_S", "900"))
    # <root>/<ext>/lock with $TORCH_EXTENSIONS_DIR, else <default root>/py311_cpu/<ext>/lock
    own = os.environ.get("TORCH_EXTENSIONS_DIR")
    root = Path(own or get_default_build_root())
    removed = []
    for lock in root.glob("*/lock" if own else "*/*/lock") if root.is_dir() else ():
        try:
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
        except FileNotFoundError:  # another worker removed it, or its build finished
            continue
    for lock in removed:
        print(f"fprun: removed a stale torch-extension build lock {lock} (a killed build left it)")
    return removed


def _fit(trainer: Any) -> None:
    """``trainer.fit()`` with worker errors unwrapped (bad input first, then dead workers)."""
    from ray.exceptions import RayActorError
    from ray.train import WorkerGroupError

    try:
        trainer.fit()
    except WorkerGroupError as exc:
        errors = [unwrap(e) for _, e in sorted(exc.worker_failures.items())]
        for err in errors:
            if isinstance(err, FprunError):
                raise err from None
        if any(_worker_lost(e, RayActorError) for e in errors):
            raise TrainWorkerLost(str(exc)) from None
        raise errors[0] from None


def _worker_lost(err: BaseException, actor_error: type) -> bool:
    """Whether a worker error means its process or node died (a retry can succeed).

    A worker that dies inside a collective arrives as a ``RayActorError``; one that dies between
    calls arrives (Train V2) as a failed or timed-out health check, which wraps the actor error.
    Those classes are internal to Ray, so they are recognised by their attribute and name.
    """
    return (
        isinstance(err, actor_error)
        or isinstance(getattr(err, "health_check_failure", None), actor_error)
        or type(err).__name__ == "WorkerHealthCheckTimeoutError"
    )
