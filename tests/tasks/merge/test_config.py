"""The method table matches mergekit's registry; cells canonicalise so equal merges share a key."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError
from tasks.merge.config import (
    CellSpec,
    canonical_cell,
    cell_from_template,
    cell_label,
    cell_summary,
    mergekit_config,
)
from tasks.merge.methods import METHODS, REQUIRED


def test_method_table_matches_mergekit_registry():
    """Names, base policy, parameter scopes and defaults: the torch-free table is mergekit's."""
    from mergekit.merge_methods.base import MISSING, ParameterScope
    from mergekit.merge_methods.registry import registered_methods

    theirs = {m.spec.name: m.spec for m in registered_methods()}
    assert sorted(theirs) == sorted(METHODS) and len(METHODS) == 20
    for name, spec in theirs.items():
        ours = METHODS[name]
        assert ours.base == spec.contract.base.value, name
        shared = {
            p.name: REQUIRED if p.default is MISSING else p.default
            for p in spec.parameters
            if p.scope == ParameterScope.SHARED
        }
        per_model = {
            p.name: REQUIRED if p.default is MISSING else p.default
            for p in spec.parameters
            if p.scope != ParameterScope.SHARED
        }
        assert ours.shared == shared, name
        assert ours.per_model == per_model, name
        assert ours.min_models == spec.contract.min_inputs, name
        assert ours.max_models == spec.contract.max_inputs, name


def test_equivalent_cells_canonicalise_to_one_key():
    """Defaults written out, ignored parameters dropped, floats rounded."""
    a = canonical_cell(CellSpec(method="task_arithmetic", weights=(0.1 + 0.2, 0.7)))
    b = canonical_cell(
        CellSpec(
            method="task_arithmetic",
            weights=(0.3, 0.7),
            densities=(0.5, 0.5),  # task arithmetic sparsifies nothing
            params={"normalize": False, "rescale": True, "int8_mask": True},
            seed=7,  # deterministic: no seed in the key
        )
    )
    assert a == b
    assert a["models"][0]["parameters"] == {"weight": 0.3}
    assert a["parameters"] == {"normalize": False, "lambda": 1.0} and a["seed"] is None
    ties = canonical_cell(CellSpec(method="ties", weights=(0.6, 0.4), densities=(0.4, 0.4)))
    assert ties["parameters"] == {
        "int8_mask": False,
        "normalize": True,
        "rescale": False,
        "lambda": 1.0,
    }


def test_random_methods_always_seeded_and_device_in_key():
    dare = canonical_cell(CellSpec(method="dare_ties", weights=(0.5, 0.5), densities=(0.4, 0.4)))
    assert dare["seed"] == 0
    other = canonical_cell(
        CellSpec(method="dare_ties", weights=(0.5, 0.5), densities=(0.4, 0.4), seed=1)
    )
    cuda = canonical_cell(
        CellSpec(method="dare_ties", weights=(0.5, 0.5), densities=(0.4, 0.4)), device="cuda"
    )
    assert len({str(dare), str(other), str(cuda)}) == 3
    assert (
        dare["mergekit"]
        and "int8_mask"
        not in canonical_cell(
            CellSpec(method="dare_linear", weights=(0.5, 0.5), densities=(0.4, 0.4))
        )["parameters"]
    )


def test_linear_has_no_base_and_slerp_takes_t():
    linear = canonical_cell(CellSpec(method="linear", weights=(0.3, 0.7)))
    assert linear["base"] is None and "base_model" not in mergekit_config(
        linear, {"fingerprinted": "/a", "expert": "/b"}
    )
    slerp = canonical_cell(CellSpec(method="slerp", weights=(0.3, 0.7)))
    assert slerp["parameters"] == {"t": 0.3} and slerp["base"] == "expert"
    assert cell_summary(slerp)["weight_fingerprinted"] == 0.3
    assert cell_label(slerp) == "slerp t0.3"
    cfg = mergekit_config(slerp, {"fingerprinted": "/a+b@c", "expert": "/e"})
    assert cfg["base_model"] == {"model": {"path": "/e"}}  # a path, never a parsed string
    assert cfg["models"][0]["model"] == {"model": {"path": "/a+b@c"}}


def test_bad_cells_are_one_line_errors():
    with pytest.raises(ConfigError, match="did you mean 'ties'"):
        canonical_cell(CellSpec(method="tie", weights=(0.5, 0.5)))
    with pytest.raises(ConfigError, match="takes no parameter 'gama'"):
        canonical_cell(
            CellSpec(method="breadcrumbs", weights=(1, 1), model_params={"expert": {"gama": 1}})
        )
    with pytest.raises(ConfigError, match="needs 'weight'"):
        canonical_cell(CellSpec(method="ties"))
    with pytest.raises(ConfigError, match="cannot merge"):
        canonical_cell(CellSpec(method="passthrough"))  # takes one model


def test_template_placeholders():
    data = {
        "models": [
            {"model": "${fingerprinted}", "parameters": {"weight": 0.6, "density": 0.4}},
            {"model": "${expert}", "parameters": {"weight": 0.4, "density": 0.4}},
        ],
        "merge_method": "ties",
        "base_model": "${base}",
        "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "float32",
    }
    spec = cell_from_template(data, "ties.yml")
    assert spec.weights == (0.6, 0.4) and spec.densities == (0.4, 0.4)
    assert canonical_cell(spec)["parameters"]["int8_mask"] is True
    with pytest.raises(ConfigError, match="not a placeholder"):
        cell_from_template({**data, "base_model": "meta-llama/Llama-2-7b-hf"}, "x.yml")


def test_mergeguard_templates_open_with_a_comment_and_canonicalise():
    """configs/merges/: MergeGuard's four configs with placeholders for the three models."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3] / "configs" / "merges"
    got = {}
    for name in ("task", "ties", "dare_ties", "dare_task"):
        text = (root / f"{name}.yml").read_text()
        assert text.startswith("#")
        cell = canonical_cell(cell_from_template(yaml.safe_load(text), name))
        got[name] = (cell["method"], cell_label(cell))
    assert got == {
        "task": ("task_arithmetic", "task_arithmetic 0.7/0.7"),
        "ties": ("ties", "ties 0.6/0.4 d0.4"),
        "dare_ties": ("dare_ties", "dare_ties 0.1/0.9 d0.4 s0"),
        "dare_task": ("dare_linear", "dare_linear 0.1/0.9 d0.4 s0"),
    }
