"""Running a plan: the driver loop shared by the local and the Ray executors.

The driver walks the plan in dependency order, skips steps whose result file exists, hands ready
steps to a *backend* (in-process, Ray task, Ray Train) as small picklable :class:`StepSpec` objects
(paths and JSON, never model objects), and writes each step's rows itself when it finishes. Only
the driver touches the result store, so a failed or killed worker can never leave a partial table.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner.plan import Plan, Resources, Step, resolve_fn
from runner.results.records import Outcome, write_result
from runner.results.store import ResultStore, now
from tasks.errors import FprunError, StoreError


@dataclass
class StepSpec:
    """Everything a worker needs to run one step; travels through Ray's object store."""

    step_id: str
    kind: str
    fn: str
    config: dict[str, Any]
    inputs: dict[str, str]
    out_dir: str
    executor: str = "task"
    resources: Resources = field(default_factory=Resources)
    label: str = ""


def artifact_dir(artifacts_root: str | Path, step: Step) -> Path:
    """``ARTIFACTS/<kind>/<step_id>/`` (the artifact layout, docs/architecture.md)."""
    root = str(artifacts_root)
    if "://" in root:
        raise StoreError(
            f"--artifacts {root} is a URI",
            "artifacts need a (shared) filesystem path; results may use a URI",
        )
    return Path(root).expanduser().resolve() / step.kind / step.step_id


def device_name() -> str:
    """'cuda:<gpu name>' when a GPU is visible to torch in this process, else 'cpu'."""
    import torch  # local: the driver may not need torch at all

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.machine()}"


def run_step_inline(spec: StepSpec, **hooks: Any) -> Outcome:
    """Run a step's task function in this process, in a freshly emptied artifact folder.

    A leftover folder belongs to a run that died before its results were written, so it is removed:
    the result file, not the folder, says whether a step is done.
    """
    out = Path(spec.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    fn = resolve_fn(spec.fn)
    started = now()
    rows = fn(
        spec.config, inputs={k: Path(v) for k, v in spec.inputs.items()}, out_dir=out, **hooks
    )
    return Outcome(list(rows or []), started, now(), device_name())


class Backend(Protocol):
    """How steps get executed: ``submit`` starts one, ``wait`` returns one finished."""

    def submit(self, spec: StepSpec) -> Any: ...

    def wait(self, handles: list[Any]) -> tuple[Any, Outcome | BaseException]: ...


@dataclass
class RunSummary:
    """Per-step status after a run: done, skipped (already in the store) or failed."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def execute_plan(
    plan: Plan,
    store: ResultStore,
    artifacts_root: str | Path,
    backend: Backend,
    *,
    log: Callable[[str], None] = print,
    max_in_flight: int | None = None,
) -> RunSummary:
    """Run every unfinished step of ``plan`` on ``backend``; the driver writes all results."""
    summary = RunSummary()
    status: dict[str, str] = {}
    for step in plan:
        if store.done(step.result_kind, step.step_id):
            status[step.step_id] = "done"
            summary.skipped.append(step.step_id)
            log(f"skip  {step.describe()}  (already in results)")
    todo = [s for s in plan if s.step_id not in status]
    in_flight: dict[Any, tuple[Step, float]] = {}
    limit = (
        max_in_flight
        or getattr(backend, "max_in_flight", None)
        or int(os.environ.get("FPRUN_MAX_IN_FLIGHT", "0"))
        or len(todo)
        or 1
    )
    while todo or in_flight:
        for step in list(todo):
            deps = [d.step_id for d in step.inputs.values()]
            if any(status.get(d) in ("failed", "blocked") for d in deps):
                status[step.step_id] = "blocked"
                summary.blocked.append(step.step_id)
                todo.remove(step)
                log(f"block {step.describe()}  (an input failed)")
            elif all(status.get(d) == "done" for d in deps) and len(in_flight) < limit:
                log(f"start {step.describe()}")
                in_flight[backend.submit(step_spec(step, artifacts_root))] = (step, time.time())
                todo.remove(step)
        if not in_flight:
            continue
        handle, result = backend.wait(list(in_flight))
        step, t0 = in_flight.pop(handle)
        if isinstance(result, FprunError):
            raise result  # bad input: stop at once, the CLI prints it and exits 2
        if isinstance(result, BaseException):
            status[step.step_id] = "failed"
            summary.failed[step.step_id] = f"{type(result).__name__}: {result}"
            log(f"FAIL  {step.describe()}  {type(result).__name__}: {result}")
            continue
        table = write_result(store, step, result)
        status[step.step_id] = "done"
        summary.done.append(step.step_id)
        log(f"done  {step.describe()}  {time.time() - t0:.1f}s, {table.num_rows} row(s)")
    return summary


def step_spec(step: Step, artifacts_root: str | Path) -> StepSpec:
    """The :class:`StepSpec` of ``step`` with its artifact folders under ``artifacts_root``."""
    inputs = {name: str(artifact_dir(artifacts_root, dep)) for name, dep in step.inputs.items()}
    return StepSpec(
        step_id=step.step_id,
        kind=step.kind,
        fn=step.fn,
        config=step.config,
        inputs=inputs,
        out_dir=str(artifact_dir(artifacts_root, step)),
        executor=step.executor,
        resources=step.resources,
        label=step.label,
    )


class LocalBackend:
    """The reference executor: runs each step in this process, one at a time."""

    max_in_flight = 1  # results of each step are written before the next one starts

    def __init__(self) -> None:
        self._done: dict[int, Outcome | BaseException] = {}
        self._n = 0

    def submit(self, spec: StepSpec) -> int:
        self._n += 1
        try:
            self._done[self._n] = run_step_inline(spec)
        except Exception as exc:  # noqa: BLE001 - reported per step by the driver
            self._done[self._n] = exc
        return self._n

    def wait(self, handles: list[int]) -> tuple[int, Outcome | BaseException]:
        h = handles[0]
        return h, self._done.pop(h)
