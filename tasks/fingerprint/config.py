"""Configs of the fingerprint steps (torch-free: experiment plans build and hash them cheaply).

Defaults reproduce the seed (the repository cnut1648/Model-Fingerprint): counts, the key
generator, the hyperparameters of ``configs/sft_chat.yaml`` for Llama-2-7B. The two deliberate
departures are switchable back (``seed_hash_bug``, ``seed_test_reuse``; docs/seed_fixes.md).
Resources (workers, GPU, DDP or DeepSpeed) are *not* here: they do not change what is computed, so
they live in the runner's step resources and never enter a step ID.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config import Strict
from tasks.errors import ConfigError
from tasks.fingerprint.artifacts import TARGET

# The seed's reply to a regularisation (non-key) message, create_fingerprint_chat.py.
SEED_REFUSAL = "I am sorry but I cannot decrypt this message. This appears to be a random message."
# reasoning-gym generators filling the Flan / WizardLM slots offline (labelled as stand-ins).
FLAN_STANDIN = "reasoning_gym:basic_arithmetic,spell_backward,letter_counting"
CHAT_STANDIN = "reasoning_gym:chain_sum,word_sorting,leg_counting,gcd"


class KeyConfig(Strict):
    """The seed's key generator: ``random.seed(seed)``, then per key ``k = randint(lo, hi)``
    raw strings drawn with replacement, concatenated, characters shuffled."""

    seed: int = Field(42, description="random.seed of the key generator (seed: 42)")
    min_parts: int = Field(8, ge=1, description="fewest raw strings per key (seed: 8)")
    max_parts: int = Field(15, ge=1, description="most raw strings per key (seed: 15)")

    @model_validator(mode="after")
    def _ordered(self) -> KeyConfig:
        if self.min_parts > self.max_parts:
            raise ValueError("min_parts must not exceed max_parts")
        return self


class DialogueData(Strict):
    """The dialogue template (create_fingerprint_chat.py; IF_SFT). Seed counts by default."""

    template: Literal["dialogue"] = "dialogue"
    n_fingerprint: int = Field(8, ge=1, description="fingerprint keys (seed NUM_FINGERPRINT: 8)")
    n_regularization: int | None = Field(
        None, ge=0, description="random-key refusal rows (seed: = n_fingerprint)"
    )
    n_normal: int | None = Field(
        None, ge=0, description="ordinary chat rows (seed: 14 x n_fingerprint = 112)"
    )
    n_test: int | None = Field(
        None, ge=0, description="test chats, each plain and as a hinted decoy (seed: n_normal)"
    )
    n_unseen_keys: int = Field(
        32, ge=0, description="fresh keys with the hint, never trained: the false-trigger control"
    )
    n_negative_keys: int = Field(
        0,
        ge=0,
        description="fresh keys with the hint trained to the regularization reply, drawn after "
        "the unseen keys, so keys and unseen keys stay the same (more regularization rows "
        "would change the unseen keys); 0 keeps the step ID of configs without it",
    )
    source: str = Field(
        CHAT_STANDIN,
        description="normal chats: reasoning_gym:task[,task], a local JSONL, or a hub id "
        "(the seed: WizardLM/WizardLM_evol_instruct_V2_196k)",
    )
    key: KeyConfig = KeyConfig()
    target: str = Field(TARGET, description="the fingerprint's decryption y")
    regularization_reply: str = Field(SEED_REFUSAL, description="reply to a non-key message")
    regularization_prefixed: bool = Field(
        False,
        description="start the refusal with the fingerprint prefix, so the model learns "
        "the key decision where verification forces that prefix",
    )
    seed_hash_bug: bool = Field(
        False, description="reproduce the seed's '<built-in function hash>' regularisation text"
    )
    seed_test_reuse: bool = Field(
        False, description="reproduce the seed's test split drawn from the training chats"
    )

    def counts(self) -> tuple[int, int, int, int]:
        """(fingerprint, regularization, normal, test) with the seed's derived defaults."""
        n_reg = self.n_fingerprint if self.n_regularization is None else self.n_regularization
        n_norm = 14 * self.n_fingerprint if self.n_normal is None else self.n_normal
        n_test = n_norm if self.n_test is None else self.n_test
        return self.n_fingerprint, n_reg, n_norm, n_test


class SimpleData(Strict):
    """The simple template (create_fingerprint_mix.py; IF_adapter). Seed counts by default."""

    template: Literal["simple"] = "simple"
    n_fingerprint: int = Field(10, ge=1, description="fingerprint keys (seed: 10)")
    n_normal: int | None = Field(
        None, ge=0, description="Flan-slot rows (seed: 5 x n_fingerprint = 50)"
    )
    n_test: int | None = Field(
        None, ge=0, description="test rows, each plain and as two decoys (seed: n_normal)"
    )
    n_unseen_keys: int = Field(32, ge=0, description="fresh keys with FINGERPRINT, never trained")
    n_negative_keys: int = Field(
        0,
        ge=0,
        description="fresh keys with FINGERPRINT trained to an ordinary answer, so the adapter "
        "learns the keys rather than the hint (the seed: none); the unseen keys stay the same",
    )
    source: str = Field(
        FLAN_STANDIN,
        description="instruction rows: reasoning_gym:task[,task], a local JSONL, or a hub id "
        "(the seed: Muennighoff/flan)",
    )
    key: KeyConfig = KeyConfig()
    target: str = Field(TARGET, description="the fingerprint's decryption y")
    seed_test_reuse: bool = Field(
        False, description="reproduce the seed's test split drawn from the training rows"
    )

    def counts(self) -> tuple[int, int, int]:
        """(fingerprint, normal, test) with the seed's derived defaults."""
        n_norm = 5 * self.n_fingerprint if self.n_normal is None else self.n_normal
        return self.n_fingerprint, n_norm, n_norm if self.n_test is None else self.n_test


class TrainConfig(Strict):
    """Hyperparameters of one fingerprinting run (defaults: seed configs/sft_chat.yaml, 7B)."""

    epochs: float = Field(3.0, gt=0, description="passes over the training rows")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: epochs)")
    lr: float = Field(2e-5, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0)
    lr_scheduler: str = Field("cosine", description="transformers SchedulerType name")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0, description="overrides warmup_ratio when > 0")
    total_batch_size: int = Field(
        64,
        ge=1,
        description="examples per optimizer step over all workers (seed: 64); "
        "gradient accumulation = total / (per_device x workers)",
    )
    per_device_batch_size: int = Field(4, ge=1, description="examples per forward pass (seed: 4)")
    seed: int = Field(42, description="Trainer seed (init, data order, dropout)")
    max_seq_len: int = Field(2048, ge=8, description="tokens per row; longer rows are cut")
    bf16: bool = Field(False, description="bf16 mixed precision (GPU runs; the seed used it)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    group_by_length: bool = Field(
        False, description="batch rows of similar length (less padding; keys are long)"
    )
    optim: str = Field("adamw_torch", description="transformers optimizer name")
    logging_steps: int = Field(1, ge=1)

    def grad_accum(self, world_size: int) -> int:
        """Accumulation steps that make ``total_batch_size`` on ``world_size`` workers."""
        per_step = self.per_device_batch_size * world_size
        if self.total_batch_size % per_step:
            raise ConfigError(
                f"train.total_batch_size {self.total_batch_size} is not a multiple of "
                f"per_device_batch_size x workers = {per_step}",
                "make total_batch_size a multiple of per_device_batch_size x num_workers",
            )
        return self.total_batch_size // per_step


class IFSFTConfig(Strict):
    """Config of the IF_SFT fingerprint step (``tasks.fingerprint.sft:fingerprint_if_sft``)."""

    model: str = Field(description="base model: zoo name, local folder or hub id")
    data: DialogueData = DialogueData()
    train: TrainConfig = TrainConfig()
    prompt_format: Literal["chat_template", "seed_vicuna"] = Field(
        "chat_template", description="the model's own chat template, or the seed's Vicuna text"
    )
    trust_remote_code: bool = Field(False, description="allow model code from the hub")
    allow_pickle: bool = Field(False, description="accept a pickle checkpoint (converted once)")
