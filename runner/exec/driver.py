"""Running a plan: the driver loop shared by the local and the Ray executors.

The driver walks the plan in dependency order, skips steps whose result file exists, hands ready
steps to a *backend* (in-process, Ray task, Ray Train) as small picklable :class:`StepSpec` objects
(paths and JSON, never model objects), and writes each step's rows itself when it finishes. Only
the driver touches the result store, so a failed or killed worker can never leave a partial table.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runner.exec.progress import ProgressFile, RunProgress, clear_progress, read_progress
from runner.plan import Plan, Resources, Step, resolve_fn
from runner.results.records import Outcome, write_result
from runner.results.store import ResultStore, now
from tasks.errors import FprunError, StoreError

POLL_S = 1.0  # how often the driver reads the progress files of steps running on Ray


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
    the result file, not the folder, says whether a step is done. A step that fails on bad input
    leaves nothing behind: its folder (and the parents this call created) are removed. Without a
    ``progress`` hook, a function that takes one reports to a file the driver polls.
    """
    from tasks.progress import quiet_third_party

    quiet_third_party()
    out = Path(spec.out_dir)
    created = fresh_dir(out)
    fn = resolve_fn(spec.fn)
    if accepts(fn, "progress"):
        hooks.setdefault("progress", ProgressFile(out))
    else:
        hooks.pop("progress", None)
    started = now()
    try:
        rows = fn(
            spec.config, inputs={k: Path(v) for k, v in spec.inputs.items()}, out_dir=out, **hooks
        )
    except FprunError:
        remove_created(out, created)
        raise
    clear_progress(out)
    return Outcome(list(rows or []), started, now(), device_name())


def fresh_dir(out: Path) -> list[Path]:
    """Empty (or create) ``out``; return the folders this created, deepest first."""
    if out.exists():
        shutil.rmtree(out)
    created = [p for p in [out, *out.parents] if not p.exists()]
    out.mkdir(parents=True)
    return created


def remove_created(out: Path, created: list[Path]) -> None:
    """Undo :func:`fresh_dir` after bad input: ``out`` and the (now empty) parents it made."""
    shutil.rmtree(out, ignore_errors=True)
    for folder in created[1:]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: another step may have written beside it


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


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
    log: Callable[[str], None] | None = None,
    progress: RunProgress | None = None,
    max_in_flight: int | None = None,
) -> RunSummary:
    """Run every unfinished step of ``plan`` on ``backend``; the driver writes all results.

    ``progress`` shows the run (default: plain lines to ``log``, itself defaulting to stderr).
    Before the first step, the result and artifact roots are checked for writability, so an
    unusable ``--results`` fails before any work instead of after it.
    """
    display = progress or RunProgress(log)
    summary, status = RunSummary(), {}
    for step in plan:
        if store.done(step.result_kind, step.step_id):
            status[step.step_id] = "done"
            summary.skipped.append(step.step_id)
            display.skipped(step.describe())
    todo = [s for s in plan if s.step_id not in status]
    if todo:
        check_roots(store, artifacts_root)
    display.begin(expected_seconds(plan, todo, store, artifacts_root))
    if hasattr(backend, "on_progress"):
        backend.on_progress = display.report
    limit = (
        max_in_flight
        or getattr(backend, "max_in_flight", None)
        or int(os.environ.get("FPRUN_MAX_IN_FLIGHT", "0"))
        or len(todo)
        or 1
    )
    in_flight: dict[Any, tuple[Step, float]] = {}
    try:
        while todo or in_flight:
            launch_ready(todo, in_flight, status, summary, backend, artifacts_root, limit, display)
            if in_flight:
                handle, result = wait_one(backend, in_flight, artifacts_root, display)
                step, t0 = in_flight.pop(handle)
                clear_progress(artifact_dir(artifacts_root, step))
                finish_step(step, t0, result, store, status, summary, display)
    finally:
        display.close()
    return summary


def launch_ready(
    todo: list[Step],
    in_flight: dict[Any, tuple[Step, float]],
    status: dict[str, str],
    summary: RunSummary,
    backend: Backend,
    artifacts_root: str | Path,
    limit: int,
    display: RunProgress,
) -> None:
    """Block the steps whose inputs failed; submit those whose inputs are done (up to limit)."""
    for step in list(todo):
        deps = [d.step_id for d in step.inputs.values()]
        if any(status.get(d) in ("failed", "blocked") for d in deps):
            status[step.step_id] = "blocked"
            summary.blocked.append(step.step_id)
            todo.remove(step)
            display.blocked(step.step_id, step.describe())
        elif all(status.get(d) == "done" for d in deps) and len(in_flight) < limit:
            display.started_step(step.step_id, step.describe(), step.label or step.kind)
            in_flight[backend.submit(step_spec(step, artifacts_root))] = (step, time.time())
            todo.remove(step)


def wait_one(
    backend: Backend,
    in_flight: dict[Any, tuple[Step, float]],
    artifacts_root: str | Path,
    display: RunProgress,
) -> tuple[Any, Outcome | BaseException]:
    """The next finished step; meanwhile, the progress files of running Ray steps are polled."""
    if not accepts(backend.wait, "timeout"):
        return backend.wait(list(in_flight))
    while True:
        handle, result = backend.wait(list(in_flight), timeout=POLL_S)  # type: ignore[call-arg]
        if handle is not None:
            return handle, result
        for step, _ in in_flight.values():
            report = read_progress(artifact_dir(artifacts_root, step))
            if report is not None:
                display.report(step.step_id, *report)


def finish_step(
    step: Step,
    t0: float,
    result: Outcome | BaseException,
    store: ResultStore,
    status: dict[str, str],
    summary: RunSummary,
    display: RunProgress,
) -> None:
    """Write a finished step's rows, or record its failure; bad input stops the run at once."""
    if isinstance(result, FprunError):
        raise result  # bad input: the CLI prints it and exits 2
    if isinstance(result, BaseException):
        status[step.step_id] = "failed"
        summary.failed[step.step_id] = f"{type(result).__name__}: {result}"
        display.failed(step.step_id, step.describe(), f"{type(result).__name__}: {result}")
        return
    table = write_result(store, step, result)
    status[step.step_id] = "done"
    summary.done.append(step.step_id)
    display.finished(step.step_id, step.describe(), time.time() - t0, table.num_rows)


def expected_seconds(
    plan: Plan, todo: list[Step], store: ResultStore, artifacts_root: str | Path
) -> list[tuple[str, str, float | None]]:
    """(step_id, kind, estimated seconds) of the steps to run, for the run's ETA."""
    from runner.estimates import estimate_plan

    if not todo:
        return []
    est = estimate_plan(plan, store, str(artifacts_root))
    return [(s.step_id, s.kind, est[s.step_id].seconds) for s in todo]


def check_roots(store: ResultStore, artifacts_root: str | Path) -> None:
    """Refuse result/artifact roots that cannot be written, before any step runs."""
    from tasks.files import unwritable

    roots = [("--artifacts", str(artifacts_root))]
    if "://" not in store.root:
        roots.append(("--results", store.root))
    for flag, root in roots:
        if "://" in root:
            continue  # artifact_dir reports a URI with its own message
        problem = unwritable(root, folder=True)
        if problem:
            raise StoreError(f"cannot write {flag} {root}: {problem}", f"pass a writable {flag}")


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
        self.on_progress: Callable[[str, str, int, int | None], None] | None = None

    def submit(self, spec: StepSpec) -> int:
        self._n += 1
        report = self.on_progress
        hooks = {"progress": functools.partial(report, spec.step_id)} if report else {}
        try:
            self._done[self._n] = run_step_inline(spec, **hooks)
        except Exception as exc:  # noqa: BLE001 - reported per step by the driver
            self._done[self._n] = exc
        return self._n

    def wait(self, handles: list[int]) -> tuple[int, Outcome | BaseException]:
        h = handles[0]
        return h, self._done.pop(h)
