"""``kind: if_adapter``: the IF_adapter protocol end to end (docs/if_protocol.md); torch-free.

Steps, in dependency order: the fingerprint (``tasks.fingerprint.adapter.train``, Ray Train);
FSR_pre (``publish_w_adapter``, ``publish``, ``vanilla`` and fprun's ``vanilla_w_adapter``
control); one user fine-tune per ``finetune`` entry (``tasks.finetune.step``; offline stand-ins by
default); FSR_post per user model (``tuned_w_adapter``, ``tuned_publish``, ``tuned_direct``); and
utility (``tasks.evals.step``: perplexity and arithmetic accuracy of the vanilla and the published
model). Every verification row lands in one ``verification`` table with a ``condition`` column;
a user model's rows carry its fine-tune's step ID in ``model_step_id``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, model_validator

from runner.experiments.protocol import (
    RESOURCE_FIELDS,
    EvalSection,
    FinetuneEntry,
    TrainResources,
    check_model_ref,
    protocol_steps,
    train_resources,
)
from runner.plan import Resources, Step
from tasks.config import Strict
from tasks.fingerprint.adapter.config import (
    AdapterSettings,
    AdapterTrainConfig,
    AdapterVerifyConfig,
)
from tasks.fingerprint.config import SimpleData
from tasks.verify.config import VerifyConfig

RESULT_KINDS = ("train_run", "verification", "eval")
FINGERPRINT_FN = "tasks.fingerprint.adapter.train:fingerprint_if_adapter"
VERIFY_FN = "tasks.verify.step:verify_step"
ADAPTER_VERIFY_FN = "tasks.fingerprint.adapter.verify:verify_adapter_step"
PRE = ("vanilla", "publish", "publish_w_adapter", "vanilla_w_adapter")
POST = ("tuned_publish", "tuned_w_adapter", "tuned_direct")
Condition = Literal[
    "vanilla",
    "publish",
    "publish_w_adapter",
    "vanilla_w_adapter",
    "tuned_publish",
    "tuned_w_adapter",
    "tuned_direct",
]


class _Resources(TrainResources):
    strategy: str = Field(
        "ddp",
        description="ddp | deepspeed_zero2 | deepspeed:<file.json> (IF_adapter refuses ZeRO-3)",
    )


class TrainSection(AdapterTrainConfig, _Resources):
    """The adapter's hyperparameters plus how to run them (resources never enter step IDs)."""


_PER_CONDITION = {"condition", "model", "model_step_id", "use_adapter"}
_VerifyFields = create_model(
    "_VerifyFields",
    __base__=Strict,
    **{
        n: (f.annotation, f)
        for n, f in VerifyConfig.model_fields.items()
        if n not in _PER_CONDITION
    },
)


class VerifySection(_VerifyFields):
    """Which conditions to verify, and how (fields of tasks.verify.config.VerifyConfig)."""

    conditions: list[Condition] = Field(
        default_factory=lambda: [*PRE, *POST],
        description="FSR_pre: vanilla, publish, publish_w_adapter, vanilla_w_adapter; FSR_post "
        "(per user model): tuned_publish, tuned_w_adapter, tuned_direct",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs (and torch threads) per verification")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per verification (0.5: two share one)")


class Config(Strict):
    kind: Literal["if_adapter"]
    name: str = Field("if_adapter", description="name shown in summaries")
    model: str = Field(description="base model: zoo name, local folder or hub id")
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    data: SimpleData = SimpleData()
    adapter: AdapterSettings = AdapterSettings()
    train: TrainSection = TrainSection()
    verify: VerifySection = VerifySection()
    finetune: list[FinetuneEntry] = Field(
        default_factory=lambda: [FinetuneEntry(data="gsm_symbolic")],
        description="user fine-tunes of the published model (the paper: five datasets)",
    )
    eval: EvalSection = EvalSection()

    @model_validator(mode="after")
    def _checks(self) -> Config:
        self.train.grad_accum(self.train.num_workers)  # ConfigError if it does not divide
        if self.train.strategy.startswith("deepspeed_zero3"):
            from tasks.errors import ConfigError

            raise ConfigError(
                f"train.strategy {self.train.strategy}: IF_adapter does not run under ZeRO-3",
                "use ddp or deepspeed_zero2",
            )
        return self


def fingerprint_step(cfg: Config) -> Step:
    """The IF_adapter training step; its config holds what determines the artifacts."""
    from runner.exec.deepspeed import resolve_strategy

    resolve_strategy(cfg.train.strategy)  # a misspelled strategy fails at plan time
    config = {
        "model": cfg.model,
        "data": cfg.data.model_dump(),
        "train": cfg.train.model_dump(exclude=RESOURCE_FIELDS),
        "adapter": cfg.adapter.model_dump(),
        "trust_remote_code": cfg.trust_remote_code,
    }
    return Step(
        "if_adapter",
        FINGERPRINT_FN,
        config,
        "train_run",
        executor="train",
        resources=train_resources(cfg.train),
        label=cfg.name,
    )


def verify_step(
    cfg: Config, condition: str, fp: Step, suspect: Step | None = None, label: str = ""
) -> Step:
    """One verification step: plain conditions use verify_step, adapter ones the assembler."""
    common = cfg.verify.model_dump(exclude={"conditions", "num_cpus", "num_gpus"})
    res = Resources(num_cpus=cfg.verify.num_cpus, num_gpus=cfg.verify.num_gpus)
    name = f"{cfg.name}:{condition}" + (f":{label}" if label else "")
    sid = suspect.step_id if suspect is not None else None
    if condition in ("publish", "vanilla", "tuned_publish"):
        model = cfg.model if condition == "vanilla" else None
        vc = VerifyConfig(
            condition=condition,
            model=model,
            model_step_id=sid or (fp.step_id if condition == "publish" else None),
            **common,
        )
        inputs = {
            "fingerprint": fp,
            **({"model": fp} if condition == "publish" else {}),
            **({"model": suspect} if suspect is not None else {}),
        }
        return Step(
            "verify",
            VERIFY_FN,
            vc.model_dump(),
            "verification",
            inputs=inputs,
            resources=res,
            label=name,
        )
    vc = VerifyConfig(
        condition=condition, use_adapter=True, model_step_id=sid or fp.step_id, **common
    )
    ac = AdapterVerifyConfig(
        condition=condition,
        verify=vc.model_dump(),
        suspect=cfg.model if condition == "vanilla_w_adapter" else None,
    )
    inputs = {"fingerprint": fp, **({"suspect": suspect} if suspect is not None else {})}
    return Step(
        "verify_adapter",
        ADAPTER_VERIFY_FN,
        ac.model_dump(),
        "verification",
        inputs=inputs,
        resources=res,
        label=name,
    )


def plan(cfg: Config, ctx) -> list[Step]:
    """Fingerprint, FSR_pre, user fine-tunes, FSR_post, utility (see the module docstring)."""
    check_model_ref(cfg.model)
    return protocol_steps(cfg, fingerprint_step(cfg), verify_step, PRE, POST)


def summarize(cfg: Config, store, ctx) -> str:
    """Tables shaped like the paper's Tables 3 and 6, plus training and utility lines."""
    from runner.experiments.reports.if_adapter import report

    return report(cfg, plan(cfg, ctx), store)


def headline(cfg: Config, store, ctx) -> list[tuple[str, str, str]]:
    """FSR per greedy condition with unseen-key false triggers, for a demo's closing table."""
    from runner.experiments.reports.common import fsr_headline

    return fsr_headline("IF_adapter", plan(cfg, ctx), store)


__all__ = ["Config", "RESULT_KINDS", "headline", "plan", "summarize"]
