"""Merge-grid cells of the ``mergeguard`` kind: generated, canonicalised, keyed, sized.

Cells come from mergekit templates (``configs/merges/*.yml``, placeholders for the three models)
and from generator blocks (methods x the fingerprinted model's weight with a pairing rule x
densities x seeds). Each is canonicalised (``tasks.merge.config.canonical_cell``) and duplicates
collapse. :class:`CellStep` leaves execution knobs that must not change a cell's identity
(``keep``, the scratch root) out of its step ID. :func:`cell_estimate` and :func:`disk_budget`
size the scratch a cell needs (merged weights at the output dtype, an untied head, invariants) and
the peak per node, and refuse a grid over its budget or the free space before anything runs.
Torch-free.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from runner.plan import Estimate, Step
from tasks.config import Strict
from tasks.errors import ConfigError
from tasks.merge.config import CellSpec, canonical_cell, cell_from_template, round_cell_floats
from tasks.merge.methods import get_method

UNKEYED = ("keep", "scratch")  # execution knobs of a cell, never part of its step ID
BYTES_PER = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


class WeightRange(Strict):
    """An inclusive range of weights, e.g. 0.1 to 0.9 by 0.1 (rounded, so 0.3 is 0.3)."""

    start: float
    stop: float
    step: float = Field(gt=0)

    def values(self) -> list[float]:
        n = int(round((self.stop - self.start) / self.step)) + 1
        return round_cell_floats([self.start + i * self.step for i in range(n)])


class GridBlock(Strict):
    """Methods x weights (with a pairing rule) x densities x seeds."""

    methods: list[str] = Field(min_length=1, description="mergekit merge_method names")
    weights: float | list[float] | WeightRange = Field(
        description="the fingerprinted model's weight (slerp: its t)"
    )
    pairing: Literal["complement", "equal", "fixed"] = Field(
        "complement", description="the expert's weight: 1 - w, w, or expert_weight"
    )
    expert_weight: float | None = Field(None, description="with pairing: fixed")
    densities: float | list[float] = Field(
        1.0, description="both models' density (methods that sparsify; ignored by the others)"
    )
    seeds: int | list[int] = Field(0, description="random_seed (random methods only)")
    params: dict[str, Any] = Field(default_factory=dict, description="other shared parameters")
    keep: bool = Field(False, description="keep these cells' merged weights")

    @model_validator(mode="after")
    def _check(self) -> GridBlock:
        for m in self.methods:
            get_method(m)
        if self.pairing == "fixed" and self.expert_weight is None:
            raise ValueError("pairing: fixed needs expert_weight")
        return self

    def specs(self) -> list[CellSpec]:
        """Every cell of the block, before canonicalisation."""
        ws = self.weights.values() if isinstance(self.weights, WeightRange) else _list(self.weights)
        out = []
        for method in self.methods:
            random = get_method(method).random
            for w in ws:
                other = {"complement": 1.0 - w, "equal": w}.get(self.pairing, self.expert_weight)
                for d in _list(self.densities):
                    for s in _list(self.seeds) if random else [None]:
                        out.append(
                            CellSpec(
                                method=method,
                                weights=(w, round(other, 6)),
                                densities=(d, d),
                                params=self.params,
                                seed=s,
                            )
                        )
        return out


def _list(x: Any) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


@dataclass(eq=False)
class CellStep(Step):
    """A step whose ``UNKEYED`` config entries are left out of its step ID and config hash."""

    @cached_property
    def _keyed(self) -> Step:
        config = {k: v for k, v in self.config.items() if k not in UNKEYED}
        return Step(self.kind, self.fn, config, self.result_kind, inputs=self.inputs)

    @cached_property
    def step_id(self) -> str:  # type: ignore[override]
        return self._keyed.step_id

    @cached_property
    def config_hash(self) -> str:  # type: ignore[override]
        return self._keyed.config_hash


def template_specs(paths: list[str], ctx) -> list[tuple[CellSpec, str]]:
    """(cell, template name) for each template path (relative to the experiment YAML)."""
    out = []
    for name in paths:
        path = Path(ctx.config_path).parent / name
        if not path.is_file():
            raise ConfigError(f"merge template {path} does not exist", "fix the templates list")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({exc})", "fix the template") from exc
        out.append((cell_from_template(data or {}, str(name)), Path(name).stem))
    return out


def unique_cells(specs: list[tuple[CellSpec, bool]], merge: Any) -> list[tuple[dict, bool]]:
    """Canonical cells (with their keep flag), duplicates collapsed, first spelling kept."""
    seen: dict[str, tuple[dict, bool]] = {}
    for spec, keep in specs:
        cell = canonical_cell(
            spec, device=merge.device, dtype=merge.dtype, out_dtype=merge.out_dtype
        )
        key = json.dumps(cell, sort_keys=True)
        if key in seen:
            seen[key] = (seen[key][0], seen[key][1] or keep)
        else:
            seen[key] = (cell, keep)
    return list(seen.values())


class DiskSettings(Strict):
    """The grid's disk budget, checked before anything runs."""

    budget_gb: float | None = Field(None, gt=0, description="refuse grids that need more")
    params: float | None = Field(
        None, gt=0, description="parameters of one model (default: read from a local base)"
    )
    head_params: float = Field(
        0, ge=0, description="vocab x hidden, added when an untied head is merged in"
    )
    check_free: bool = Field(
        True,
        description="also compare with the free space of --artifacts and the scratch root on "
        "this machine (turn off when planning for another cluster)",
    )


@dataclass(frozen=True)
class Sizing:
    """Disk of one model and of one cell's scratch, in GB."""

    model_gb: float  # one model at float32, as fingerprint and fine-tune steps keep it
    cell_gb: float  # merged weights at the output dtype + untied head + invariants
    invariants_gb: float


def sizing(cfg: Any, untied: bool) -> Sizing:
    """Sizes from ``disk.params`` (or the base folder's safetensors headers)."""
    params = cfg.disk.params or local_params(cfg.base)
    if params is None:
        raise ConfigError(
            f"cannot size the grid: the base {cfg.base} is not a local folder",
            "set disk.params (parameters of one model, e.g. 6.74e9 for Llama-2-7b)",
        )
    dtype = cfg.merge.out_dtype or cfg.merge.dtype
    inv = 3 * cfg.huref.n_layers * cfg.huref.k**2 * 4 / GB
    head = cfg.disk.head_params if untied else 0
    merged = (params + head) * BYTES_PER[dtype] / GB
    return Sizing(model_gb=params * 4 / GB, cell_gb=merged + inv, invariants_gb=inv)


def local_params(ref: str) -> float | None:
    from tasks.huref.safetensors_io import read_header  # numpy only

    folder = Path(ref).expanduser()
    if not folder.is_dir():
        return None
    total = 0
    for f in folder.glob("*.safetensors"):
        for info in read_header(f).values():
            n = 1
            for d in info.shape:
                n *= d
            total += n
    return float(total) or None


def cell_estimate(size: Sizing, keep: bool) -> Estimate:
    """A cell's scratch and what it keeps (generations and eval responses, ~1 MB)."""
    kept = size.cell_gb if keep else 0.001
    how = "disk: merged weights at the output dtype (+ untied head) + invariants; deleted"
    return Estimate(disk_gb=size.cell_gb, kept_gb=kept, how=how + (" unless keep" if keep else ""))


MODEL_STEPS = ("if_sft", "if_adapter", "finetune")  # each keeps about one model at float32


def kept_gb(step: Step, size: Sizing) -> float:
    """What a step of the grid's plan leaves on disk."""
    if step.kind == "merge_cell" and step.estimate is not None:
        return step.estimate.kept_gb or 0.0
    if step.kind in MODEL_STEPS:
        return size.model_gb
    return size.invariants_gb if step.kind == "huref_extract" else 0.0


def disk_budget(cfg: Any, steps: list[Step], ctx, size: Sizing) -> dict[str, float]:
    """Peak disk of the grid; ConfigError (exit 2, before anything runs) when over budget.

    Peak = actors on a node x the largest cell's scratch, plus everything kept: the fingerprint
    and fine-tune outputs (a model each), the parents' invariants, kept merged models.
    """
    cells = [s for s in steps if s.kind == "merge_cell" and s.estimate is not None]
    per_cell = max((s.estimate.disk_gb or 0 for s in cells), default=0.0)
    actors = cfg.resources.actors_per_node or max(1, cfg.resources.actors)
    kept = sum(kept_gb(s, size) for s in _all_steps(steps))
    figures = {"per_cell": per_cell, "actors": actors, "peak": actors * per_cell, "kept": kept}
    figures["total"] = figures["peak"] + kept
    if cfg.disk.budget_gb is not None and figures["total"] > cfg.disk.budget_gb:
        raise ConfigError(
            f"the grid needs about {figures['total']:.1f} GB of disk ({len(cells)} cells: "
            f"{actors} actor(s) x {per_cell:.2f} GB of scratch per node, {kept:.1f} GB kept) but "
            f"disk.budget_gb is {cfg.disk.budget_gb:g}",
            "raise disk.budget_gb, run fewer actors per node, or keep fewer merged models",
        )
    if cfg.disk.check_free:
        _check_free(figures, steps, ctx, size)
    return figures


def _all_steps(steps: list[Step]) -> list[Step]:
    seen: dict[str, Step] = {}
    todo = list(steps)
    while todo:
        s = todo.pop()
        if s.step_id not in seen:
            seen[s.step_id] = s
            todo.extend(s.inputs.values())
    return list(seen.values())


def _check_free(figures: dict[str, float], steps: list[Step], ctx, size: Sizing) -> None:
    from runner.results.store import ResultStore
    from tasks.scratch import scratch_root

    store = ResultStore(ctx.results)
    todo = [s for s in _all_steps(steps) if not store.done(s.result_kind, s.step_id)]
    if not todo:
        return
    need = figures["peak"] + sum(kept_gb(s, size) for s in todo)
    for where in (Path(ctx.artifacts), scratch_root()):
        free = _free_gb(where)
        if free is not None and need > free:
            raise ConfigError(
                f"the grid needs about {need:.1f} GB more disk but {where} has {free:.1f} GB free",
                "free some space, point FPRUN_SCRATCH/--artifacts elsewhere, or shrink the grid",
            )


def _free_gb(path: Path) -> float | None:
    here = path.expanduser().absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free / GB
    except OSError:
        return None
