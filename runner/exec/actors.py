"""Actor pools: long-lived Ray actors that run steps of any kind, a bounded number at a time.

Actors keep what is costly to rebuild (torch, transformers, mergekit imported; HuRef's token
cache); steps run through :func:`runner.exec.driver.run_step_inline`, so results equal the other
executors'. A zero-CPU manager actor queues steps and lets at most ``size`` reach the workers (an
asyncio semaphore: nothing polls, waiting stays linear). Ray restarts a dead worker and retries its
step (``resources.max_retries``), so its row is written once; a starting worker removes stale
scratch of dead processes (:func:`tasks.scratch.clean_stale`); idle workers are released so a pool
never starves waiting Ray Train steps. :func:`submit_step` is ``RayBackend``'s route for
``executor="actor"``; :func:`close_pools` kills every pool.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import ray

from runner.exec.driver import StepSpec, run_step_inline
from runner.exec.pool_sizing import pool_size
from runner.exec.ray_tasks import carried_errors, threads_for, unwrap
from runner.plan import Resources
from runner.results.records import Outcome


class _Worker:
    """One worker process; ``run`` executes a step, ``stats`` shows what it kept."""

    def __init__(self) -> None:
        from tasks.scratch import clean_stale

        self.calls = 0
        self.cleaned = len(clean_stale())  # what dead processes on this node left behind

    def run(self, spec: StepSpec) -> Outcome:
        self.calls += 1
        with carried_errors():
            return run_step_inline(spec)

    def stats(self) -> dict[str, Any]:
        import sys

        tokens = sys.modules.get("tasks.huref.tokens")
        return {
            "pid": os.getpid(),
            "calls": self.calls,
            "cleaned": self.cleaned,
            "token_sets": tokens.memo_size() if tokens else 0,
        }


class _Manager:
    """The pool's queue (an async actor): at most ``size`` steps on the workers at once."""

    def __init__(self, size: int, worker_options: dict[str, Any], release_idle: bool) -> None:
        self.size, self.options, self.release_idle = size, worker_options, release_idle
        self.free: list[Any] = []
        self.pending = 0
        self.started = 0
        self.slots: asyncio.Semaphore | None = None

    async def run(self, spec: StepSpec) -> Outcome:
        if self.slots is None:  # created inside the actor's event loop
            self.slots = asyncio.Semaphore(self.size)
        self.pending += 1
        try:
            async with self.slots:
                worker = self.free.pop() if self.free else self._start()
                alive = True
                try:
                    return await worker.run.remote(spec)
                except ray.exceptions.ActorDiedError:
                    alive = False  # restarts exhausted: never hand this worker out again
                    raise
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else exc) from None
                finally:
                    if alive:
                        self.free.append(worker)
        finally:
            self.pending -= 1
            if self.release_idle and self.pending == 0:
                for w in self.free:
                    ray.kill(w)
                self.free = []

    def _start(self) -> Any:
        self.started += 1
        return ray.remote(_Worker).options(**self.options).remote()

    async def stats(self) -> list[dict[str, Any]]:
        return [await w.stats.remote() for w in self.free] + [{"started": self.started}]

    def close(self) -> None:
        for w in self.free:
            ray.kill(w)
        self.free = []


class ActorPool:
    """A pool of ``size`` worker actors behind one manager.

    Args:
        size: Worker actors (steps running at once).
        num_cpus: CPUs reserved per worker (also its OMP/MKL thread count).
        num_gpus: GPUs per worker; fractions share one GPU between workers.
        memory_gb: Memory reserved per worker (None: no reservation).
        max_retries: Restarts of a dead worker and retries of its step.
        release_idle: Kill the workers whenever no step is queued or running (their CPUs go back
            to Ray); the next step starts a fresh worker.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        memory_gb: float | None = None,
        max_retries: int = 1,
        release_idle: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("an actor pool needs at least one actor")
        opts: dict[str, Any] = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "max_restarts": max_retries,
            "max_task_retries": max_retries,
            # long-lived workers spread over the nodes: load and node-local scratch are shared out
            "scheduling_strategy": "SPREAD",
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": threads_for(num_cpus)}},
        }
        if memory_gb:
            opts["memory"] = int(memory_gb * 2**30)
        manager = ray.remote(_Manager).options(num_cpus=0, max_concurrency=100_000)
        self.size = size
        self.manager = manager.remote(size, opts, release_idle)

    def submit(self, spec: StepSpec) -> ray.ObjectRef:
        """Queue one step; the ref resolves to its Outcome (or raises the step's error)."""
        return self.manager.run.remote(spec)

    def map(self, specs: list[StepSpec]) -> list[Outcome]:
        """Run many steps, returning Outcomes in input order (bad input re-raised as such)."""
        refs = [self.submit(s) for s in specs]
        out = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - restore the FprunError family
                raise unwrap(exc) from None
        return out

    def stats(self) -> list[dict[str, Any]]:
        """Per idle worker: pid, steps run, stale scratch folders removed, token sets cached."""
        return [s for s in ray.get(self.manager.stats.remote()) if "pid" in s]

    def close(self) -> None:
        """Kill the workers and the manager (their in-flight steps fail)."""
        try:
            ray.get(self.manager.close.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - the manager may be gone already
            pass
        ray.kill(self.manager)


ExtractPool = ActorPool  # the name HuRef's pool had before it served every kind
_POOLS: dict[tuple, ActorPool] = {}


def submit_step(spec: StepSpec) -> ray.ObjectRef:
    """Route an ``executor="actor"`` step to the shared pool for its resources (RayBackend hook).

    The pool for ``(num_cpus, num_gpus, memory_gb, max_retries)`` is created on first use and
    reused by later steps of the same session; see :func:`pool_size` for how many workers it
    gets. Its workers are released whenever it runs dry (a grid's cells come in waves).
    """
    res: Resources = spec.resources
    key = (res.num_cpus, res.num_gpus, res.memory_gb, res.max_retries)
    pool = _POOLS.get(key)
    if pool is None:
        pool = ActorPool(
            pool_size(res, ray.cluster_resources()),
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            memory_gb=res.memory_gb,
            max_retries=res.max_retries,
            release_idle=True,
        )
        _POOLS[key] = pool
        print(
            f"actor pool: {pool.size} actor(s) x {res.num_cpus:g} CPU, {res.num_gpus:g} GPU "
            f"(asked {res.num_workers}; one CPU of the cluster's "
            f"{ray.cluster_resources().get('CPU', 0):g} kept free)",
            file=sys.stderr,
            flush=True,
        )
    return pool.submit(spec)


def close_pools() -> None:
    """Kill every shared pool (call from the backend's ``close``)."""
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()
