"""Steps, their content-derived IDs, and plans (docs/architecture.md).

A :class:`Step` names a plain ``tasks`` function by ``"module:function"``, its JSON config and
its upstream steps. Its ``step_id`` hashes exactly what determines the output (kind, canonical
config, sorted input IDs, the function's ``CODE_VERSION``), never the clock: re-running a config
skips finished steps and a base shared by many experiments is built once. Resources are *not* part
of the ID: running a step on a cluster must give the same row keys as running it in-process.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError


@dataclass(frozen=True)
class PlanContext:
    """Paths of the current run, as an experiment's ``plan()`` and ``summarize()`` see them.

    ``config_path`` resolves relative paths inside a config.
    """

    config_path: Path
    results: str
    artifacts: str

    def for_member(self, path: Path) -> PlanContext:
        """The same run seen from a suite member's YAML."""
        return replace(self, config_path=Path(path))


@dataclass(frozen=True)
class Resources:
    """What one execution of a step asks the scheduler for (ignored by the local executor)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float | None = None
    num_workers: int = 1  # Ray Train workers, for executor="train"
    use_gpu: bool = False
    strategy: str = "ddp"  # ddp | deepspeed (see runner/exec/train.py)
    max_retries: int = 1
    checkpoint_every: int = 0  # Ray Train: checkpoint every N optimizer steps; a retry resumes
    placement: str = (
        "PACK"  # Ray Train workers' placement group strategy (STRICT_SPREAD: a node each)
    )


@dataclass(frozen=True)
class Estimate:
    """What a step is expected to cost, for ``--dry-run`` and budgets (never part of its ID).

    ``disk_gb`` is the peak disk the step needs while it runs (scratch included), ``kept_gb`` what
    its artifacts keep afterwards; ``how`` says how the figures were estimated.
    """

    seconds: float | None = None
    disk_gb: float | None = None
    kept_gb: float | None = None
    how: str = ""


@dataclass(eq=False)
class Step:
    """One unit of work: a task function applied to a config and upstream artifacts."""

    kind: str  # step kind: names ARTIFACTS/<kind>/<step_id>/
    fn: str  # "tasks.module:function"
    config: dict[str, Any]  # JSON-able; the function validates it with its own model
    result_kind: str  # result table the rows go to (runner/results/store.py SCHEMAS)
    inputs: dict[str, Step] = field(default_factory=dict)
    executor: str = "task"  # task | train
    resources: Resources = field(default_factory=Resources)
    label: str = ""
    estimate: Estimate | None = None

    @cached_property
    def config_hash(self) -> str:
        """Hash of the config alone (provenance column ``config_hash``)."""
        return _digest([self.kind, canonical_json(self.config)])

    @cached_property
    def step_id(self) -> str:
        """First 16 hex of sha256(kind, config, sorted input step_ids, CODE_VERSION)."""
        inputs = sorted(f"{name}={s.step_id}" for name, s in self.inputs.items())
        return _digest([self.kind, canonical_json(self.config), inputs, code_version(self.fn)])

    def describe(self) -> str:
        """One line for ``--dry-run`` and progress output."""
        label = f" {self.label}" if self.label else ""
        deps = ", ".join(f"{k}<-{v.step_id[:8]}" for k, v in sorted(self.inputs.items()))
        return f"{self.step_id}  {self.kind:<12}{label}" + (f"  [{deps}]" if deps else "")


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs hash equal whatever their YAML order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:16]


@cache
def code_version(fn: str) -> str:
    """Read ``CODE_VERSION`` from the task module's source without importing it.

    Parsing instead of importing keeps planning (and ``--dry-run``) free of torch imports. A module
    without the constant is a programming error, reported loudly.
    """
    module, _, func = fn.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not func:
        raise ConfigError(f"step function {fn!r} cannot be found", "use 'package.module:function'")
    tree = ast.parse(open(spec.origin, encoding="utf-8").read(), spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CODE_VERSION" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise RuntimeError(f"{spec.origin} defines no CODE_VERSION constant (needed for step IDs)")


def resolve_fn(fn: str):
    """Import and return the callable named by ``"module:function"``."""
    module, _, func = fn.partition(":")
    return getattr(importlib.import_module(module), func)


class Plan:
    """Steps in dependency order, deduplicated by step_id."""

    def __init__(self, steps: list[Step]):
        self.steps = _topo_dedupe(steps)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def dry_run_text(
        self,
        *,
        local: bool = False,
        done: Collection[str] = (),
        estimates: Mapping[str, Estimate] | None = None,
        executor: Callable[[Step], str] | None = None,
    ) -> str:
        """What ``--dry-run`` prints: a table of the unique steps in execution order (number,
        ID, kind, label, the rows it needs, executor, resources, whether ``--results`` already
        has it, estimated time and disk, and how they were estimated), then a total line.
        ``executor`` overrides the executor column (a sweep runs most steps inside its trials)."""
        from runner.results.text import render, short

        index = {s.step_id: i for i, s in enumerate(self.steps, 1)}
        rows, left, unknown, disk = [], 0.0, 0, 0.0
        for i, s in enumerate(self.steps, 1):
            est = (estimates or {}).get(s.step_id) or s.estimate or Estimate()
            needs = ",".join(sorted({str(index[d.step_id]) for d in s.inputs.values()}, key=int))
            is_done = s.step_id in done
            if not is_done:
                left += est.seconds or 0.0
                unknown += est.seconds is None
                # what stays: scratch (disk_gb) is freed when the step ends
                disk += est.kept_gb if est.kept_gb is not None else (est.disk_gb or 0.0)
            rows.append(
                [
                    str(i),
                    s.step_id,
                    s.kind,
                    short(s.label or "-", 36),
                    needs or "-",
                    executor(s) if executor else executor_text(s, local),
                    "-" if local else resources_text(s),
                    "yes" if is_done else "-",
                    _seconds_text(est.seconds),
                    _gb_text(est.disk_gb),
                    est.how or "-",
                ]
            )
        header = ["#", "step", "kind", "label", "needs", "executor", "resources", "done"]
        table = render([*header, "time", "disk", "how estimated"], rows, indent="")
        todo = len(self.steps) - sum(s.step_id in done for s in self.steps)
        total = f"{len(self.steps)} step(s), {len(self.steps) - todo} already in results"
        if todo:
            time_left = "time unknown" if unknown == todo else f"about {_seconds_text(left)}"
            total += f"; to run: {todo}, {time_left}, {_gb_text(disk)} of new artifacts"
            total += f" ({unknown} step(s) without a time estimate)" if 0 < unknown < todo else ""
        return f"{table}\n{total}"


def executor_text(step: Step, local: bool = False) -> str:
    """How a step runs: in-process, a Ray task, Ray Train with N workers, an actor pool."""
    if local:
        return "in-process"
    res = step.resources
    if step.executor == "train":
        extra = f", {res.strategy}" if res.strategy != "ddp" else ""
        return f"Ray Train x{res.num_workers}{extra}"
    if step.executor == "actor":
        return f"actor pool of {res.num_workers}"
    return "Ray task" if step.executor == "task" else step.executor


def resources_text(step: Step) -> str:
    """What one execution reserves: ``1 CPU``, ``2 x (1 CPU, 1 GPU)``, ``+ 8 GB`` memory."""
    res = step.resources
    parts = [f"{res.num_cpus:g} CPU"]
    if res.num_gpus or res.use_gpu:
        parts.append(f"{max(res.num_gpus, 1.0 if res.use_gpu else 0.0):g} GPU")
    if res.memory_gb:
        parts.append(f"{res.memory_gb:g} GB")
    text = ", ".join(parts)
    return f"{res.num_workers} x ({text})" if step.executor == "train" else text


def _gb_text(gb: float | None) -> str:
    if gb is None:
        return "-"
    return "<1 MB" if gb < 1e-3 else f"{gb * 1000:.0f} MB" if gb < 1 else f"{gb:.1f} GB"


def _seconds_text(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s} s" if s < 60 else f"{s // 60} min" if s < 3600 else f"{s / 3600:.1f} h"


def _topo_dedupe(steps: list[Step]) -> list[Step]:
    seen: dict[str, Step] = {}
    order: list[Step] = []

    def visit(step: Step, stack: tuple[str, ...]) -> None:
        sid = step.step_id
        if sid in seen:
            return
        if sid in stack:
            raise ConfigError("the experiment's steps form a cycle", "report this as a bug")
        for dep in step.inputs.values():
            visit(dep, (*stack, sid))
        seen[sid] = step
        order.append(step)

    for s in steps:
        visit(s, ())
    return order
