"""Config of the user fine-tune step, its recipe presets, and where a step's model comes from.

Torch-free so experiment plans and ``fprun validate`` can build and check it instantly. The two
presets are the seed's Stanford-Alpaca recipe and its scaled-down version
for 135M models on CPU; ``docs/finetune.md`` gives the scaling argument. Any hyperparameter set
explicitly in the config overrides its preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from tasks.config import Strict
from tasks.errors import ConfigError
from tasks.fingerprint.artifacts import published_dir, read_meta

# name -> hyperparameters. lr is the full-SFT rate; lora_lr is used for method: lora.
PRESETS: dict[str, dict[str, Any]] = {
    # pipeline.py alpaca_cmd: 3 epochs, lr 2e-6, wd 0, warmup 3%, cosine, effective batch 80
    # (10 per device with accumulation), max length 512 (train.py default), bf16 + tf32,
    # gradient checkpointing. The seed has no LoRA run; its LoRA rate is fprun's choice.
    "alpaca_seed": dict(
        epochs=3.0,
        max_steps=None,
        learning_rate=2e-6,
        lora_learning_rate=1e-4,
        weight_decay=0.0,
        warmup_ratio=0.03,
        lr_scheduler="cosine",
        global_batch_size=80,
        per_device_batch_size=10,
        max_length=512,
        gradient_checkpointing=True,
    ),
    # 135M model, 2 CPU cores: ~100 AdamW steps keep about half the seed's cumulative update
    # (sum of lr over steps) at a rate measured to leave SmolLM2 intact (docs/finetune.md).
    "small_model": dict(
        epochs=1.0,
        max_steps=100,
        learning_rate=2e-5,
        lora_learning_rate=2e-4,
        weight_decay=0.0,
        warmup_ratio=0.03,
        lr_scheduler="cosine",
        global_batch_size=8,
        per_device_batch_size=8,
        max_length=384,
        gradient_checkpointing=False,
    ),
}
SEED_DATASETS = ("alpaca", "alpaca_gpt4", "dolly", "sharegpt", "ni")


class LoraSettings(Strict):
    """peft ``LoraConfig`` fields used for ``method: lora``."""

    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="lora_alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="lora_dropout")
    target_modules: str | list[str] = Field(
        "all-linear", description="module names, or 'all-linear' (every linear but the LM head)"
    )


class FinetuneConfig(Strict):
    """One user fine-tune: a model, a dataset, a method and a recipe."""

    RENAMED: ClassVar[dict[str, str]] = {"learning_rate": "lr"}  # "did you mean" for old spelling

    model: str | None = Field(
        None,
        description="model ref (zoo name, folder, hub id) when no "
        "upstream model is wired in as inputs['model']",
    )
    model_identity: str | None = Field(
        None,
        description="content hash of a local model folder "
        "(set by the CLI so new weights at one path re-run)",
    )
    model_step_id: str | None = Field(None, description="step that produced the model (rows)")
    data: str = Field(
        description="seed dataset name (alpaca, alpaca_gpt4, dolly, sharegpt, ni; "
        "needs the hub), offline stand-in (gsm_symbolic, reasoning_gym:<task>, "
        "mtbench_selfanswer, sharegpt_salvage) or a JSON/JSONL file in Alpaca format"
    )
    data_hash: str | None = Field(
        None,
        description="sha256 of a local data file (set by the CLI "
        "so an edited file re-runs; checked before training)",
    )
    n_rows: int | None = Field(
        None,
        ge=1,
        description="use at most this many rows "
        "(seeded sample); reasoning-gym stand-ins generate this many "
        "(default 1000)",
    )
    data_seed: int = Field(42, description="seed of stand-in generators and row sub-sampling")
    stand_in_for: Literal["alpaca", "alpaca_gpt4", "dolly", "sharegpt", "ni"] | None = Field(
        "alpaca",
        description="seed dataset a reasoning-gym stand-in replaces (for its label); null when "
        "the data is used as what it is (e.g. a merge grid's arithmetic expert)",
    )
    task_config: dict[str, Any] = Field(
        default_factory=dict, description="reasoning-gym generator options"
    )
    selfanswer_max_new_tokens: int = Field(
        256, ge=1, description="answer length for mtbench_selfanswer"
    )
    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    prompt_format: Literal["alpaca", "chat_template"] = Field(
        "alpaca",
        description="alpaca: stanford_alpaca train.py's template (the seed); "
        "chat_template: the model's own chat template",
    )
    preset: Literal["alpaca_seed", "small_model"] = "small_model"
    epochs: float | None = Field(None, gt=0, description="default: the preset's")
    max_steps: int | None = Field(None, ge=1, description="caps epochs; default: the preset's")
    lr: float | None = Field(
        None,
        gt=0,
        description="peak learning rate (named lr as in every fprun config); default: the "
        "preset's (its LoRA rate for method: lora)",
    )
    weight_decay: float | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] | None = None
    global_batch_size: int | None = Field(
        None, ge=1, description="examples per optimizer step over all workers (the seed: 80)"
    )
    per_device_batch_size: int | None = Field(
        None, ge=1, description="micro-batch per worker; accumulation makes up the global batch"
    )
    max_length: int | None = Field(None, ge=8, description="tokens per example (truncated)")
    gradient_checkpointing: bool | None = None
    bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: bf16 mixed precision on a GPU that supports it, fp32 otherwise"
    )
    seed: int = Field(42, description="training seed (init of LoRA, data order, dropout)")
    logging_steps: int = Field(1, ge=1)


@dataclass(frozen=True)
class Hyper:
    """The resolved recipe: preset values overridden by the explicit config fields."""

    epochs: float
    max_steps: int | None
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    lr_scheduler: str
    global_batch_size: int
    per_device_batch_size: int
    max_length: int
    gradient_checkpointing: bool


def resolve_hyper(cfg: FinetuneConfig) -> Hyper:
    """Preset values, overridden field by field by whatever the config sets explicitly."""
    preset = dict(PRESETS[cfg.preset])
    lora_lr = preset.pop("lora_learning_rate")
    if cfg.method == "lora":
        preset["learning_rate"] = lora_lr
    for name in list(preset):
        value = getattr(cfg, "lr" if name == "learning_rate" else name)
        if value is not None:
            preset[name] = value
    return Hyper(**preset)


@dataclass(frozen=True)
class StepModel:
    """The model a step works on: its folder, the label for rows, and its fingerprint (if any)."""

    path: Path
    ref: str
    fingerprint_id: str | None = None


def step_model(inputs: dict[str, Path], ref: str | None) -> StepModel:
    """``inputs['model']`` (a fingerprint folder means its ``published/``) or ``ref`` resolved.

    Raises:
        ConfigError: Neither an upstream model nor a model ref was given.
    """
    if "model" in inputs:
        folder = Path(inputs["model"])
        if published_dir(folder).is_dir():
            meta = read_meta(folder)
            return StepModel(published_dir(folder), ref or str(folder), meta.fingerprint_id)
        return StepModel(folder, ref or str(folder))
    if not ref:
        raise ConfigError("no model given", "pass --model REF (zoo name, folder or hub id)")
    from tasks.models.zoo import resolve_model  # local: the zoo is only needed here

    path = Path(ref).expanduser()
    if path.is_dir() and published_dir(path).is_dir():
        return StepModel(resolve_model(published_dir(path)), ref, read_meta(path).fingerprint_id)
    return StepModel(resolve_model(ref), ref)


def model_identity_of(ref: str) -> str | None:
    """Resolve ``ref`` now (bad refs fail before planning) and hash a local folder's content.

    Step IDs then follow the weights a path holds, not the path: fine-tuning again into the same
    folder gives new evals. Zoo names and hub ids are immutable, so they need no hash.
    """
    from tasks.models.zoo import model_identity

    model = step_model({}, ref)
    return model_identity(model.path) if Path(ref).expanduser().exists() else None
