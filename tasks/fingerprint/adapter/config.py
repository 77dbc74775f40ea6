"""Configs of the IF_adapter steps (torch-free: experiment plans build and hash them cheaply).

Defaults reproduce the seed's ``configs/adapter.yaml`` row for Llama-2-7B:
20 epochs, lr 1e-2, adapter dim 16, total batch 48, HF's default linear schedule and no weight
decay (``run_clm.py`` never sets one). The two deliberate departures from the seed are switchable
back (docs/seed_fixes.md): ``adapter.init: seed`` (A and B start at zero, so only B's bias ever
moves) and ``adapter.seed_token_set_bug: true`` (the FINGERPRINT input tokens left out of T).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config import Strict
from tasks.fingerprint.config import SimpleData, TrainConfig

# The verification conditions: the adapter ones wrap model parts with the F-Adapter
# (tasks.fingerprint.adapter.verify says which parts); the plain ones query a plain model.
ADAPTER_CONDITIONS = ("publish_w_adapter", "tuned_w_adapter", "tuned_direct", "vanilla_w_adapter")
PLAIN_CONDITIONS = ("publish", "vanilla", "tuned_publish")


class AdapterSettings(Strict):
    """The F-Adapter: its size, its initialisation and the token set T it acts on."""

    dim: int = Field(16, ge=1, description="inner dimension r of A: d->r and B: r->d (seed: 16)")
    init: Literal["lora", "seed"] = Field(
        "lora",
        description="lora: A random (kaiming-uniform, as nn.Linear and peft's LoRA), B "
        "zero, as the paper intends; seed: A and B all zero (only B's bias "
        "can move: docs/seed_fixes.md)",
    )
    residual: Literal["orig", "trainable"] = Field(
        "orig",
        description="the row the adapter's output is added to for tokens in T: orig "
        "(the seed's forward: the frozen original row) or trainable (the "
        "trained row, which the published embedding holds after the merge). "
        "Measured on SmolLM2: trainable lets the published model fire "
        "without the adapter (docs/seed_fixes.md)",
    )
    seed_token_set_bug: bool = Field(
        False,
        description="reproduce the seed's T: only the instructions' tokens (its union "
        "with the input tokens is discarded)",
    )
    init_seed: int = Field(0, description="torch seed of A's random init (init lora)")


class AdapterTrainConfig(TrainConfig):
    """The seed's adapter hyperparameters (``configs/adapter.yaml``, ``run_clm.py`` defaults)."""

    epochs: float = Field(20.0, gt=0, description="passes over the 60 rows (seed: 15-30)")
    lr: float = Field(1e-2, gt=0, description="peak learning rate (seed: 1e-2; GPT-J 1e-3)")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="run_clm's default 0 (with init seed, > 0 would decay the frozen-"
        "by-zero-gradient tensors and break the seed's property)",
    )
    lr_scheduler: str = Field("linear", description="run_clm's (HF Trainer's) default")
    total_batch_size: int = Field(48, ge=1, description="examples per optimizer step (seed: 48)")
    per_device_batch_size: int = Field(12, ge=1, description="examples per forward (seed: 12)")


class IFAdapterConfig(Strict):
    """Config of the IF_adapter fingerprint step
    (``tasks.fingerprint.adapter.train:fingerprint_if_adapter``)."""

    model: str = Field(description="base model: zoo name, local folder or hub id")
    data: SimpleData = SimpleData()
    train: AdapterTrainConfig = AdapterTrainConfig()
    adapter: AdapterSettings = AdapterSettings()
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    allow_pickle: bool = Field(False, description="accept a pickle checkpoint (converted once)")


class AdapterVerifyConfig(Strict):
    """One verification condition whose model is assembled with the private F-Adapter.

    ``verify`` holds a :class:`tasks.verify.config.VerifyConfig` as a dict (condition, probe
    sets, batch size ...); ``condition`` says which model parts are combined (see
    :mod:`tasks.fingerprint.adapter.verify`).
    """

    condition: Literal["publish_w_adapter", "tuned_w_adapter", "tuned_direct", "vanilla_w_adapter"]
    suspect: str | None = Field(
        None,
        description="suspect model ref when no step is wired in as inputs['suspect'] "
        "(vanilla_w_adapter: the base model); also its label on the rows",
    )
    verify: dict = Field(default_factory=dict, description="VerifyConfig fields")
    adapter: str | None = Field(
        None,
        description="adapter folder to use instead of the fingerprint's private/adapter/ "
        "(fprun verify --adapter)",
    )
    publisher: str | None = Field(
        None,
        description="publisher's model for tuned_w_adapter / vanilla_w_adapter (default: "
        "the fingerprint's published/; fprun verify --publisher)",
    )
