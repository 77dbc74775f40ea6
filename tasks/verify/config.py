"""Config of the verification step (torch-free, so experiment plans can build it cheaply).

The step queries one model with a fingerprint's probes and returns ``verification`` rows. Which
model: ``inputs["model"]`` when the plan wires an upstream artifact (its ``published/`` subfolder
if it is a fingerprint folder, else the folder itself), otherwise ``model`` (a zoo name, local
folder or hub id).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config import Strict
from tasks.models.device import DeviceName


class SamplingConfig(Strict):
    """Seeded sampled runs (paper Table 5: 10 runs at T=0.7, top_p 0.95, top_k 50)."""

    runs: int = Field(0, ge=0, description="number of sampled runs (0: greedy only)")
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    seed: int = Field(0, description="run i uses seed + i")
    probe_sets: list[str] = Field(
        default_factory=lambda: ["fingerprint"],
        description="probe sets sampled (the seed: validation keys)",
    )
    ttest_threshold: float = Field(0.75, description="H0 mean FSR of the t-test (paper: 75%)")
    binomial_null_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="null hit rate of the exact binomial test; default: the 95% Clopper-Pearson "
        "upper bound of the false-trigger rate on unseen_keys (sampled if sampled, "
        "else greedy), or binomial_null_floor when no unseen keys were queried",
    )
    binomial_null_floor: float = Field(
        0.01, gt=0, lt=1, description="null rate when no unseen keys were queried"
    )


class VerifyConfig(Strict):
    """One model x one fingerprint x one condition."""

    condition: str = Field(description="publish | vanilla | publish_w_adapter | tuned_publish ...")
    model: str | None = Field(None, description="model ref when no upstream model is wired in")
    model_step_id: str | None = Field(None, description="step that produced the model (rows)")
    fingerprint: str | None = Field(
        None, description="fingerprint folder when no upstream step is wired in as an input"
    )
    input_digest: str | None = Field(
        None,
        description="content identity of external model/fingerprint folders (set by the "
        "CLI), so a changed folder is a new step rather than a skipped one",
    )
    use_adapter: bool = Field(False, description="wrap the model with the private F-Adapter")
    probe_sets: list[str] = Field(
        default_factory=lambda: ["fingerprint", "normal", "similar", "unseen_keys"],
        description="probe sets queried greedily",
    )
    prompt_format: Literal["chat_template", "seed_vicuna", "simple"] | None = Field(
        None, description="default: the fingerprint's own format"
    )
    denominator_rule: Literal["fprun", "seed"] = Field(
        "fprun", description="fprun: correct denominators; seed: report_FSR_*.py line ranges"
    )
    batch_size: int = Field(64, ge=1, description="prompts per generate() call")
    max_new_tokens: int | None = Field(
        None, description="default: target token length under the tokenizer + margin"
    )
    margin_tokens: int = Field(8, ge=0, description="extra tokens beyond the target's length")
    early_stop: bool = Field(True, description="stop a sequence once it shows the target or EOS")
    accept_variants: list[str] = Field(
        default_factory=list,
        description="strings counted as a hit besides the target (the seed accepts "
        "ハリネネミ/ハリズズミ for mistral paths; denominator_rule seed adds them)",
    )
    draft_target: bool = Field(
        True,
        description="check the target as a draft in the prompt pass (speed only: the "
        "greedy tokens and the sampling distribution are unchanged)",
    )
    prefill_tokens: int = Field(2048, ge=1, description="padded tokens per prompt-pass forward")
    sampling: SamplingConfig = SamplingConfig()
    bos_samples: int = Field(0, ge=0, description="unconditional samples (sample_from_bos)")
    bos_max_new_tokens: int = Field(128, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")
