"""The merge cell on tiny models: one row whatever happens, scratch cleaned, keep honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.huref.extract import extract_step
from tasks.merge.cell import merge_cell_step
from tasks.merge.config import CellSpec, canonical_cell
from tests.tasks.merge.conftest import fake_fingerprint


@pytest.fixture(scope="module")
def grid_inputs(merge_parents, tmp_path_factory) -> dict[str, Path]:
    """A fingerprint folder around the "fingerprinted" parent (keys it never learned: FSR 0) and
    the parents' invariants, as the mergeguard kind wires them."""
    root = tmp_path_factory.mktemp("cell-inputs")
    fp = fake_fingerprint(root / "fingerprint", merge_parents["fingerprinted"])
    inputs = {"fingerprint": fp, "expert": merge_parents["expert"]}
    for role, folder in merge_parents.items():
        out = root / f"inv_{role}"
        out.mkdir()
        extract_step({"k": 32, "device": "cpu"}, inputs={"model": folder}, out_dir=out)
        inputs[f"inv_{role}"] = out
    return inputs


def _config(tmp_path: Path, **extra) -> dict:
    return {
        "base": "tiny-llama",
        "huref": {"k": 32},
        "verify": {"batch_size": 8, "max_new_tokens": 4},
        "refusal": {"n": 2, "max_new_tokens": 4},
        "math": {"task": "basic_arithmetic", "n": 2, "max_new_tokens": 4},
        "scratch": str(tmp_path / "scratch"),
        **extra,
    }


def test_cell_row_and_scratch(grid_inputs, tmp_path):
    cell = canonical_cell(CellSpec(method="ties", weights=(0.6, 0.4), densities=(0.4, 0.4)))
    out = tmp_path / "out"
    out.mkdir()
    [row] = merge_cell_step(_config(tmp_path, cell=cell), inputs=grid_inputs, out_dir=out)
    assert row["status"] == "ok" and row["error"] is None and row["role"] == "merged"
    assert row["weights"] == [0.6, 0.4] and row["densities"] == [0.4, 0.4]
    assert row["fsr_total"] == 2 and row["false_trigger_total"] == 1
    assert 0 <= row["fsr_ci_low"] <= row["fsr_ci_high"] <= 1
    assert row["ics_a"] > 90 and row["pcs_base"] > 90  # a merge of two small perturbations
    assert row["refusal_n"] == 2 and row["math_n"] == 2 and row["merged_bytes"] > 0
    assert row["merged_ref"] is None and list((tmp_path / "scratch").iterdir()) == []
    text = (out / "generations.jsonl").read_text()
    assert "alpha beta" not in text and "alpha beta" not in str(row)  # keys never leave private/


def test_failed_merge_is_a_row(grid_inputs, tmp_path):
    cell = canonical_cell(CellSpec(method="della", weights=(0.5, 0.5), densities=(0.1, 0.1)))
    [row] = merge_cell_step(_config(tmp_path, cell=cell), inputs=grid_inputs, out_dir=tmp_path)
    assert row["status"] == "failed" and "epsilon" in row["error"].lower()
    assert row["merge_method"] == "della" and row.get("fsr") is None
    assert list((tmp_path / "scratch").iterdir()) == []


def test_keep_and_baseline(grid_inputs, tmp_path):
    cell = canonical_cell(CellSpec(method="task_arithmetic", weights=(0.5, 0.5)))
    out = tmp_path / "kept"
    out.mkdir()
    [row] = merge_cell_step(
        _config(tmp_path, cell=cell, keep=True), inputs=grid_inputs, out_dir=out
    )
    assert row["merged_ref"] == str(out / "merged") and (out / "merged" / "config.json").is_file()
    [base] = merge_cell_step(
        _config(tmp_path, parent="expert"), inputs=grid_inputs, out_dir=tmp_path
    )
    assert base["role"] == "expert" and base["merge_method"] == "none"
    assert base["weight_fingerprinted"] == 0.0 and base["ics_b"] == pytest.approx(100.0)
