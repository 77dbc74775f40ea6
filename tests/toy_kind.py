"""A torch-free toy experiment kind used to test the planner, the store and the executors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.plan import Step
from tasks.config import Strict
from tasks.errors import DataError

CODE_VERSION = "1"
RESULT_KINDS = ("eval",)


class Inner(Strict):
    scale: float = Field(2.0, description="multiplier")


class Config(Strict):
    kind: Literal["toy"]
    values: list[float] = Field(min_length=1)
    inner: Inner = Inner()
    fail_on: float | None = None
    bad_input_on: float | None = None


def make(config: dict, *, inputs: dict[str, Path], out_dir: Path) -> list[dict]:
    """Write the value to the artifact folder; one eval row."""
    if config.get("fail_on") == config["value"]:
        raise RuntimeError("toy failure")
    if config.get("bad_input_on") == config["value"]:
        raise DataError("toy dataset is empty", "pass a non-empty dataset")
    (out_dir / "value.json").write_text(json.dumps(config["value"]))
    return [
        {
            "suite": "toy",
            "task": "make",
            "metric": "value",
            "value": config["value"],
            "dataset": "toy",
        }
    ]


def total(config: dict, *, inputs: dict[str, Path], out_dir: Path) -> list[dict]:
    """Sum the upstream values times the scale."""
    vals = [json.loads((p / "value.json").read_text()) for _, p in sorted(inputs.items())]
    return [
        {
            "suite": "toy",
            "task": "total",
            "metric": "sum",
            "value": config["scale"] * sum(vals),
            "n": len(vals),
        }
    ]


def plan(cfg: Config, ctx) -> list[Step]:
    makes = {
        f"v{i}": Step(
            "toy_make",
            "tests.toy_kind:make",
            {"value": v, "fail_on": cfg.fail_on, "bad_input_on": cfg.bad_input_on},
            "eval",
        )
        for i, v in enumerate(cfg.values)
    }
    return [
        Step("toy_total", "tests.toy_kind:total", {"scale": cfg.inner.scale}, "eval", inputs=makes)
    ]


def summarize(cfg: Config, store, ctx) -> str:
    t = store.read("eval")
    return f"{t.num_rows} eval rows"


def die_once(config: dict, *, inputs: dict[str, Path], out_dir: Path) -> list[dict]:
    """Leave node-local scratch behind and kill this process the first time (the marker file
    does not exist yet); the retry reports whether a restarted worker removed that scratch."""
    import os
    import signal

    from tasks.scratch import scratch_root

    marker = Path(config["marker"])
    if not marker.exists():
        stale = scratch_root() / f"toy.{os.getpid()}"
        stale.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(stale))
        os.kill(os.getpid(), signal.SIGKILL)
    stale_left = Path(marker.read_text()).exists()
    return [
        {"suite": "toy", "task": "die_once", "metric": "stale_left", "value": float(stale_left)}
    ]


def spans(config: dict, *, inputs: dict[str, Path], out_dir: Path) -> list[dict]:
    """Sleep, recording when this step ran (for in-flight bounds)."""
    import time

    t0 = time.time()
    time.sleep(config.get("sleep", 0.5))
    log = Path(config["log"])
    with log.open("a") as fh:
        fh.write(json.dumps([t0, time.time()]) + "\n")
    return [{"suite": "toy", "task": "spans", "metric": "value", "value": config["value"]}]
