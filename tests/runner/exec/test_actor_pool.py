"""The generic actor pool: any step kind, bounded in flight, a killed worker's step retried and
its row written once, stale scratch of dead workers removed (a local Ray instance)."""

from __future__ import annotations

import json

import pytest

from runner.exec.driver import StepSpec, execute_plan
from runner.plan import Plan, Resources, Step
from runner.results.store import ResultStore

pytestmark = pytest.mark.ray


def test_killed_actor_step_is_retried_and_written_once(ray_session, tmp_path):
    from runner.exec.ray_tasks import RayBackend

    res = Resources(num_cpus=1, num_workers=1, max_retries=1)
    steps = [
        Step(
            "toy_die",
            "tests.toy_kind:die_once",
            {"marker": str(tmp_path / "marker")},
            "eval",
            executor="actor",
            resources=res,
        )
    ]
    store = ResultStore(tmp_path / "r")
    backend = RayBackend(results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"))
    try:
        summary = execute_plan(Plan(steps), store, tmp_path / "a", backend, log=lambda _: None)
    finally:
        backend.close()
    assert summary.ok and summary.done == [steps[0].step_id]
    rows = store.read("eval").to_pylist()
    assert len(rows) == 1 and rows[0]["metric"] == "stale_left"
    assert rows[0]["value"] == 0.0  # the restarted worker removed the dead one's scratch
    assert (tmp_path / "marker").exists()  # the first attempt ran and died


def test_pool_bounds_steps_in_flight(ray_session, tmp_path):
    from runner.exec.actors import ActorPool

    log = tmp_path / "spans.jsonl"
    specs = [
        StepSpec(
            step_id=f"s{i}",
            kind="toy_spans",
            fn="tests.toy_kind:spans",
            config={"value": float(i), "log": str(log), "sleep": 0.3},
            inputs={},
            out_dir=str(tmp_path / f"o{i}"),
        )
        for i in range(4)
    ]
    pool = ActorPool(1, num_cpus=1)
    try:
        outs = pool.map(specs)
        stats = pool.stats()
    finally:
        pool.close()
    assert [o.rows[0]["value"] for o in outs] == [0.0, 1.0, 2.0, 3.0]
    spans = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # one at a time
    assert len(stats) == 1 and stats[0]["calls"] == 4
