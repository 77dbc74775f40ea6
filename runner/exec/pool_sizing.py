"""How many actors a shared pool gets: a pure function, importable without Ray (unit tests)."""

from __future__ import annotations

from runner.plan import Resources


def pool_size(res: Resources, cluster: dict[str, float]) -> int:
    """``resources.num_workers`` actors, capped so one CPU's worth stays free.

    Actors hold their CPUs while they have work; the plan's ordinary tasks (deriving control
    models, the final compare) would otherwise wait behind a pool that took every CPU.
    """
    size = max(1, res.num_workers)
    if res.num_cpus > 0:
        size = min(size, max(1, int(cluster.get("CPU", 1) // res.num_cpus) - 1))
    if res.num_gpus > 0:
        size = min(size, max(1, int(cluster.get("GPU", 0) // res.num_gpus)))
    return size
