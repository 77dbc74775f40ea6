"""``kind: suite``: several experiment YAMLs run as one plan.

The demo is a suite: its members share steps by ID (a fingerprinted model used by two experiments is
built once), and each member's summary prints after the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tasks.config import Strict

RESULT_KINDS: tuple[str, ...] = ()


class Member(Strict):
    config: str = Field(description="experiment YAML, relative to the suite file")
    set: list[str] = Field(default_factory=list, description="--set overrides for this member")


class Config(Strict):
    kind: Literal["suite"]
    name: str = Field("suite", description="name shown in summaries")
    experiments: list[Member] = Field(min_length=1, description="member experiments, in order")


def members(cfg: Config, ctx) -> list[tuple[Path, object]]:
    """Load each member config (paths resolved against the suite file's folder)."""
    from runner.config import load_experiment

    base = Path(ctx.config_path).parent
    return [(base / m.config, load_experiment(base / m.config, m.set)) for m in cfg.experiments]


def plan(cfg: Config, ctx) -> list:
    from runner.experiments import get_kind

    steps = []
    for path, member in members(cfg, ctx):
        steps += get_kind(member.kind).plan(member, ctx.for_member(path))
    return steps


def summarize(cfg: Config, store, ctx) -> str:
    """Each member's summary, then one short table of the members' headline figures."""
    from runner.experiments import get_kind
    from runner.results.text import render

    parts, lines = [], []
    for path, member in members(cfg, ctx):
        mod = get_kind(member.kind)
        if hasattr(mod, "summarize"):
            parts.append(f"== {path.name}\n" + mod.summarize(member, store, ctx.for_member(path)))
        if hasattr(mod, "headline"):
            lines += [list(x) for x in mod.headline(member, store, ctx.for_member(path))]
    if lines:
        parts.append(f"== {cfg.name}: summary\n" + render(["what", "result", "note"], lines))
    return "\n\n".join(parts)
