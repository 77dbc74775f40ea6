"""``kind: if_sft``: fingerprint a model with IF_SFT, then verify the published and vanilla models.

Steps: one training step (``tasks.fingerprint.sft:fingerprint_if_sft``, run under Ray Train with
``train.num_workers`` workers), then one verification step per condition:

- ``publish``: the fingerprinted model queried with the fingerprint's probes (FSR_pre);
- ``vanilla``: the base model queried with the same probes (must not fire).

Torch-free: ``fprun validate`` and ``--dry-run`` import only this and pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, create_model, model_validator

from runner.config import Strict
from runner.plan import Resources, Step
from tasks.errors import ModelRefError
from tasks.fingerprint.config import DialogueData, TrainConfig
from tasks.verify_config import VerifyConfig

RESULT_KINDS = ("train_run", "verification")
FINGERPRINT_FN = "tasks.fingerprint.sft:fingerprint_if_sft"
VERIFY_FN = "tasks.verify:verify_step"
RESOURCE_FIELDS = {"num_workers", "use_gpu", "strategy", "cpus_per_worker"}


class TrainSection(TrainConfig):
    """Training hyperparameters plus how to run them (resources never enter the step ID)."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (data parallel)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    strategy: str = Field("ddp", description="ddp | deepspeed | deepspeed_zero2 | "
                                             "deepspeed_zero3[_offload] | deepspeed:<file.json>")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs (and torch threads) per worker")


# The per-condition verification options: VerifyConfig's own fields (one definition, so the two
# never drift), minus what the plan fills in per condition.
_PER_CONDITION = {"condition", "model", "model_step_id", "use_adapter"}
_VerifyFields = create_model(
    "_VerifyFields", __base__=Strict,
    **{name: (f.annotation, f) for name, f in VerifyConfig.model_fields.items()
       if name not in _PER_CONDITION},
)


class VerifySection(_VerifyFields):
    """Which conditions to verify, and how (fields of tasks.verify_config.VerifyConfig)."""

    conditions: list[Literal["publish", "vanilla"]] = Field(
        default_factory=lambda: ["publish", "vanilla"],
        description="publish: the fingerprinted model (FSR_pre); vanilla: the base model")
    num_cpus: float = Field(1.0, gt=0, description="CPUs (and torch threads) per verification")


class Config(Strict):
    kind: Literal["if_sft"]
    name: str = Field("if_sft", description="name shown in summaries")
    model: str = Field(description="base model: zoo name, local folder or hub id")
    prompt_format: Literal["chat_template", "seed_vicuna"] = Field(
        "chat_template", description="the model's chat template, or the seed's Vicuna text")
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    data: DialogueData = DialogueData()
    train: TrainSection = TrainSection()
    verify: VerifySection = VerifySection()

    @model_validator(mode="after")
    def _batch_divides(self) -> Config:
        self.train.grad_accum(self.train.num_workers)  # ConfigError if it does not divide
        return self


def check_model_ref(ref: str) -> None:
    """Cheap plan-time check: a path-like reference must exist (zoo and hub refs are checked
    when the step resolves them), so a typo fails before any step starts."""
    if Path(ref).expanduser().exists():
        return
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith("/"):
        raise ModelRefError(f"model path {ref} does not exist",
                            "pass a local folder, a zoo name (fprun ls models) or a hub id")


def fingerprint_step(cfg: Config) -> Step:
    """The IF_SFT training step; its config holds what determines the model, nothing else."""
    from runner.deepspeed_configs import resolve_strategy

    resolve_strategy(cfg.train.strategy)  # a misspelled strategy fails at plan time
    train = cfg.train.model_dump(exclude=RESOURCE_FIELDS)
    config = {"model": cfg.model, "data": cfg.data.model_dump(), "train": train,
              "prompt_format": cfg.prompt_format, "trust_remote_code": cfg.trust_remote_code}
    res = Resources(num_cpus=cfg.train.cpus_per_worker, num_workers=cfg.train.num_workers,
                    use_gpu=cfg.train.use_gpu, num_gpus=1.0 if cfg.train.use_gpu else 0.0,
                    strategy=cfg.train.strategy)
    return Step("if_sft", FINGERPRINT_FN, config, "train_run", executor="train",
                resources=res, label=cfg.name)


def verify_steps(cfg: Config, fp: Step) -> list[Step]:
    """One verification step per condition, wired to the fingerprint step."""
    common = cfg.verify.model_dump(exclude={"conditions", "num_cpus"})
    steps = []
    for condition in cfg.verify.conditions:
        if condition == "publish":
            vc = VerifyConfig(condition="publish", model_step_id=fp.step_id, **common)
            inputs = {"fingerprint": fp, "model": fp}
        else:
            vc = VerifyConfig(condition="vanilla", model=cfg.model, **common)
            inputs = {"fingerprint": fp}
        steps.append(Step("verify", VERIFY_FN, vc.model_dump(), "verification", inputs=inputs,
                          resources=Resources(num_cpus=cfg.verify.num_cpus),
                          label=f"{cfg.name}:{condition}"))
    return steps


def plan(cfg: Config, ctx) -> list[Step]:
    """Fingerprint step, then the verification steps."""
    check_model_ref(cfg.model)
    fp = fingerprint_step(cfg)
    return [fp, *verify_steps(cfg, fp)]


def summarize(cfg: Config, store, ctx) -> str:
    """Condition x probe set -> hits/total, FSR and its 95% CI, plus p-values where present."""
    steps = plan(cfg, ctx)
    lines = [f"IF_SFT {cfg.name} on {cfg.model}"]
    train = store.read("train_run", [steps[0].step_id]).to_pylist()
    for r in train:
        lines.append(f"  fingerprint {r['fingerprint_id']}: {r['steps']} steps, final loss "
                     f"{_num(r['final_loss'])}, {_num(r['train_seconds'])} s, peak RSS "
                     f"{_num(r['peak_rss_mb'])} MB ({r['dataset']})")
    rows = store.read("verification", [s.step_id for s in steps[1:]]).to_pylist()
    if not rows:
        return "\n".join(lines + ["  no verification rows yet"])
    lines.append(_table(rows))
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    header = ["condition", "probe_set", "hits/total", "FSR %", "95% CI", "p"]
    out = []
    order = {c: i for i, c in enumerate(("publish", "vanilla"))}
    sets = ("fingerprint", "unseen_keys", "similar", "normal", "regularization", "bos_samples")
    for r in sorted(rows, key=lambda r: (order.get(r["condition"], 9),
                                         sets.index(r["probe_set"]) if r["probe_set"] in sets
                                         else 99, r["sample_idx"] is not None)):
        if r["sample_idx"] is not None:
            continue  # individual sampled runs: the aggregate row below summarises them
        if r.get("n_samples"):
            hits = f"{r['n_samples']} runs"
            fsr = _pct(r.get("mean_fsr"))
        else:
            hits = f"{r['n_hit']}/{r['n_total']}"
            fsr = _pct(r["fsr"])
        ci = (f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
              if r.get("ci_low") is not None else "")
        out.append([r["condition"], r["probe_set"], hits, fsr, ci, _pvalues(r)])
    widths = [max(len(h), *(len(row[i]) for row in out)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join("  " + fmt.format(*row).rstrip() for row in [header, *out])


def _pvalues(r: dict) -> str:
    parts = []
    for key, name in (("p_ttest_one_sided", "t1"), ("p_ttest_two_sided", "t2"),
                      ("p_binomial", "binom")):
        if r.get(key) is not None:
            parts.append(f"{name}={r[key]:.2g}")
    return " ".join(parts)


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def _num(v) -> str:
    return "?" if v is None else f"{v:.4g}"


__all__ = ["Config", "RESULT_KINDS", "plan", "summarize"]
