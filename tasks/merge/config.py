"""Merge configs (torch-free): a grid cell as written, its canonical form, and the step configs.

A cell merges the fingerprinted model with the other expert over a shared base. Written as a
:class:`CellSpec` (or a mergekit template with placeholders, :func:`cell_from_template`), it is
canonicalised before hashing (:func:`canonical_cell`): defaults written out, parameters the
method ignores dropped, floats rounded, the seed kept only for random methods and always given to
them, and the merge device, dtype and mergekit version recorded, so equivalent cells share one
step ID. :func:`mergekit_config` turns a canonical cell and the parents' folders into the
dictionary mergekit validates, every model as an absolute path (never a string mergekit could
read as a hub id, a LoRA ``+`` or a revision ``@``).
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any, Literal

from pydantic import Field, create_model

from tasks.config import Strict
from tasks.errors import ConfigError
from tasks.evals.config import MathTask, RefusalOptions
from tasks.merge.methods import METHODS, canonical_params, get_method, round_float
from tasks.verify.config import VerifyConfig

ROLES = ("fingerprinted", "expert")  # the two merged models, in mergekit's models order
PLACEHOLDER = re.compile(r"^\$\{(fingerprinted|expert|base)\}$")
Dtype = Literal["float32", "bfloat16", "float16"]


def mergekit_version() -> str:
    """Installed mergekit's version (part of every cell's key: its DARE rescaling changed)."""
    try:
        return importlib.metadata.version("mergekit")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class CellSpec(Strict):
    """One merge, in the fingerprinted model's terms (``weights`` = (fingerprinted, expert))."""

    method: str = Field(description=f"mergekit merge_method: {', '.join(METHODS)}")
    weights: tuple[float, float] | None = Field(
        None, description="per-model weight (fingerprinted, expert)"
    )
    densities: tuple[float, float] | None = Field(
        None, description="per-model density (fingerprinted, expert); methods that sparsify"
    )
    t: float | None = Field(
        None,
        description="slerp/nearswap: t (slerp: 0 = the expert, 1 = the fingerprinted model); "
        "default for slerp: the fingerprinted weight",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="other shared mergekit parameters (lambda, normalize...)"
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="other per-model parameters by role (fingerprinted, expert), e.g. gamma",
    )
    use_base: bool | None = Field(
        None, description="nuslerp/multislerp: merge over the base (default: no)"
    )
    seed: int | None = Field(None, description="random_seed; random methods default to 0")
    template: str | None = Field(None, description="template the cell came from (label only)")


def canonical_cell(
    spec: CellSpec, *, device: str = "cpu", dtype: str = "float32", out_dtype: str | None = None
) -> dict[str, Any]:
    """The cell's identity: what decides the merged weights, and nothing else."""
    m = get_method(spec.method)
    where = f"merge cell {spec.method}"
    per_role: dict[str, dict[str, Any]] = {}
    for i, role in enumerate(ROLES):
        given = dict(spec.model_params.get(role, {}))
        if spec.weights is not None and "weight" in m.per_model:
            given["weight"] = spec.weights[i]
        if spec.densities is not None and "density" in m.per_model:
            given["density"] = spec.densities[i]
        per_role[role] = canonical_params(m, given, m.per_model, f"{where} ({role})")
    shared = dict(spec.params)
    if "t" in m.shared:
        t = spec.t if spec.t is not None else (spec.weights[0] if spec.weights else None)
        if t is not None:
            shared["t"] = t
    unknown_roles = sorted(set(spec.model_params) - set(ROLES))
    if unknown_roles:
        raise ConfigError(f"{where}: unknown roles {unknown_roles}", f"use {', '.join(ROLES)}")
    if m.base == "required":
        base = "expert" if m.name in ("slerp", "nearswap") else "base"
    else:
        base = "base" if m.base == "optional" and spec.use_base else None
    n_inputs = 2 + (base == "base")
    if n_inputs < m.min_models or (m.max_models is not None and n_inputs > m.max_models):
        raise ConfigError(
            f"{where}: mergekit's {m.name} cannot merge {n_inputs} models",
            "pick a method that merges two experts over a base (e.g. ties, dare_ties)",
        )
    return {
        "method": m.name,
        "base": base,
        "models": [{"role": r, "parameters": per_role[r]} for r in ROLES],
        "parameters": canonical_params(m, shared, m.shared, where),
        "seed": (0 if spec.seed is None else spec.seed) if m.random else None,
        "device": device,
        "dtype": dtype,
        "out_dtype": out_dtype,
        "mergekit": mergekit_version(),
    }


def cell_summary(cell: dict[str, Any]) -> dict[str, Any]:
    """Row columns of a canonical cell: weights and densities (fingerprinted, expert) and the
    fingerprinted model's share of the merge (its weight; t for slerp; normalised for linear)."""
    params = [m["parameters"] for m in cell["models"]]
    weights = [p["weight"] for p in params] if all("weight" in p for p in params) else None
    dens = [p["density"] for p in params] if all("density" in p for p in params) else None
    share = cell["parameters"].get("t") if cell["method"] in ("slerp", "nearswap") else None
    if weights is not None:
        share = weights[0]
        if cell["parameters"].get("normalize") and sum(weights) > 0:
            share = weights[0] / sum(weights)
    return {"weights": weights, "densities": dens, "weight_fingerprinted": share}


def cell_label(cell: dict[str, Any]) -> str:
    """Short text for plans and tables, e.g. ``ties 0.6/0.4 d0.4`` or ``dare_ties 0.1/0.9 s2``."""
    s = cell_summary(cell)
    parts = [cell["method"]]
    if s["weights"]:
        parts.append("/".join(f"{w:g}" for w in s["weights"]))
    if s["densities"] and len(set(s["densities"])) == 1:
        parts.append(f"d{s['densities'][0]:g}")
    elif s["densities"]:
        parts.append("d" + "/".join(f"{d:g}" for d in s["densities"]))
    if "t" in cell["parameters"]:
        parts.append(f"t{cell['parameters']['t']:g}")
    if cell["seed"] is not None:
        parts.append(f"s{cell['seed']}")
    return " ".join(parts)


def mergekit_config(cell: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """The mergekit configuration of a canonical cell, ``paths`` = role -> absolute folder."""

    def ref(role: str) -> dict[str, Any]:  # a ModelReference: never parsed as a string
        return {"model": {"path": str(paths[role])}}

    out: dict[str, Any] = {
        "merge_method": cell["method"],
        "dtype": cell["dtype"],
        "models": [
            {
                "model": ref(m["role"]),
                **({"parameters": m["parameters"]} if m["parameters"] else {}),
            }
            for m in cell["models"]
        ],
    }
    if cell["base"]:
        out["base_model"] = ref(cell["base"])
    if cell["parameters"]:
        out["parameters"] = dict(cell["parameters"])
    if cell.get("out_dtype"):
        out["out_dtype"] = cell["out_dtype"]
    return out


def cell_from_template(data: dict[str, Any], source: str) -> CellSpec:
    """A :class:`CellSpec` from a mergekit YAML whose models are ``${fingerprinted}``,
    ``${expert}`` and ``${base}`` (MergeGuard's configs, with placeholders for the three models)."""
    fix = "write models: [{model: ${fingerprinted}, ...}, {model: ${expert}, ...}] with scalars"
    extra = sorted(set(data) - {"models", "merge_method", "base_model", "parameters", "dtype"})
    if extra or "merge_method" not in data or not isinstance(data.get("models"), list):
        raise ConfigError(f"{source}: not a two-expert mergekit template ({extra})", fix)
    if data.get("dtype", "float32") != "float32":
        raise ConfigError(f"{source}: templates merge in float32", "drop dtype or set float32")
    m = get_method(str(data["merge_method"]))
    per_role: dict[str, dict[str, Any]] = {}
    for entry in data["models"]:
        role = _placeholder(entry.get("model"), source, fix)
        per_role[role] = dict(entry.get("parameters") or {})
    if sorted(per_role) != sorted(ROLES):
        raise ConfigError(f"{source}: models must be ${{fingerprinted}} and ${{expert}}", fix)
    pick: dict[str, Any] = {}
    for k in ("weight", "density"):
        values = tuple(per_role[r].pop(k, None) for r in ROLES)
        pick[k] = None if any(v is None for v in values) else values
    base = data.get("base_model")
    if base is not None and _placeholder(base, source, fix) != "base":
        raise ConfigError(f"{source}: base_model must be ${{base}}", fix)
    return CellSpec(
        method=m.name,
        weights=pick["weight"],
        densities=pick["density"],
        params=dict(data.get("parameters") or {}),
        model_params={r: p for r, p in per_role.items() if p},
        use_base=base is not None if m.base == "optional" else None,
        template=source,
    )


def _placeholder(value: Any, source: str, fix: str) -> str:
    match = PLACEHOLDER.match(str(value))
    if match is None:
        raise ConfigError(f"{source}: model {value!r} is not a placeholder", fix)
    return match[1]


# Verification options of a merge cell: VerifyConfig's own fields, minus what the cell sets.
_PER_CELL = {"condition", "model", "model_step_id", "fingerprint", "input_digest", "use_adapter"}
_PER_CELL |= {"sampling", "bos_samples", "bos_max_new_tokens"}
VerifyOptions = create_model(
    "VerifyOptions",
    __base__=Strict,
    **{n: (f.annotation, f) for n, f in VerifyConfig.model_fields.items() if n not in _PER_CELL},
)


class HurefOptions(Strict):
    """HuRef of a merged model against its parents (the parents' invariants are upstream steps)."""

    k: int = Field(1024, ge=2, description="tokens per invariant (the seed: 4096)")
    n_layers: int = Field(2, ge=1, description="last layers used")
    pcs: bool = Field(True, description="also PCS to each parent (while the weights exist)")


class CellConfig(Strict):
    """The ``merge_cell`` step: one merge (or one parent's baseline) measured end to end."""

    cell: dict[str, Any] | None = Field(None, description="canonical cell; None for a baseline")
    parent: Literal["fingerprinted", "expert", "base"] | None = Field(
        None, description="baseline row of this parent (no merge)"
    )
    pair: str = Field("pair", description="name of the model pair (rows)")
    labels: dict[str, str] = Field(default_factory=dict, description="role -> label for rows")
    base: str = Field(description="base model: zoo name, local folder or hub id")
    expert: str | None = Field(None, description="expert ref when no upstream step is wired in")
    huref: HurefOptions = HurefOptions()
    verify: VerifyOptions = VerifyOptions()  # type: ignore[valid-type]
    refusal: RefusalOptions | None = RefusalOptions(n=60, max_new_tokens=32)
    math: MathTask | None = None
    eval_batch_size: int = Field(16, ge=1)
    eval_seed: int = Field(0, description="sampling seed of the refusal eval")
    shard_mb: int = Field(1024, ge=1, description="mergekit out_shard_size in MiB (bounds RAM)")
    keep: bool = Field(False, description="keep the merged weights (not part of the key)")
    scratch: str | None = Field(None, description="node-local scratch root (not in the key)")


class MergeYamlConfig(Strict):
    """``fprun merge CONFIG.yml``: a mergekit configuration run verbatim, in-process."""

    yaml: str = Field(description="mergekit configuration text (placeholders filled)")
    seed: int = Field(0, description="random_seed (always passed, so DARE is reproducible)")
    device: str = Field("cpu", description="cpu | cuda | cuda:N (CPU and CUDA draw other masks)")
    shard_mb: int = Field(1024, ge=1, description="out_shard_size in MiB (bounds RAM)")
    copy_tokenizer: bool = True
    identities: dict[str, str] = Field(
        default_factory=dict, description="content hash of each local model folder (the key)"
    )


def round_cell_floats(values: list[float]) -> list[float]:
    """A generated weight grid, rounded like canonical cells."""
    return [round_float(float(v)) for v in values]
