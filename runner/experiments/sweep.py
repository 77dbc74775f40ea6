"""``kind: sweep``: a Ray Tune sweep over an experiment of any kind (``fprun sweep``).

A sweep YAML holds a base experiment (``experiment:``; IF_adapter, a mergeguard grid, ...), a
search space over its dotted keys (``search:``), the metric to optimise with ``constraints`` on
others, and Tune settings; each trial is the base with its values applied, planned by the base's
own kind (``runner/sweep/trial.py``, driven by ``runner/sweep/tuner.py``). Torch- and ray-free, so
``fprun validate`` checks every candidate value against the schema. IDs are config hashes:
``trial_id`` over the sweep name and the trial's step IDs (``1e-2`` and ``0.01`` are one trial),
``sweep_id`` over what decides the trials; it names ``ARTIFACTS/tune/<sweep_id>`` for restores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from runner.config import apply_overrides
from runner.experiments import get_kind
from runner.plan import PlanContext, canonical_json
from tasks.config import Strict, validate
from tasks.errors import ConfigError

RESULT_KINDS = ("sweep_trial", "train_run", "verification", "eval")
# Bump when what a trial computes or reports changes (it enters trial and sweep IDs).
TRIAL_VERSION = "1"
NEEDED_CONDITIONS = ("publish_w_adapter", "tuned_w_adapter")  # FSR_pre and FSR_post
# Metrics of IF_adapter trials (runner/sweep/metrics.py); a kind with its own ``sweep_metrics``
# (if_sft, mergeguard) lists its names in ``SWEEP_METRICS``.
METRICS = ("fsr_post", "fsr_pre", "utility_delta", "false_trigger_post", "false_trigger_pre")
UNSEARCHABLE = {"kind", "name"}


def kind_metrics(kind: str) -> tuple[str, ...]:
    """The metric names a trial of ``kind`` reports."""
    return tuple(getattr(get_kind(kind), "SWEEP_METRICS", METRICS))


class Constraint(Strict):
    """A condition the best trial must meet, e.g. ``{metric: fsr, min: 0.9}``."""

    metric: str = Field(description="a metric the trials report")
    min: float | None = Field(None, description="the metric must be >= min")
    max: float | None = Field(None, description="the metric must be <= max")

    def holds(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Dimension(Strict):
    """One search dimension: a dotted key of the experiment and exactly one sampler."""

    key: str = Field(
        description="dotted key of the experiment, e.g. adapter.dim or train.lr "
        "(list items by position: finetune.0.learning_rate)"
    )
    grid: list[Any] | None = Field(
        None, min_length=1, description="every value, crossed with the other grids"
    )
    choice: list[Any] | None = Field(None, min_length=1, description="one value drawn per sample")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], drawn per sample")
    loguniform: tuple[float, float] | None = Field(
        None, description="[low, high] > 0, drawn log-uniformly per sample"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [
            n for n in ("grid", "choice", "uniform", "loguniform") if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform")
        lo_hi = self.uniform or self.loguniform
        if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
            raise ValueError("a range needs low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    @property
    def sampler(self) -> str:
        """Which Tune sampler this dimension uses."""
        return next(
            n for n in ("grid", "choice", "uniform", "loguniform") if getattr(self, n) is not None
        )

    def candidates(self) -> list[Any]:
        """Values to check against the experiment schema (a range's two ends)."""
        return list(getattr(self, self.sampler))


class Scheduler(Strict):
    """Optional early stopping of trials between phases (Tune's ASHA).

    A trial reports once per phase (fingerprint, fine-tune, FSR_post), so ``training_iteration``
    counts phases. FSR_post exists only at the last phase; the scheduler therefore ranks on a
    metric every report carries, by default FSR_pre: a fingerprint that does not take is not worth
    attacking.
    """

    type: Literal["fifo", "asha"] = Field("fifo", description="fifo: run every trial to the end")
    metric: Literal["fsr_pre", "false_trigger_pre"] = Field(
        "fsr_pre", description="reported from the first phase on"
    )
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, le=3, description="phases before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class TrialResources(Strict):
    """What the Tune trial itself reserves; its Ray Train runs reserve their own workers.

    The trial process drives the Train runs and runs verification and utility evals in-process,
    so it needs CPUs (or a GPU) of its own. Under Train V2 the training workers get their own
    placement group, outside the trial's: on a 2-CPU machine one trial (1 CPU) plus one training
    worker (1 CPU) fill it, hence ``max_concurrent_trials: 1`` there.
    """

    cpus: float = Field(1.0, gt=0, description="CPUs reserved by each trial process")
    gpus: float = Field(0.0, ge=0, description="GPUs for the trial's in-process verification")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads of the in-process steps (default: cpus); the "
        "trial's Train runs are idle meanwhile, so with one trial at a "
        "time this may exceed cpus",
    )


class TuneSettings(Strict):
    """How Tune explores the space."""

    num_samples: int = Field(
        1, ge=1, description="samples of the random dimensions per grid point (Tune's num_samples)"
    )
    seed: int = Field(0, description="random state of Tune's search (reproducible samples)")
    max_concurrent_trials: int = Field(
        1, ge=1, description="trials running at once (the limiting resource / what one trial holds)"
    )
    scheduler: Scheduler = Scheduler()
    trial: TrialResources = TrialResources()


class Config(Strict):
    kind: Literal["sweep"]
    name: str = Field("sweep", description="sweep name (the sweep column; part of trial IDs)")
    experiment: Any = Field(description="the base experiment, any kind but sweep and suite")
    search: list[Dimension] = Field(
        min_length=1,
        description="dimensions, e.g. {key: adapter.dim, grid: [4, 8, 16, 32, 64]}"
        "; a list so --set search.0.grid=[4,8] can address one",
    )
    metric: str = Field(
        "fsr_post",
        description=f"metric the best trial optimises (if_adapter: {', '.join(METRICS)}; "
        "if_sft: fsr, false_trigger, utility_delta, fsr_post, n_keys, fp_seconds, "
        "verify_seconds, ...; mergeguard: fsr, false_trigger_rate, math_accuracy, ...)",
    )
    mode: Literal["max", "min"] = "max"
    constraints: list[Constraint] = Field(
        default_factory=list, description="conditions the best trial must meet (fsr >= 0.9)"
    )
    tune: TuneSettings = TuneSettings()
    config_dir: str | None = Field(
        None, exclude=True, description="set by fprun: where relative experiment paths start"
    )

    @field_validator("experiment", mode="before")
    @classmethod
    def _experiment(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        kind = value.get("kind") if isinstance(value, dict) else None
        if kind in (None, "sweep", "suite"):
            raise ConfigError(
                f"experiment: kind {kind!r} cannot be swept",
                "give the base experiment of one kind, e.g. kind: if_adapter or mergeguard",
            )
        module = get_kind(str(kind), source="experiment")
        wrapper = create_model("Sweep", __base__=Strict, experiment=(module.Config, ...))
        return validate(wrapper, {"experiment": value}, "sweep").experiment

    @model_validator(mode="after")
    def _checks(self) -> Config:
        keys = [d.key for d in self.search]
        if len(set(keys)) != len(keys):
            raise ConfigError(
                f"search repeats a key: {', '.join(keys)}", "give each experiment key one dimension"
            )
        for dim in self.search:
            key = dim.key
            if key.split(".")[0] in UNSEARCHABLE:
                raise ConfigError(
                    f"search key {key!r} cannot be swept",
                    "search keys of the experiment such as adapter.dim or train.lr",
                )
            for value in dim.candidates():
                trial_experiment(self, {key: value}, source=f"search.{key}={value!r}")
        names = kind_metrics(self.experiment.kind)
        for metric in [self.metric, *(c.metric for c in self.constraints)]:
            if metric not in names:
                raise ValueError(f"metric: must be one of {', '.join(names)} (got {metric!r})")
        if self.experiment.kind != "if_adapter":
            return self
        missing = [c for c in NEEDED_CONDITIONS if c not in self.experiment.verify.conditions]
        if missing:
            raise ConfigError(
                f"experiment.verify.conditions lacks {', '.join(missing)}, which "
                "FSR_pre/FSR_post are read from",
                "add them to the conditions",
            )
        random = any(d.sampler != "grid" for d in self.search)
        if self.tune.num_samples > 1 and not random:
            raise ConfigError(
                f"tune.num_samples {self.tune.num_samples} with grid-only search "
                "repeats identical (deterministic) trials",
                "set tune.num_samples: 1 or add a choice/uniform dimension",
            )
        return self


def trial_experiment(cfg: Config, params: dict[str, Any], source: str = "trial") -> Any:
    """The base experiment with a trial's values applied, validated by its kind's Config."""
    data = cfg.experiment.model_dump(mode="json")
    overrides = [f"{key}={json.dumps(value)}" for key, value in sorted(params.items())]
    try:
        merged = apply_overrides(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.problem}", exc.fix) from None
    module = get_kind(cfg.experiment.kind)
    return validate(module.Config, merged, f"sweep {cfg.name} {source}")


def plan_context(config_dir: str | None, results: str = "", artifacts: str = "") -> PlanContext:
    """Where a trial's relative experiment paths start (the sweep YAML's folder)."""
    return PlanContext(Path(config_dir or ".") / "sweep.yaml", results, artifacts)


def trial_plan(experiment: Any, ctx: PlanContext | None = None) -> list:
    """The trial's steps: exactly the base kind's plan (shared pieces, shared step IDs)."""
    return get_kind(experiment.kind).plan(experiment, ctx or plan_context(None))


def trial_id(cfg: Config, params: dict[str, Any]) -> str:
    """Stable trial ID: sweep name + the step IDs the trial computes + TRIAL_VERSION."""
    ctx = plan_context(cfg.config_dir)
    steps = sorted(s.step_id for s in trial_plan(trial_experiment(cfg, params), ctx))
    return _digest(["sweep_trial", cfg.name, steps, TRIAL_VERSION])


def trial_config_hash(cfg: Config, params: dict[str, Any]) -> str:
    """``config_hash`` of a trial's row: its whole experiment config, resources included."""
    exp = trial_experiment(cfg, params).model_dump(mode="json")
    return _digest(["sweep_trial", canonical_json(exp)])


def sweep_id(cfg: Config) -> str:
    """ID of the Tune experiment (names ``ARTIFACTS/tune/<sweep_id>``); execution knobs left out,
    so resuming with another concurrency or trial size resumes the same sweep."""
    data = cfg.model_dump(mode="json")
    data["tune"].pop("max_concurrent_trials")
    data["tune"].pop("trial")
    if not data["constraints"]:
        data.pop("constraints")  # sweeps from before constraints existed keep their ID
    return _digest(["sweep", canonical_json(data), TRIAL_VERSION])


def _digest(parts: list[Any]) -> str:
    """First 16 hex of sha256 over canonical JSON, like step IDs."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:16]


def load_sweep(path: Any, overrides: list[str]) -> Config:
    """Load a sweep YAML (a ConfigError when the file is another kind)."""
    from runner.config import load_experiment

    cfg = load_experiment(path, overrides)
    if cfg.kind != "sweep":
        raise ConfigError(
            f"{path} is a kind {cfg.kind!r} experiment, not a sweep",
            f"run it with: fprun run {path}",
        )
    return cfg.model_copy(update={"config_dir": str(Path(path).resolve().parent)})


def plan(cfg: Config, ctx) -> list:
    """A sweep is not a static plan: its trials are created by Tune while it runs."""
    raise ConfigError(
        f"kind sweep ({cfg.name}) runs under Ray Tune, not as a plan",
        "run it with: fprun sweep CONFIG",
    )


__all__ = [
    "Config",
    "Constraint",
    "plan_context",
    "RESULT_KINDS",
    "load_sweep",
    "plan",
    "sweep_id",
    "trial_config_hash",
    "trial_experiment",
    "trial_id",
    "trial_plan",
]
