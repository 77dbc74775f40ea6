"""Steps taken from another experiment's plan, shared by step ID (torch-free).

A kind that builds on another experiment's output (HuRef on the IF_SFT offspring, a merge grid
over a fingerprinted model) plans that experiment and takes the step it needs: the same config
gives the same step ID, so the step runs once whichever experiment asks first.
"""

from __future__ import annotations

from pathlib import Path

from runner.plan import Step
from tasks.errors import ConfigError


def upstream_step(path: str | Path, step_kind: str, ctx) -> Step:
    """The first ``step_kind`` step of the experiment at ``path`` (planned, not run, here)."""
    from runner.config import load_experiment
    from runner.experiments import get_kind

    path = Path(path)
    member = load_experiment(path)
    todo, seen = list(get_kind(member.kind).plan(member, ctx.for_member(path))), set()
    while todo:
        step = todo.pop(0)
        if step.kind == step_kind:
            return step
        if step.step_id not in seen:
            seen.add(step.step_id)
            todo.extend(step.inputs.values())
    raise ConfigError(f"{path} plans no {step_kind!r} step", "check from_config/step_kind")
