"""``kind: provenance``: every detector scored alike on derived and independent models.

Per owner (the IF_SFT/IF_adapter step of another experiment, shared by step ID): seeded weight
transformations of its published model (quantization, pruning, noise, permutation and rotation),
user fine-tunes of it, and merges with another expert (mergekit cells, as in ``mergeguard``) are
the derived suspects; the independent pool (Gemma-3, random-init models of the owner's and other
architectures, hub ids on a cluster) the rest. Each (owner, suspect) pair is one
``provenance_pair`` step on a pool of Ray actors: built in scratch, scored by every detector,
deleted. One ``detector_score`` step scores the detectors over all pairs. Torch-free.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from runner.experiments.merge_cells import CellStep, GridBlock, local_params, unique_cells
from runner.experiments.mergeguard import CellResources, Expert, MergeSettings, cell_resources
from runner.experiments.protocol import FinetuneEntry, check_model_ref, finetune_step
from runner.experiments.upstream import upstream_step
from runner.plan import Estimate, Step
from tasks.config import Strict
from tasks.huref.config import ExtractConfig
from tasks.merge.config import HurefOptions, VerifyOptions, cell_label, cell_summary
from tasks.provenance.config import PairConfig, ScoreConfig, Suspect
from tasks.provenance.pool import PoolEntry, expand
from tasks.verify.config import SamplingConfig

RESULT_KINDS = ("provenance_pair", "detector_score", "huref", "train_run")
PAIR_FN = "tasks.provenance.pair:provenance_pair_step"
SCORE_FN = "tasks.provenance.score_step:detector_score_step"
EXTRACT_FN = "tasks.huref.extract:extract_step"
KNOBS = ("bits", "group_size", "method", "sparsity", "scale")


class Owner(Strict):
    """A protected model: the fingerprint step of another experiment YAML."""

    name: str = Field(description="owner name (rows)")
    from_config: str = Field(description="experiment YAML (relative to this file)")
    step_kind: Literal["if_sft", "if_adapter"] = Field("if_sft", description="step to take")
    label: str | None = Field(None, description="the published model's name in rows")


class TransformBlock(Strict):
    """One family and lists of its knobs; every combination is a derived suspect."""

    family: Literal["none", "quantize", "prune", "noise", "permute_rotate"]
    bits: int | list[int] | None = Field(None, description="quantize: 8 and/or 4")
    group_size: int | list[int | None] | None = Field(
        None, description="quantize: group sizes (null: per channel)"
    )
    method: str | list[str] | None = Field(None, description="prune: magnitude and/or random")
    sparsity: float | list[float] | None = Field(None, description="prune: shares zeroed")
    scale: float | list[float] | None = Field(
        None, description="noise: std relative to each tensor's"
    )
    seeds: int | list[int] = Field(0, description="seeds of random transformations")

    @model_validator(mode="after")
    def _valid(self) -> TransformBlock:
        from tasks.provenance.transforms import TransformSpec

        for raw in self.specs():
            TransformSpec(**raw)  # a bad combination names this block's YAML key
        return self

    def specs(self) -> list[dict[str, Any]]:
        """Every TransformSpec (as a dict) of the block."""
        lists = [_list(getattr(self, k)) for k in KNOBS]
        out = []
        for values in product(*lists, _list(self.seeds)):
            spec = {"family": self.family, "seed": values[-1]}
            spec.update({k: v for k, v in zip(KNOBS, values[:-1], strict=True) if v is not None})
            out.append(spec)
        return out


def _list(x: Any) -> list:
    return list(x) if isinstance(x, list) else [x]


class MergeBlock(Strict):
    """Merges of the owner's model with another expert over the base."""

    expert: Expert
    grid: list[GridBlock] = Field(min_length=1)


class Derived(Strict):
    """How derived suspects are made."""

    transforms: list[TransformBlock] = Field(default_factory=list)
    finetunes: list[FinetuneEntry] = Field(default_factory=list, description="user fine-tunes")
    merges: MergeBlock | None = None


class Config(Strict):
    kind: Literal["provenance"]
    name: str = Field("provenance", description="experiment name")
    base: str = Field(description="the owners' base model (merges, the pool's architecture)")
    owners: list[Owner] = Field(min_length=1)
    derived: Derived
    independent: list[PoolEntry] = Field(min_length=1, description="the independent pool")
    hub_ids: list[str] = Field(
        default_factory=list, description="more independent models by hub id (a cluster's pool)"
    )
    huref: HurefOptions = HurefOptions()
    verify: VerifyOptions = VerifyOptions()  # type: ignore[valid-type]
    sampling: SamplingConfig = SamplingConfig(runs=4, probe_sets=["fingerprint", "unseen_keys"])
    scoring: ScoreConfig = ScoreConfig()
    merge: MergeSettings = MergeSettings()
    device: str = Field("cpu", description="device of transformations and detectors")
    params: float | None = Field(
        None,
        gt=0,
        description="parameters of the owner's model, for the disk estimate "
        "(default: read from a local base)",
    )
    resources: CellResources = CellResources()


def pair_estimate(cfg: Config) -> Estimate | None:
    """Scratch of one pair: the suspect at float32 (+ invariants); it keeps ~1 MB."""
    params = cfg.params or local_params(cfg.base)
    if params is None:
        return None
    inv = 3 * cfg.huref.n_layers * cfg.huref.k**2 * 4 / 1e9
    how = "disk: the suspect at float32 + invariants in scratch; deleted"
    return Estimate(disk_gb=params * 4 / 1e9 + inv, kept_gb=0.001, how=how)


def _extract(cfg: Config, label: str, model: Step) -> Step:
    ex = ExtractConfig(model=None, name=label, k=cfg.huref.k, n_layers=cfg.huref.n_layers)
    return Step(
        "huref_extract", EXTRACT_FN, ex.model_dump(), "huref", inputs={"model": model}, label=label
    )


def suspects(cfg: Config, owner: Owner, fp: Step) -> list[tuple[Suspect, dict[str, Step]]]:
    """(suspect, extra inputs) of one owner: transformations, fine-tunes, merges, the pool."""
    from tasks.provenance.transforms import TransformSpec, strength, transform_label

    out: list[tuple[Suspect, dict[str, Step]]] = []
    for block in cfg.derived.transforms:
        for raw in block.specs():
            spec = TransformSpec(**raw)
            label = transform_label(spec)
            out.append((Suspect(relation="derived", family=spec.family, label=label,
                                strength=strength(spec), transform=spec.model_dump(),
                                seed=spec.seed), {}))  # fmt: skip
    for entry in cfg.derived.finetunes:
        ft = finetune_step(entry, fp, owner.name)
        label = f"finetune {entry.data} {entry.max_steps or ''}".strip()
        steps = float(entry.max_steps) if entry.max_steps else None
        out.append((Suspect(relation="derived", family="finetune", label=label, strength=steps),
                    {"model": ft}))  # fmt: skip
    if cfg.derived.merges is not None:
        out += _merges(cfg, owner, cfg.derived.merges)
    pool = list(cfg.independent) + [PoolEntry(ref=h) for h in cfg.hub_ids]
    for item in expand(pool):
        out.append((Suspect(relation="independent", family="independent", label=item["label"],
                            pool=item, seed=item.get("seed")), {}))  # fmt: skip
    return out


def _merges(cfg: Config, owner: Owner, block: MergeBlock) -> list[tuple[Suspect, dict]]:
    from runner.experiments.mergeguard import Pair, expert_step

    pair = Pair(name=owner.name, fingerprinted={"from_config": owner.from_config},
                expert=block.expert, grid=block.grid)  # fmt: skip
    expert, _ = expert_step(cfg, pair)  # type: ignore[arg-type]
    inputs = {"expert": expert} if expert is not None else {}
    specs = [(s, False) for b in block.grid for s in b.specs()]
    out = []
    for cell, _ in unique_cells(specs, cfg.merge):
        share = cell_summary(cell)["weight_fingerprinted"]
        out.append((Suspect(relation="derived", family="merge", label=f"merge {cell_label(cell)}",
                            strength=share, cell=cell, seed=cell["seed"]), inputs))  # fmt: skip
    return out


def owner_steps(cfg: Config, owner: Owner, ctx) -> list[Step]:
    """The pair steps of one owner (their inputs bring the upstream steps along)."""
    fp = upstream_step(Path(ctx.config_path).parent / owner.from_config, owner.step_kind, ctx)
    label = owner.label or f"{owner.name}:{fp.kind}"
    base_inputs = {"fingerprint": fp, "inv_owner": _extract(cfg, label, fp)}
    actor = cfg.resources.actors > 0
    estimate = pair_estimate(cfg)
    steps = []
    for suspect, extra in suspects(cfg, owner, fp):
        pc = PairConfig(
            owner=owner.name,
            owner_label=label,
            suspect=suspect,
            base=cfg.base if suspect.family == "merge" else None,
            huref=cfg.huref,
            verify=cfg.verify,
            sampling=cfg.sampling,
            device=cfg.device,
            shard_mb=cfg.merge.shard_mb,
            scratch=cfg.resources.scratch,
        )
        steps.append(
            CellStep(
                "provenance_pair",
                PAIR_FN,
                pc.model_dump(mode="json"),
                "provenance_pair",
                inputs={**base_inputs, **extra},
                executor="actor" if actor else "task",
                resources=cell_resources(cfg.resources),
                label=f"{owner.name}:{suspect.label}",
                estimate=estimate,
            )
        )
    return steps


def plan(cfg: Config, ctx) -> list[Step]:
    """Every pair of every owner, then the scoring step over all of them."""
    check_model_ref(cfg.base)
    pairs = [s for owner in cfg.owners for s in owner_steps(cfg, owner, ctx)]
    score = Step(
        "detector_score",
        SCORE_FN,
        cfg.scoring.model_dump(mode="json"),
        "detector_score",
        inputs={f"p{i:04d}": s for i, s in enumerate(pairs)},
        label=f"{cfg.name}: {len(pairs)} pairs",
    )
    return [*pairs, score]


def summarize(cfg: Config, store, ctx) -> str:
    """The detector table (overall and per family) and which detector survives what."""
    from runner.experiments.reports.provenance import report

    return report(plan(cfg, ctx), store)


__all__ = ["Config", "RESULT_KINDS", "plan", "summarize"]
