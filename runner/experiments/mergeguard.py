"""``kind: mergeguard``: does a fingerprint survive model merging? A seeded merge-and-verify grid.

Per pair over a shared base: the fingerprinted model is the IF_SFT/IF_adapter step of another
experiment (``from_config``, shared by step ID), the other expert a ``finetune`` step of the base
or a model reference. Steps: the parents' HuRef invariants, a baseline ``merge_cell`` row per
parent, and one ``merge_cell`` step per canonical cell from templates (``configs/merges/``) and
generator blocks, on a pool of Ray actors (``resources.actors``; 0: Ray tasks). The disk a grid
needs is checked against ``disk.budget_gb`` and the free space before anything runs (exit 2).
Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from runner.experiments.merge_cells import (
    CellStep,
    DiskSettings,
    GridBlock,
    cell_estimate,
    disk_budget,
    sizing,
    template_specs,
    unique_cells,
)
from runner.experiments.protocol import (
    FINETUNE_FN,
    RESOURCE_FIELDS,
    FinetuneEntry,
    check_model_ref,
    train_resources,
)
from runner.experiments.upstream import upstream_step
from runner.plan import Resources, Step
from tasks.config import Strict
from tasks.evals.config import MathTask, RefusalOptions
from tasks.finetune.config import FinetuneConfig
from tasks.huref.config import ExtractConfig
from tasks.merge.config import CellConfig, CellSpec, Dtype, HurefOptions, VerifyOptions, cell_label

RESULT_KINDS = ("merge_cell", "huref", "train_run", "verification", "eval")
CELL_FN = "tasks.merge.cell:merge_cell_step"
EXTRACT_FN = "tasks.huref.extract:extract_step"
ROLES = ("fingerprinted", "expert", "base")
# What a sweep trial of this kind reports (means over its merged cells; sweep_metrics below).
SWEEP_METRICS = ("fsr", "false_trigger_rate", "math_accuracy", "refusal_rate", "ics_a", "ics_b")


class Fingerprinted(Strict):
    """The protected model: the fingerprint step of another experiment YAML."""

    from_config: str = Field(description="experiment YAML (relative to this file)")
    step_kind: Literal["if_sft", "if_adapter"] = Field("if_sft", description="step to take")
    label: str | None = Field(None, description="name in rows (default: the step kind)")


class Expert(Strict):
    """The other expert: a model reference, or a fine-tune of the base."""

    ref: str | None = Field(None, description="zoo name, local folder or hub id")
    finetune: FinetuneEntry | None = Field(
        None, description="fine-tune the base (fields of fprun finetune)"
    )
    label: str | None = Field(None, description="name in rows")

    @model_validator(mode="after")
    def _one(self) -> Expert:
        if (self.ref is None) == (self.finetune is None):
            raise ValueError("give exactly one of ref and finetune")
        return self


class Pair(Strict):
    """Two experts over the base, and the cells merging them."""

    name: str = Field(description="pair name (rows, labels)")
    fingerprinted: Fingerprinted
    expert: Expert
    templates: list[str] = Field(
        default_factory=list, description="mergekit templates (relative to this file)"
    )
    grid: list[GridBlock] = Field(default_factory=list, description="generated cells")
    baselines: bool = Field(True, description="a baseline row per parent")


class MergeSettings(Strict):
    """How every cell merges (part of each cell's key)."""

    device: str = Field("cpu", description="mergekit's math device (CUDA draws other masks)")
    dtype: Dtype = Field("float32", description="merge dtype (MergeGuard: float32)")
    out_dtype: Dtype | None = Field(None, description="dtype written (default: dtype)")
    shard_mb: int = Field(1024, ge=1, description="output shard size: bounds the merge's RAM")


class CellResources(Strict):
    """Where cells run (never part of a step ID)."""

    actors: int = Field(1, ge=0, description="0: Ray tasks; N: a pool of N actors")
    num_cpus: float = Field(1.0, gt=0, description="CPUs (and torch threads) per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor")
    memory_gb: float | None = Field(None, gt=0, description="memory reserved per actor")
    actors_per_node: int | None = Field(
        None, ge=1, description="actors sharing one node's scratch disk (default: all of them)"
    )
    max_retries: int = Field(1, ge=0, description="retries of a cell whose actor died")
    scratch: str | None = Field(
        None, description="node-local scratch root (default: $FPRUN_SCRATCH or <tmp>)"
    )


class Config(Strict):
    kind: Literal["mergeguard"]
    name: str = Field("mergeguard", description="experiment name")
    base: str = Field(description="the shared base model: zoo name, local folder or hub id")
    pairs: list[Pair] = Field(min_length=1, description="model pairs and their cells")
    merge: MergeSettings = MergeSettings()
    keep: bool = Field(False, description="keep every merged model (not part of cell keys)")
    huref: HurefOptions = HurefOptions()
    verify: VerifyOptions = VerifyOptions()  # type: ignore[valid-type]
    refusal: RefusalOptions | None = RefusalOptions(n=60, max_new_tokens=32)
    math: MathTask | None = MathTask(n=100, max_new_tokens=32)
    eval_batch_size: int = Field(16, ge=1)
    resources: CellResources = CellResources()
    disk: DiskSettings = DiskSettings()

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [p.name for p in self.pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"pair names repeat: {names}")
        return self


def cell_resources(r: CellResources) -> Resources:
    return Resources(
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        memory_gb=r.memory_gb,
        num_workers=max(1, r.actors),
        max_retries=r.max_retries,
    )


def _extract(cfg: Config, label: str, model: Step | None, ref: str | None) -> Step:
    ex = ExtractConfig(model=ref, name=label, k=cfg.huref.k, n_layers=cfg.huref.n_layers)
    return Step(
        "huref_extract",
        EXTRACT_FN,
        ex.model_dump(),
        "huref",
        inputs={"model": model} if model is not None else {},
        label=label,
    )


def expert_step(cfg: Config, pair: Pair) -> tuple[Step | None, str]:
    e = pair.expert
    if e.finetune is None:
        check_model_ref(str(e.ref))
        return None, e.label or str(e.ref)
    ft = FinetuneConfig(model=cfg.base, **e.finetune.model_dump(exclude=RESOURCE_FIELDS))
    step = Step(
        "finetune",
        FINETUNE_FN,
        ft.model_dump(mode="json", exclude_defaults=True),
        "train_run",
        executor="train",
        resources=train_resources(e.finetune),
        label=f"{pair.name}:expert:{e.finetune.data}",
    )
    return step, e.label or f"{cfg.base} + {e.finetune.data}"


def pair_steps(cfg: Config, pair: Pair, ctx, inv_base: Step) -> list[Step]:
    """A pair's baseline and cell steps (their inputs bring the upstream steps along)."""
    fp = upstream_step(
        Path(ctx.config_path).parent / pair.fingerprinted.from_config,
        pair.fingerprinted.step_kind,
        ctx,
    )
    expert, expert_label = expert_step(cfg, pair)
    labels = {
        "fingerprinted": pair.fingerprinted.label or f"{pair.name}:{fp.kind}",
        "expert": expert_label,
        "base": cfg.base,
    }
    inputs = {
        "fingerprint": fp,
        "inv_base": inv_base,
        "inv_fingerprinted": _extract(cfg, labels["fingerprinted"], fp, None),
        "inv_expert": _extract(cfg, expert_label, expert, None if expert else pair.expert.ref),
        **({"expert": expert} if expert is not None else {}),
    }
    common = CellConfig(
        base=cfg.base,
        expert=None if expert else pair.expert.ref,
        pair=pair.name,
        labels=labels,
        huref=cfg.huref,
        verify=cfg.verify,
        refusal=cfg.refusal,
        math=cfg.math,
        eval_batch_size=cfg.eval_batch_size,
        shard_mb=cfg.merge.shard_mb,
        scratch=cfg.resources.scratch,
    ).model_dump(mode="json", exclude={"keep", "cell", "parent"})
    size = sizing(cfg, untied=fp.kind == "if_adapter")
    actor = cfg.resources.actors > 0

    def step(extra: dict[str, Any], label: str, keep: bool) -> Step:
        return CellStep(
            "merge_cell",
            CELL_FN,
            {**common, **extra, "keep": keep},
            "merge_cell",
            inputs=inputs,
            executor="actor" if actor else "task",
            resources=cell_resources(cfg.resources),
            label=f"{pair.name}:{label}",
            estimate=cell_estimate(size, keep and "cell" in extra),
        )

    steps = [step({"parent": r}, f"baseline {r}", False) for r in ROLES if pair.baselines]
    specs: list[tuple[CellSpec, bool]] = [
        (s, cfg.keep) for s, _ in template_specs(pair.templates, ctx)
    ]
    specs += [(s, cfg.keep or b.keep) for b in pair.grid for s in b.specs()]
    for cell, keep in unique_cells(specs, cfg.merge):
        steps.append(step({"cell": cell}, cell_label(cell), keep))
    return steps


def plan(cfg: Config, ctx) -> list[Step]:
    """Upstream steps, each parent's baseline, every cell; refused when over the disk budget."""
    check_model_ref(cfg.base)
    inv_base = _extract(cfg, cfg.base, None, cfg.base)
    steps = [s for pair in cfg.pairs for s in pair_steps(cfg, pair, ctx, inv_base)]
    untied = any(p.fingerprinted.step_kind == "if_adapter" for p in cfg.pairs)
    disk_budget(cfg, steps, ctx, sizing(cfg, untied=untied))
    return steps


def dry_run_notes(cfg: Config, ctx) -> str:
    """The disk estimate and the actor layout, for ``--dry-run`` beside the plan table."""
    steps = plan(cfg, ctx)
    untied = any(p.fingerprinted.step_kind == "if_adapter" for p in cfg.pairs)
    d = disk_budget(cfg, steps, ctx, sizing(cfg, untied=untied))
    r = cfg.resources
    cells = sum(1 for s in steps if s.kind == "merge_cell")
    per = f"{r.num_cpus:g} CPU" + (f", {r.num_gpus:g} GPU" if r.num_gpus else "")
    per += f", {r.memory_gb:g} GB" if r.memory_gb else ""
    where = f"a pool of {r.actors} actor(s) x ({per})" if r.actors else f"Ray tasks of ({per})"
    budget = f"{cfg.disk.budget_gb:g} GB" if cfg.disk.budget_gb else "none"
    return "\n".join(
        [
            f"{cfg.name}: {cells} merge_cell step(s) on {where}; {int(d['actors'])} actor(s) per "
            f"node, each with one cell's merged model in node-local scratch at a time",
            f"disk: {d['per_cell']:.2f} GB scratch per cell, peak {d['peak']:.2f} GB per node, "
            f"{d['kept']:.2f} GB kept, {d['total']:.2f} GB in all; budget {budget}",
        ]
    )


def summarize(cfg: Config, store, ctx) -> str:
    """The cell table per pair, where the fingerprint stops surviving, and the FSR plot."""
    from runner.experiments.reports.mergeguard import report

    return report(cfg, plan(cfg, ctx), store, ctx)


def headline(cfg: Config, store, ctx) -> list[tuple[str, str, str]]:
    """(what, value, note) lines for a demo's closing table: each merged cell's FSR and math."""
    from runner.experiments.reports.mergeguard import cell_rows

    out = []
    for r in cell_rows(plan(cfg, ctx), store):
        if r["role"] != "merged" or r["status"] != "ok":
            continue
        w = f"{r['weight_fingerprinted']:g}" if r["weight_fingerprinted"] is not None else "-"
        math = "" if r["math_accuracy"] is None else f", math {r['math_accuracy']:.0%}"
        out.append(
            (
                f"merge {r['merge_method']} w_fp {w}",
                f"FSR {r['fsr_hits']}/{r['fsr_total']}",
                f"false triggers {r['false_trigger_hits']}/{r['false_trigger_total']}{math}",
            )
        )
    return out


def sweep_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A sweep trial's metrics: means over its merged cells (``runner.sweep``)."""
    from runner.experiments.reports.mergeguard import trial_metrics

    return trial_metrics(records)


__all__ = [
    "Config",
    "RESULT_KINDS",
    "SWEEP_METRICS",
    "dry_run_notes",
    "headline",
    "plan",
    "summarize",
    "sweep_metrics",
]
