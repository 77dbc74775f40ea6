"""mergekit 0.1.5's merge methods as data: parameters, defaults, which ones change the result.

Planning a grid must not import mergekit (torch, ~5 s), so the 20 registered methods are described
here; ``tests/tasks/merge`` checks this table against mergekit's own registry, so it cannot drift
silently. A parameter that a method ignores (task arithmetic has no density: it sparsifies
nothing; linear and karcher have no base model) is dropped when a cell is canonicalised, so two
spellings of one merge share one step ID. ``random`` marks methods that draw masks (the DARE and
DELLA families, arcee_fusion): they always get a seed, and the seed enters the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRED = "required"  # a parameter without a default


@dataclass(frozen=True)
class Method:
    """One mergekit method: its base-model policy, input counts and parameters.

    ``shared`` and ``per_model`` map parameter names to defaults (``REQUIRED`` when none);
    ``ignored`` names parameters mergekit accepts but whose value cannot change the output.
    """

    name: str
    base: str  # required | optional | ignored (mergekit's BasePolicy)
    shared: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, Any] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    random: bool = False
    min_models: int = 1  # inputs, base included when the method uses one
    max_models: int | None = None


def _gta(name: str, *, normalize: bool, rescale: bool, **kw: Any) -> Method:
    """The generalized task-arithmetic family (task_arithmetic, ties, dare_*, breadcrumbs*,
    della*): int8_mask, normalize, rescale, lambda shared; weight and density per model."""
    extra = kw.pop("extra", {})
    return Method(
        name,
        "required",
        shared={"int8_mask": False, "normalize": normalize, "rescale": rescale, "lambda": 1.0},
        per_model={"weight": REQUIRED, "density": 1.0, **extra},
        **kw,
    )


NO_CONSENSUS = frozenset({"int8_mask"})  # the mask dtype only matters for a sign consensus
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # no sparsification: density and rescale do nothing; no consensus: int8_mask neither
        _gta(
            "task_arithmetic",
            normalize=False,
            rescale=False,
            ignored=frozenset({"density", "rescale", "int8_mask"}),
        ),
        _gta("ties", normalize=True, rescale=False),
        _gta("dare_ties", normalize=False, rescale=True, random=True),
        _gta("dare_linear", normalize=False, rescale=True, random=True, ignored=NO_CONSENSUS),
        _gta(
            "breadcrumbs",
            normalize=False,
            rescale=False,
            extra={"gamma": 0.01},
            ignored=NO_CONSENSUS,
        ),
        _gta("breadcrumbs_ties", normalize=False, rescale=False, extra={"gamma": 0.01}),
        _gta("della", normalize=True, rescale=True, extra={"epsilon": 0.15}, random=True),
        _gta(
            "della_linear",
            normalize=False,
            rescale=True,
            extra={"epsilon": 0.15},
            random=True,
            ignored=NO_CONSENSUS,
        ),
        Method("linear", "ignored", shared={"normalize": True}, per_model={"weight": REQUIRED}),
        Method("slerp", "required", shared={"t": REQUIRED}, min_models=2, max_models=2),
        Method("nearswap", "required", shared={"t": REQUIRED}, min_models=2, max_models=2),
        Method(
            "nuslerp",
            "optional",
            shared={"nuslerp_row_wise": False, "nuslerp_flatten": True},
            per_model={"weight": REQUIRED},
        ),
        Method(
            "multislerp",
            "optional",
            shared={"normalize_weights": True, "eps": 1e-8},
            per_model={"weight": REQUIRED},
        ),
        Method("karcher", "ignored", shared={"max_iter": 10, "tol": 1e-5}),
        Method("model_stock", "required", shared={"filter_wise": False}, min_models=3),
        Method("arcee_fusion", "required", random=True, min_models=2, max_models=2),
        Method("passthrough", "ignored", per_model={"scale": None}, max_models=1),
        Method("ram", "required", shared={"epsilon": 1e-5}),
        Method("ramplus_tl", "required", shared={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}),
        Method("sce", "required", shared={"int8_mask": False, "select_topk": 1.0}),
    )
}


def get_method(name: str) -> Method:
    """The method called ``name``, or a ConfigError listing the registered ones."""
    import difflib

    from tasks.errors import ConfigError

    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(METHODS)}"
        raise ConfigError(f"unknown merge method {name!r} (mergekit 0.1.5 registers 20)", hint)
    return METHODS[name]


def round_float(x: Any, digits: int = 6) -> Any:
    """Floats rounded so a 0.1-step sweep gives 0.3, not 0.30000000000000004; -0.0 becomes 0.0."""
    if isinstance(x, bool) or not isinstance(x, float | int):
        return x
    if isinstance(x, int):
        return x
    return round(x, digits) + 0.0


def canonical_params(
    method: Method, given: dict[str, Any], defaults: dict[str, Any], where: str
) -> dict[str, Any]:
    """Defaults written out, ignored parameters dropped, floats rounded, unknown names refused."""
    from tasks.errors import ConfigError

    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{where}: {method.name} takes no parameter {', '.join(map(repr, unknown))}",
            f"its parameters are {', '.join(defaults) or 'none'}",
        )
    out = {}
    for name, default in defaults.items():
        if name in method.ignored:
            continue
        value = given.get(name, default)
        if value is REQUIRED:
            raise ConfigError(f"{where}: {method.name} needs {name!r}", f"set {name}")
        out[name] = round_float(value)
    return out
