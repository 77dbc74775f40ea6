"""Plan pieces shared by the IF protocols (``if_sft`` and ``if_adapter``): the user fine-tune
entries, the utility evals before/after fingerprinting, resources of Ray Train steps, and the
plan-time model check.

One definition, so the two protocols cannot drift apart in how a user fine-tune or a utility
eval is configured or identified (a fine-tune of the same published model with the same config
is the same step in both). Torch-free.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, create_model

from runner.plan import Resources, Step
from tasks.config import Strict
from tasks.evals.config import EASY_ARITHMETIC, EvalConfig, MathOptions, MathTask, PerplexityOptions
from tasks.finetune.config import FinetuneConfig

FINETUNE_FN = "tasks.finetune.step:finetune_step"
EVAL_FN = "tasks.evals.step:eval_step"
RESOURCE_FIELDS = {
    "num_workers",
    "use_gpu",
    "strategy",
    "cpus_per_worker",
    "checkpoint_every",
    "placement",
}


def check_model_ref(ref: str) -> None:
    """Cheap plan-time check of a model reference (:func:`tasks.models.zoo.check_ref`): a
    missing path, an unusable folder or an unknown name fails before any step starts."""
    from tasks.models.zoo import check_ref  # local: keeps this module's imports to configs

    check_ref(ref)


def check_data_file(data: str) -> None:
    """Plan-time check of a fine-tune's local data file (missing, not UTF-8, bad rows); dataset
    names are checked when the step runs, since some need the hub."""
    if data.endswith((".json", ".jsonl")) or "/" in data:
        from tasks.data.user import read_alpaca_file

        read_alpaca_file(data)


class TrainResources(Strict):
    """How a Ray Train step runs (never part of its step ID)."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (data parallel)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    strategy: str = Field(
        "ddp",
        description="ddp | deepspeed | deepspeed_zero2 | "
        "deepspeed_zero3[_offload] | deepspeed:<file.json>",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs (and torch threads) per worker")
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="on Ray Train, save a checkpoint to the run's storage every N optimizer steps; "
        "a lost worker or a killed run resumes from the latest (0: none)",
    )
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="Ray Train workers' placement: PACK fills a node first, STRICT_SPREAD puts "
        "each worker on its own node",
    )


def train_resources(r: TrainResources) -> Resources:
    return Resources(
        num_cpus=r.cpus_per_worker,
        num_workers=r.num_workers,
        use_gpu=r.use_gpu,
        num_gpus=1.0 if r.use_gpu else 0.0,
        strategy=r.strategy,
        checkpoint_every=r.checkpoint_every,
        placement=r.placement,
    )


_PER_MODEL = {"model", "model_identity", "model_step_id"}
_FinetuneFields = create_model(
    "_FinetuneFields",
    __base__=Strict,
    **{n: (f.annotation, f) for n, f in FinetuneConfig.model_fields.items() if n not in _PER_MODEL},
)


class FinetuneEntry(_FinetuneFields, TrainResources):
    """One user fine-tune of the published model (fields of tasks.finetune.config)."""

    RENAMED: ClassVar[dict[str, str]] = FinetuneConfig.RENAMED


def finetune_step(entry: FinetuneEntry, fp: Step, name: str) -> Step:
    """A user fine-tune of the published model (the fingerprint folder's ``published/``)."""
    check_data_file(entry.data)
    ft = FinetuneConfig(model_step_id=fp.step_id, **entry.model_dump(exclude=RESOURCE_FIELDS))
    return Step(
        "finetune",
        FINETUNE_FN,
        ft.model_dump(mode="json", exclude_defaults=True),
        "train_run",
        inputs={"model": fp},
        executor="train",
        resources=train_resources(entry),
        label=f"{name}:finetune:{entry.data}",
    )


class EvalSection(Strict):
    """Utility before/after fingerprinting."""

    models: list[Literal["vanilla", "publish"]] = Field(
        default_factory=lambda: ["vanilla", "publish"], description="models evaluated"
    )
    suites: list[Literal["perplexity", "math"]] = Field(
        default_factory=lambda: ["perplexity", "math"]
    )
    perplexity: PerplexityOptions = PerplexityOptions()
    math: MathOptions = MathOptions(
        tasks=[MathTask(task="basic_arithmetic", n=200, task_config=EASY_ARITHMETIC)]
    )
    batch_size: int = Field(16, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per eval step")


def eval_steps(name: str, model: str, e: EvalSection, fp: Step) -> list[Step]:
    """Utility suites on the vanilla and the published model."""
    steps = []
    for which in e.models:
        for suite in e.suites:
            ec = EvalConfig(
                suite=suite,
                model=model if which == "vanilla" else None,
                model_step_id=fp.step_id if which == "publish" else None,
                perplexity=e.perplexity,
                math=e.math,
                batch_size=e.batch_size,
            )
            steps.append(
                Step(
                    "eval",
                    EVAL_FN,
                    ec.model_dump(mode="json", exclude_defaults=True),
                    "eval",
                    inputs={"model": fp} if which == "publish" else {},
                    resources=Resources(num_cpus=e.num_cpus, num_gpus=e.num_gpus),
                    label=f"{name}:{suite}:{which}",
                )
            )
    return steps


def protocol_steps(
    cfg, fp: Step, verify_step, pre: tuple[str, ...], post: tuple[str, ...]
) -> list[Step]:
    """The IF protocol's step order, shared by ``if_sft`` and ``if_adapter``: the fingerprint,
    its FSR_pre conditions, each user fine-tune followed by its FSR_post conditions, then the
    utility evals. ``verify_step(cfg, condition, fp, suspect=None, label="")`` is the kind's."""
    wanted = cfg.verify.conditions
    steps = [fp, *(verify_step(cfg, c, fp) for c in pre if c in wanted)]
    for entry in cfg.finetune:
        ft = finetune_step(entry, fp, cfg.name)
        steps += [ft, *(verify_step(cfg, c, fp, ft, entry.data) for c in post if c in wanted)]
    return steps + eval_steps(cfg.name, cfg.model, cfg.eval, fp)
