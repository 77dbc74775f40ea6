"""Actor pools: HuRef extraction on long-lived Ray actors.

An actor keeps what is costly to rebuild between models (the imported numeric stack, the token
selection cache), so a family sharing a tokenizer selects its tokens once per actor. Each reserves
``num_cpus``/``num_gpus`` (fractions allowed) and runs one step at a time through
:func:`runner.exec.driver.run_step_inline`, so results equal the other executors'. Use
:class:`ExtractPool` standalone, or :func:`submit_step` from ``RayBackend`` for
``executor="actor"`` steps (one pool per session, sized by ``resources.num_workers``; the
ObjectRef resolves to an ``Outcome`` like a task's). :func:`close_pools` kills the actors.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from runner.exec.driver import StepSpec, run_step_inline
from runner.exec.ray_tasks import carried_errors, threads_for, unwrap
from runner.plan import Resources
from runner.results.records import Outcome


class _ExtractWorker:
    """One actor process; ``run`` executes a step, ``stats`` shows the cache it kept."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, spec: StepSpec) -> Outcome:
        with carried_errors():
            out = run_step_inline(spec)
        self.calls += 1
        return out

    def stats(self) -> dict[str, Any]:
        from tasks.huref import tokens

        return {"pid": os.getpid(), "calls": self.calls, "token_sets": tokens.memo_size()}


class ExtractPool:
    """A fixed set of extraction actors; steps go to the actor with the fewest in flight.

    Args:
        size: Number of actors.
        num_cpus: CPUs reserved per actor (also its OMP/MKL thread count).
        num_gpus: GPUs per actor; fractions share one GPU between actors.
        memory_gb: Memory reserved per actor (None: no reservation).
    """

    def __init__(
        self,
        size: int = 2,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        memory_gb: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("an actor pool needs at least one actor")
        opts: dict[str, Any] = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": threads_for(num_cpus)}},
        }
        if memory_gb:
            opts["memory"] = int(memory_gb * 2**30)
        cls = ray.remote(_ExtractWorker).options(**opts)
        self.actors = [cls.remote() for _ in range(size)]
        self._in_flight: list[list[ray.ObjectRef]] = [[] for _ in self.actors]

    def submit(self, spec: StepSpec) -> ray.ObjectRef:
        """Queue one step on the least busy actor; the ref resolves to its Outcome."""
        for refs in self._in_flight:
            if refs:
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for r in done:
                    refs.remove(r)
        idx = min(range(len(self.actors)), key=lambda i: len(self._in_flight[i]))
        ref = self.actors[idx].run.remote(spec)
        self._in_flight[idx].append(ref)
        return ref

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
        """Per actor: pid, steps run, token sets cached."""
        return ray.get([a.stats.remote() for a in self.actors])

    def close(self) -> None:
        """Kill the actors (their in-flight steps fail)."""
        for a in self.actors:
            ray.kill(a)
        self.actors, self._in_flight = [], []


_POOLS: dict[tuple, ExtractPool] = {}


def submit_step(spec: StepSpec) -> ray.ObjectRef:
    """Route an ``executor="actor"`` step to the shared pool for its resources (RayBackend hook).

    The pool for ``(num_cpus, num_gpus, memory_gb)`` is created on first use and reused by later
    steps of the same session; see :func:`pool_size` for how many actors it gets.
    """
    res: Resources = spec.resources
    key = (res.num_cpus, res.num_gpus, res.memory_gb)
    pool = _POOLS.get(key)
    if pool is None:
        pool = ExtractPool(
            pool_size(res, ray.cluster_resources()),
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            memory_gb=res.memory_gb,
        )
        _POOLS[key] = pool
    return pool.submit(spec)


def pool_size(res: Resources, cluster: dict[str, float]) -> int:
    """``resources.num_workers`` actors, capped so one CPU's worth stays free.

    Actors hold their CPUs for the whole session; the plan's ordinary tasks (deriving control
    models, the final compare) would otherwise wait forever behind a pool that took every CPU.
    """
    size = max(1, res.num_workers)
    if res.num_cpus > 0:
        size = min(size, max(1, int(cluster.get("CPU", 1) // res.num_cpus) - 1))
    if res.num_gpus > 0:
        size = min(size, max(1, int(cluster.get("GPU", 0) // res.num_gpus)))
    return size


def close_pools() -> None:
    """Kill every shared pool (call from the backend's ``close``)."""
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()
