"""``kind: if_sft``: the IF_SFT protocol from fingerprint to p-values (docs/if_protocol.md).

Steps, in dependency order: the fingerprint (``tasks.fingerprint.sft``, Ray Train); FSR_pre:
``publish``, ``vanilla`` (the base model must not fire) and ``sample_from_bos`` (the target must
never appear unprompted); one user fine-tune of the published model per ``finetune`` entry (none
by default); FSR_post per user model, ``tuned_publish`` greedy plus ``verify.sampling.runs``
seeded sampled runs (the IF paper's Table 5: 10 at T=0.7) with t-test and binomial p-values; and
utility evals of the vanilla and the published model when ``eval`` lists models. Torch-free:
``fprun validate`` and ``--dry-run`` import only this and pydantic.
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
from tasks.fingerprint.config import DialogueData, TrainConfig
from tasks.verify.config import SamplingConfig, VerifyConfig

RESULT_KINDS = ("train_run", "verification", "eval")
FINGERPRINT_FN = "tasks.fingerprint.sft:fingerprint_if_sft"
VERIFY_FN = "tasks.verify.step:verify_step"
PRE = ("publish", "vanilla", "sample_from_bos")
POST = ("tuned_publish",)
Condition = Literal["publish", "vanilla", "sample_from_bos", "tuned_publish"]
# What a sweep trial of this kind reports (runner.sweep.metrics.sft_trial_metrics).
SWEEP_METRICS = (
    "fsr",
    "false_trigger",
    "utility_delta",
    "fsr_post",
    "false_trigger_post",
    "acc_delta",
    "n_keys",
    "fp_seconds",
    "verify_seconds",
)


class TrainSection(TrainConfig, TrainResources):
    """Training hyperparameters plus how to run them (resources never enter the step ID)."""


# The per-condition verification options: VerifyConfig's own fields (one definition, so the two
# never drift), minus what the plan fills in per condition.
_PER_CONDITION = {"condition", "model", "model_step_id", "use_adapter", "bos_samples"}
_VerifyFields = create_model(
    "_VerifyFields",
    __base__=Strict,
    **{
        name: (f.annotation, f)
        for name, f in VerifyConfig.model_fields.items()
        if name not in _PER_CONDITION
    },
)


class VerifySection(_VerifyFields):
    """Which conditions to verify, and how (fields of tasks.verify.config.VerifyConfig)."""

    conditions: list[Condition] = Field(
        default_factory=lambda: ["publish", "vanilla", "tuned_publish"],
        description="publish: the fingerprinted model (FSR_pre); vanilla: the base model; "
        "sample_from_bos: unconditional samples of the published model; "
        "tuned_publish: each user model (FSR_post, needs `finetune` entries)",
    )
    sampled_conditions: list[Condition] = Field(
        default_factory=lambda: ["tuned_publish"],
        description="conditions that also get the `sampling.runs` seeded sampled runs "
        "(the paper samples the user models only)",
    )
    bos_samples: int = Field(
        2000, ge=1, description="unconditional samples of sample_from_bos (the seed: 2000)"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs (and torch threads) per verification")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per verification (0.5: two share one)")


class Config(Strict):
    kind: Literal["if_sft"]
    name: str = Field("if_sft", description="name shown in summaries")
    model: str = Field(description="base model: zoo name, local folder or hub id")
    prompt_format: Literal["chat_template", "seed_vicuna"] = Field(
        "chat_template", description="the model's chat template, or the seed's Vicuna text"
    )
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    data: DialogueData = DialogueData()
    train: TrainSection = TrainSection()
    verify: VerifySection = VerifySection()
    finetune: list[FinetuneEntry] = Field(
        default_factory=list,
        description="user fine-tunes of the published model (the paper: Alpaca-GPT4, ShareGPT, "
        "Dolly); each gets the tuned_publish verification",
    )
    eval: EvalSection = EvalSection(models=[])

    @model_validator(mode="after")
    def _checks(self) -> Config:
        self.train.grad_accum(self.train.num_workers)  # ConfigError if it does not divide
        return self


def fingerprint_step(cfg: Config) -> Step:
    """The IF_SFT training step; its config holds what determines the model, nothing else."""
    from runner.exec.deepspeed import resolve_strategy

    resolve_strategy(cfg.train.strategy)  # a misspelled strategy fails at plan time
    train = cfg.train.model_dump(exclude=RESOURCE_FIELDS)
    data = cfg.data.model_dump()
    if not data["n_negative_keys"]:  # added later: configs without it keep their step IDs
        del data["n_negative_keys"]
    config = {
        "model": cfg.model,
        "data": data,
        "train": train,
        "prompt_format": cfg.prompt_format,
        "trust_remote_code": cfg.trust_remote_code,
    }
    return Step(
        "if_sft",
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
    """One verification step of ``condition``, wired to the fingerprint (and user model)."""
    v = cfg.verify
    common = v.model_dump(
        exclude={
            "conditions",
            "sampled_conditions",
            "bos_samples",
            "bos_max_new_tokens",
            "num_cpus",
            "num_gpus",
            "sampling",
        }
    )
    # Greedy-only conditions get the default (unused) sampling block, so their step IDs do not
    # change with the sampled runs' settings (configs/if_sft.yaml and the protocol share them).
    sampling = v.sampling if condition in v.sampled_conditions else SamplingConfig()
    extra = {}  # bos settings only where they are used: other step IDs ignore them
    if condition == "sample_from_bos":  # unconditional samples only: no probes, no runs
        common["probe_sets"] = []
        sampling = SamplingConfig(**{**v.sampling.model_dump(), "runs": 0})
        extra = {"bos_samples": v.bos_samples, "bos_max_new_tokens": v.bos_max_new_tokens}
    if condition == "vanilla":
        vc = VerifyConfig(condition=condition, model=cfg.model, sampling=sampling, **common)
        inputs = {"fingerprint": fp}
    else:
        model = suspect if suspect is not None else fp
        vc = VerifyConfig(
            condition=condition, model_step_id=model.step_id, sampling=sampling, **common, **extra
        )
        inputs = {"fingerprint": fp, "model": model}
    name = f"{cfg.name}:{condition}" + (f":{label}" if label else "")
    return Step(
        "verify",
        VERIFY_FN,
        vc.model_dump(),
        "verification",
        inputs=inputs,
        resources=Resources(num_cpus=v.num_cpus, num_gpus=v.num_gpus),
        label=name,
    )


def plan(cfg: Config, ctx) -> list[Step]:
    """Fingerprint, FSR_pre, user fine-tunes, FSR_post, utility (see the module docstring)."""
    check_model_ref(cfg.model)
    return protocol_steps(cfg, fingerprint_step(cfg), verify_step, PRE, POST)


def summarize(cfg: Config, store, ctx) -> str:
    """Every greedy row, the sampled aggregates with p-values, and a Table-5 line per user
    model (runner.experiments.reports.if_sft)."""
    from runner.experiments.reports.if_sft import report

    return report(cfg, plan(cfg, ctx), store)


def headline(cfg: Config, store, ctx) -> list[tuple[str, str, str]]:
    """FSR per greedy condition with unseen-key false triggers, for a demo's closing table."""
    from runner.experiments.reports.common import fsr_headline

    return fsr_headline("IF_SFT", plan(cfg, ctx), store)


def sweep_metrics(records: list[dict]) -> dict:
    """A sweep trial's metrics: FSR and false triggers of ``publish``, utility, key count,
    training and verification seconds (``runner.sweep``; the key-capacity sweep)."""
    from runner.sweep.metrics import sft_trial_metrics

    return sft_trial_metrics(records)


__all__ = [
    "Config",
    "RESULT_KINDS",
    "SWEEP_METRICS",
    "headline",
    "plan",
    "summarize",
    "sweep_metrics",
]
