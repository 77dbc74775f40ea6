"""``kind: huref``: invariants for many models, then one ICS/PCS matrix over all of them.

Plan: per model an optional ``huref_derive`` step (a control made from a base: noise, random init,
permutation, head rotation), one ``huref_extract`` step, one ``huref_compare`` step fed by all
extract steps and, with ``image.enabled``, one ``huref_image`` step drawing every model's picture
and a contact sheet. With ``resources.actors > 0`` the extract steps run on a pool of long-lived Ray
actors that keep the token-selection cache (runner/exec/actors.py); otherwise as plain tasks.
Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from runner.plan import Resources, Step
from tasks.config import Strict
from tasks.huref.config import CompareConfig, DeriveConfig, ExtractConfig, TokenConfig

RESULT_KINDS = ("huref", "similarity", "huref_image")


class ModelEntry(Strict):
    """One model of the family: a reference, or a control derived from one."""

    name: str | None = Field(None, description="label in rows (default: the ref)")
    ref: str | None = Field(None, description="zoo name, local folder or hub id")
    derive: DeriveConfig | None = Field(None, description="build a control model from a base")
    from_config: str | None = Field(
        None,
        description="take the model from a step of another experiment YAML (relative to "
        "this file), e.g. the IF_SFT-fingerprinted offspring; the step is shared by its ID",
    )
    step_kind: str = Field("if_sft", description="with from_config: the step kind to take")
    only_if_done: bool = Field(
        False,
        description="with from_config: drop this model unless "
        "that step already finished in --results",
    )
    tokens: TokenConfig | None = Field(None, description="override the experiment's token rule")
    skip_missing: bool = Field(
        False,
        description="drop this model when its local path is absent "
        "(e.g. a fingerprinted offspring not built yet)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if sum(x is not None for x in (self.ref, self.derive, self.from_config)) != 1:
            raise ValueError("give exactly one of ref, derive and from_config")
        if self.ref is None and not self.name:
            raise ValueError("a derived or upstream model needs a name")
        return self

    @property
    def label(self) -> str:
        return self.name or str(self.ref)


class HurefResources(Strict):
    num_cpus: float = Field(1.0, gt=0, description="CPUs per extraction (task or actor)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per extraction; fractions share a GPU")
    memory_gb: float | None = Field(None, gt=0, description="memory reserved per extraction")
    actors: int = Field(0, ge=0, description="0: Ray tasks; N: a pool of N extraction actors")


class ImageSection(Strict):
    enabled: bool = Field(False, description="draw each model's picture and a contact sheet")
    size: int = Field(256, ge=64, le=2048, description="picture side in pixels")
    ics: bool = Field(True, description="put ICS to the first model in the sheet's titles")


class Config(Strict):
    kind: Literal["huref"]
    name: str = Field("huref", description="experiment name shown in summaries")
    k: int = Field(4096, ge=2, description="tokens per invariant (the seed: 4096)")
    n_layers: int = Field(2, ge=1, description="last layers used (the seed: 2)")
    tokens: TokenConfig = TokenConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    models: list[ModelEntry] = Field(min_length=2, description="models to fingerprint and compare")
    compare: CompareConfig = CompareConfig()
    image: ImageSection = ImageSection()
    resources: HurefResources = HurefResources()

    @model_validator(mode="after")
    def _unique(self) -> Config:
        labels = [m.label for m in self.models]
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise ValueError(f"model names repeat: {dup}; give each a distinct name")
        return self


def _present(entry: ModelEntry, ctx) -> bool:
    if entry.from_config is not None and entry.only_if_done:
        from runner.results.store import ResultStore
        from tasks.errors import ConfigError

        try:
            step = _upstream(entry, ctx)
        except ConfigError:  # the upstream experiment is not there yet: nothing is done
            return False
        return ResultStore(ctx.results).done(step.result_kind, step.step_id)
    if not entry.skip_missing or entry.ref is None:
        return True
    return Path(entry.ref).expanduser().exists()  # refs resolve against the working directory


def _upstream(entry: ModelEntry, ctx) -> Step:
    """The ``step_kind`` step of the ``from_config`` experiment (planned, not run, here)."""
    from runner.experiments.upstream import upstream_step

    return upstream_step(
        Path(ctx.config_path).parent / str(entry.from_config), entry.step_kind, ctx
    )


def check_entry(entry: ModelEntry, cfg: Config) -> None:
    """Plan-time checks, as a run would find them: model names and the token file."""
    from runner.experiments.protocol import check_model_ref
    from tasks.readers import read_text

    for ref in (entry.ref, entry.derive.base if entry.derive else None):
        if ref is not None:
            check_model_ref(ref)
    tokens = entry.tokens or cfg.tokens
    if tokens.strategy == "file" and tokens.file:
        read_text(tokens.file, what="tokens.file")


def plan(cfg: Config, ctx) -> list[Step]:
    # Over 60 lines on purpose: one pass over the model entries builds every step kind they need.
    res = cfg.resources
    resources = Resources(
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        memory_gb=res.memory_gb,
        num_workers=max(1, res.actors),
    )
    extracts: dict[str, Step] = {}
    for i, entry in enumerate(m for m in cfg.models if _present(m, ctx)):
        check_entry(entry, cfg)
        inputs = {}
        if entry.from_config is not None:
            inputs["model"] = _upstream(entry, ctx)
        if entry.derive is not None:
            inputs["model"] = Step(
                "huref_derive",
                "tasks.huref.controls:derive_step",
                entry.derive.model_dump(),
                "huref",
                label=entry.label,
            )
        ex = ExtractConfig(
            model=entry.ref,
            name=entry.label,
            k=cfg.k,
            n_layers=cfg.n_layers,
            tokens=entry.tokens or cfg.tokens,
            dtype=cfg.dtype,
            device=cfg.device,
        )
        extracts[f"m{i:03d}"] = Step(
            "huref_extract",
            "tasks.huref.extract:extract_step",
            ex.model_dump(),
            "huref",
            inputs=inputs,
            executor="actor" if res.actors else "task",
            resources=resources,
            label=entry.label,
        )
    steps = [
        Step(
            "huref_compare",
            "tasks.huref.compare:compare_step",
            cfg.compare.model_dump(),
            "similarity",
            inputs=extracts,
            label=cfg.name,
        )
    ]
    if cfg.image.enabled:
        steps.append(
            Step(
                "huref_image",
                "tasks.huref.encoder.family:image_step",
                cfg.image.model_dump(exclude={"enabled"}),
                "huref_image",
                inputs=extracts,
                label=cfg.name,
            )
        )
    return steps


def summarize(cfg: Config, store, ctx) -> str:
    """The ICS matrix (and PCS where computed) of this experiment's compare step."""
    step = plan(cfg, ctx)[0]
    rows = store.read("similarity", [step.step_id]).to_pylist()
    if not rows:
        return f"{cfg.name}: no similarity rows yet"
    names = [e.label for e in cfg.models if _present(e, ctx)]
    width = max(len(n) for n in names)
    lines = [f"{cfg.name}: ICS (upper) / PCS (lower), k={cfg.k}, layers={cfg.n_layers}"]
    cell = {(r["model_a"], r["model_b"]): r for r in rows}
    for a in names:
        vals = []
        for b in names:
            r = cell.get((a, b)) or cell.get((b, a))
            upper = names.index(b) > names.index(a)
            v = None if r is None else (r["ics"] if upper else r["pcs"])
            vals.append("     ---" if a == b else "     n/a" if v is None else f"{v:8.2f}")
        lines.append(f"{a:<{width}} " + " ".join(vals))
    return "\n".join(lines)


def headline(cfg: Config, store, ctx) -> list[tuple[str, str, str]]:
    """(what, value, note) lines for a demo's closing table: ICS to the first model, the sheet."""
    steps = plan(cfg, ctx)
    rows = store.read("similarity", [steps[0].step_id]).to_pylist()
    names = [e.label for e in cfg.models if _present(e, ctx)]
    out = []
    for r in rows:
        if r["model_a"] == names[0] and r["model_b"] != names[0]:
            same = "" if r["tokens_match"] else " (other tokenizer)"
            out.append((f"HuRef ICS {r['model_b']}", f"{r['ics']:.2f}", f"vs {names[0]}{same}"))
    for s in steps[1:]:
        img = store.read("huref_image", [s.step_id]).to_pylist()
        if img:
            out.append(("HuRef contact sheet", img[0]["sheet"], ""))
    return out
