"""The Ray executor: each step of a plan as a Ray task (or a Ray Train run), results on the driver.

``fprun run`` uses :class:`RayBackend` unless ``--local``; it connects to ``--address``, or to
``RAY_ADDRESS`` (set inside ``ray job submit``), or starts a private local instance. Steps travel
as :class:`~runner.exec.driver.StepSpec` (paths and JSON); workers return rows, and only the driver
writes results. Handled here once: ``FprunError(problem, fix)`` does not survive Ray's pickling,
so workers raise a :class:`RemoteBadInput` carrier that the driver turns back into the original
error (the CLI still exits 2); and on a multi-node cluster, relative result/artifact paths (or
ones inside the job's uploaded working dir) are refused before any step runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from runner.exec.driver import StepSpec, run_step_inline
from runner.results.records import Outcome
from tasks.errors import FprunError, StoreError

# Ask Ray to forward workers' stdout/stderr to the driver (off by default: HF progress bars from
# every worker drown the driver's one line per step, and job output must stay free of secrets).
WORKER_LOGS_ENV = "FPRUN_RAY_WORKER_LOGS"


class RemoteBadInput(Exception):
    """Picklable stand-in for a :class:`FprunError` raised inside a Ray worker."""

    def __init__(self, module: str, name: str, problem: str, fix: str) -> None:
        super().__init__(module, name, problem, fix)

    def restore(self) -> FprunError:
        """The original error family with the original message (a plain FprunError if the
        family cannot be imported on the driver)."""
        module, name, problem, fix = self.args
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = FprunError
        return cls(problem, fix)


@contextlib.contextmanager
def carried_errors() -> Iterator[None]:
    """Re-raise a FprunError as :class:`RemoteBadInput`, which survives Ray's serialization."""
    try:
        yield
    except FprunError as exc:
        raise RemoteBadInput(
            type(exc).__module__, type(exc).__qualname__, exc.problem, exc.fix
        ) from None


def unwrap(exc: BaseException) -> BaseException:
    """The exception a driver should act on: the worker's own error, bad input restored."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    inner = cause if isinstance(cause, BaseException) else exc
    if isinstance(inner, RemoteBadInput):
        return inner.restore()
    return inner


def _run_task(spec: StepSpec) -> Outcome:
    with carried_errors():
        return run_step_inline(spec)


def _run_train(spec: StepSpec) -> Outcome:
    from runner.exec.train import run_train_step  # local: ray.train is only needed for train steps

    with carried_errors():
        return run_train_step(spec)


def threads_for(num_cpus: float) -> str:
    """OMP/MKL threads for a worker holding ``num_cpus`` CPUs: oversubscribed BLAS threads (2
    workers with 2 threads each on 2 cores) made a CPU run several times slower."""
    return str(max(1, int(num_cpus)))


class RayBackend:
    """Runs steps as Ray tasks (``executor="task"``), Ray Train runs (``executor="train"``) or on
    a shared actor pool (``executor="actor"``, :mod:`runner.exec.actors`)."""

    max_in_flight = None  # Ray's scheduler queues by resources; the driver need not throttle

    def __init__(self, address: str | None = None, *, results: str, artifacts: str) -> None:
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            init_ray(address or os.environ.get("RAY_ADDRESS") or None)
        try:
            check_shared_paths(results, artifacts, n_nodes=alive_nodes(), job_dir=job_working_dir())
        except StoreError:
            self.close()
            raise
        self._task = ray.remote(_run_task)
        self._train = ray.remote(_run_train)

    def submit(self, spec: StepSpec) -> ray.ObjectRef:
        """Start one step; returns the ref its :class:`Outcome` will arrive on."""
        res = spec.resources
        if spec.executor == "train":
            # A zero-CPU launcher owns the TorchTrainer; its workers reserve the real resources.
            # It is retried only when a worker process or node died
            # (runner.exec.train.TrainWorkerLost).
            from runner.exec.train import TrainWorkerLost

            opts: dict[str, Any] = {
                "num_cpus": 0,
                "max_retries": res.max_retries,
                "retry_exceptions": [TrainWorkerLost],
            }
        elif spec.executor == "task":
            opts = {
                "num_cpus": res.num_cpus,
                "num_gpus": res.num_gpus,
                "max_retries": res.max_retries,
                "runtime_env": {"env_vars": {"OMP_NUM_THREADS": threads_for(res.num_cpus)}},
            }
            if res.memory_gb:
                opts["memory"] = int(res.memory_gb * 2**30)
        elif spec.executor == "actor":
            # Long-lived actors that keep a cache between steps (runner/exec/actors.py).
            from runner.exec.actors import submit_step

            return submit_step(spec)
        else:
            raise ValueError(f"unknown executor {spec.executor!r} for step {spec.step_id}")
        remote = self._train if spec.executor == "train" else self._task
        return remote.options(name=f"{spec.kind}:{spec.step_id[:8]}", **opts).remote(spec)

    def wait(self, handles: list[ray.ObjectRef], timeout: float | None = None) -> tuple[Any, Any]:
        """Block until one step finishes (or ``timeout`` s pass: ``(None, None)``); its Outcome,
        or the error it raised (unwrapped)."""
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if not ready:
            return None, None
        try:
            return ready[0], ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which reports per step
            return ready[0], unwrap(exc)

    def close(self) -> None:
        """Kill the actor pools, then disconnect (and stop the local instance) if this backend
        started it."""
        if ray.is_initialized():
            from runner.exec.actors import close_pools

            close_pools()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def init_ray(address: str | None) -> None:
    """Connect to ``address``, or start a private local instance when there is none.

    Only the auto-started local instance gets ``RAY_AUTH_MODE=disabled`` by default (it listens on
    this machine only and lives as long as the command); for a cluster the caller's setting is
    used unchanged, because a mismatch with the cluster's mode fails authentication.
    """
    worker_logs = os.environ.get(WORKER_LOGS_ENV, "") not in ("", "0")
    common = {"log_to_driver": worker_logs, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # num_cpus is left to Ray: its count follows the machine's cgroup limits, os.cpu_count() not.
    ray.init(address="local", include_dashboard=False, **common)


def alive_nodes() -> int:
    """Number of alive nodes in the connected cluster."""
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def job_working_dir() -> Path | None:
    """The unpacked ``--working-dir`` of the Ray job this driver runs in (its cwd), else None."""
    runtime_env = ray.get_runtime_context().runtime_env or {}
    return Path.cwd().resolve() if runtime_env.get("working_dir") else None


def check_shared_paths(results: str, artifacts: str, *, n_nodes: int, job_dir: Path | None) -> None:
    """Refuse result/artifact paths that other nodes cannot see (docs/cluster.md).

    A relative path, or an absolute one inside the job's uploaded working dir, names a different
    (or no) folder on every node, so steps would write artifacts where the next step never finds
    them. One node is always fine. URIs (s3://, gs://) are shared by construction.
    """
    if n_nodes <= 1:
        return
    for flag, value in (("--results", results), ("--artifacts", artifacts)):
        if "://" in str(value):
            continue
        path = Path(value).expanduser()
        fix = (
            "pass an absolute path on a filesystem every node mounts (e.g. /mnt/shared/"
            f"{Path(value).name or 'fprun'}), or an s3:// or gs:// URI for --results"
        )
        if not path.is_absolute():
            raise StoreError(
                f"{flag} {value} is a relative path but the Ray cluster has "
                f"{n_nodes} nodes, which would each write their own copy",
                fix,
            )
        if job_dir is not None and path.resolve().is_relative_to(job_dir):
            raise StoreError(
                f"{flag} {value} lies inside the job's uploaded working dir, which "
                f"each of the cluster's {n_nodes} nodes unpacks separately",
                fix,
            )
