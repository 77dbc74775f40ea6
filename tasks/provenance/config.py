"""Configs of the provenance steps (torch-free): one (owner, suspect) pair, and the scoring.

A pair step builds one suspect model, derived from the owner's published model (a weight
transformation, a user fine-tune, a merge) or independent of it (a pool model), and runs every
detector on it. The scoring step turns the pairs' scores into ROC AUC and TPR at fixed FPRs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tasks.config import Strict
from tasks.merge.config import HurefOptions, VerifyOptions
from tasks.verify.config import SamplingConfig

Family = Literal["none", "quantize", "prune", "noise", "permute_rotate", "finetune", "merge"]
DETECTORS = ("if_fsr", "if_sampled", "huref_ics", "huref_pcs")
DETECTOR_DOC = {
    "if_fsr": "IF key FSR, greedy (black-box, needs the keys)",
    "if_sampled": "-log10 p of the exact binomial test over sampled runs (black-box)",
    "huref_ics": "HuRef ICS to the owner's model (white-box)",
    "huref_pcs": "parameter cosine similarity to the owner's model (white-box, same arch only)",
}


class Suspect(Strict):
    """Which model the pair tests: how it was made from the owner's model, or why it is not."""

    relation: Literal["derived", "independent"]
    family: Family | Literal["independent"] = Field(description="transformation family")
    label: str = Field(description="name in rows")
    strength: float | None = Field(None, description="the family's knob (bits, sparsity, ...)")
    transform: dict[str, Any] | None = Field(
        None, description="tasks.provenance.transforms.TransformSpec of a weight transformation"
    )
    cell: dict[str, Any] | None = Field(None, description="canonical merge cell (family merge)")
    pool: dict[str, Any] | None = Field(None, description="pool member (tasks.provenance.pool)")
    seed: int | None = Field(None, description="the transformation's or pool member's seed")

    @model_validator(mode="after")
    def _one_source(self) -> Suspect:
        if (self.relation == "independent") != (self.family == "independent"):
            raise ValueError("relation independent goes with family independent, and only it")
        if self.family == "independent" and self.pool is None:
            raise ValueError("an independent suspect needs pool")
        if self.family == "merge" and self.cell is None:
            raise ValueError("a merge suspect needs cell")
        return self


class PairConfig(Strict):
    """The ``provenance_pair`` step: one suspect, every detector, one row."""

    owner: str = Field(description="owner name (rows)")
    owner_label: str = Field(description="the owner's published model (rows)")
    suspect: Suspect
    base: str | None = Field(None, description="merge family: the shared base model")
    huref: HurefOptions = HurefOptions()
    verify: VerifyOptions = VerifyOptions()  # type: ignore[valid-type]
    sampling: SamplingConfig = SamplingConfig(runs=4, probe_sets=["fingerprint", "unseen_keys"])
    device: str = Field("cpu", description="device of transformations and detectors")
    shard_mb: int = Field(1024, ge=1, description="merge family: mergekit shard size")
    scratch: str | None = Field(None, description="node-local scratch root (not in the key)")


class ScoreConfig(Strict):
    """The ``detector_score`` step over every pair of the experiment."""

    fprs: list[float] = Field(
        default_factory=lambda: [0.1, 0.01, 0.001],
        description="false-positive rates at which TPR is reported (calibrated on the pool)",
    )
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of each interval")
    seed: int = Field(0, description="bootstrap seed")
    survive_tpr: float = Field(
        0.5, gt=0, le=1, description="a detector survives a strength when its TPR reaches this"
    )

    @model_validator(mode="after")
    def _fprs(self) -> ScoreConfig:
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ValueError("fprs must be rates strictly between 0 and 1")
        return self


__all__ = ["DETECTORS", "DETECTOR_DOC", "PairConfig", "ScoreConfig", "Suspect"]
