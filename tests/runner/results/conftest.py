"""A small result store with one table of each plotted kind, for the report tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.results.store import ResultStore, finalize_rows

T = datetime(2026, 12, 1, tzinfo=UTC)


def write(store: ResultStore, kind: str, step_id: str, rows: list[dict]) -> None:
    table = finalize_rows(kind, rows, step_id=step_id, config_hash="c" * 16, started_at=T,
                          finished_at=T, device="cpu")  # fmt: skip
    store.write(kind, step_id, table)


def verification_row(condition: str, probe_set: str, hit: int, total: int) -> dict:
    return {"model_ref": "m", "fingerprint_id": "fp1", "method": "if_sft",
            "condition": condition, "probe_set": probe_set, "n_hit": hit, "n_total": total,
            "fsr": hit / total, "ci_low": 0.0, "ci_high": 1.0,
            "dataset": "reasoning_gym:basic_arithmetic (stand-in for X)"}  # fmt: skip


def merge_row(role: str, method: str | None, w: float | None, fsr: float, status="ok") -> dict:
    hits = round(8 * fsr)
    return {"pair": "if_sft", "role": role, "model_a": "fp", "model_b": "math",
            "base_model": "base", "merge_method": method, "weights": [w, 1 - w] if w else None,
            "weight_fingerprinted": w, "status": status, "error": None if status == "ok" else
            "RuntimeError: boom", "fsr": fsr, "fsr_hits": hits, "fsr_total": 8,
            "fsr_ci_low": 0.0, "fsr_ci_high": 1.0, "false_trigger_rate": 0.0,
            "false_trigger_total": 32, "ics_a": 90.0, "ics_b": 60.0, "refusal_rate": 0.5,
            "refusal_n": 30, "math_task": "basic_arithmetic", "math_accuracy": 0.4,
            "math_n": 40}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    s = ResultStore(tmp_path / "r")
    write(
        s,
        "verification",
        "v1",
        [
            verification_row("publish", "fingerprint", 8, 8),
            verification_row("publish", "unseen_keys", 2, 32),
        ],
    )
    write(s, "verification", "v2", [verification_row("vanilla", "fingerprint", 0, 8)])
    write(s, "similarity", "s1", [
        {"model_a": "a", "model_b": "b", "ics": 99.9, "pcs": 99.0, "k": 64, "tokens_match": True},
        {"model_a": "a", "model_b": "g", "ics": 0.1, "pcs": None, "k": 64,
         "tokens_match": False}])  # fmt: skip
    write(
        s,
        "eval",
        "e1",
        [
            {
                "model_ref": "m",
                "suite": "math",
                "task": "basic_arithmetic",
                "metric": "accuracy",
                "value": 0.5,
                "n": 200,
                "ci_low": 0.4,
                "ci_high": 0.6,
                "dataset": "reasoning_gym:basic_arithmetic",
            }
        ],
    )
    write(s, "sweep_trial", "t1", [{"sweep": "sw", "trial_id": "t1", "status": "TERMINATED",
                                    "params": json.dumps({"adapter.dim": 8}), "metric": "fsr",
                                    "value": 1.0, "metrics": "{}"}])  # fmt: skip
    write(s, "merge_cell", "m0", [merge_row("fingerprinted", None, None, 1.0)])
    for i, (w, fsr) in enumerate([(0.3, 0.0), (0.5, 0.25), (0.7, 1.0)]):
        write(s, "merge_cell", f"m{i + 1}", [merge_row("merged", "ties", w, fsr)])
    for i, d in enumerate((0.4, 0.8)):
        row = {**merge_row("merged", "dare_ties", 0.5, 0.5), "densities": [d, d]}
        write(s, "merge_cell", f"md{i}", [row])
    write(s, "merge_cell", "m9", [merge_row("merged", "slerp", 0.5, 0.0, status="failed")])
    write_provenance(s)
    for n, fsr in ((8, 1.0), (32, 0.9), (128, 0.4)):
        write(s, "sweep_trial", f"k{n}", [{"sweep": "key_capacity", "trial_id": f"k{n}",
              "status": "TERMINATED", "params": json.dumps({"data.n_fingerprint": n}),
              "metric": "fsr", "value": fsr,
              "metrics": json.dumps({"fsr": fsr, "false_trigger": 0.05})}])  # fmt: skip
    return s


def pair_row(suspect: str, relation: str, family: str, strength, ics: float, fsr: float) -> dict:
    return {"owner": "if_sft", "owner_model": "fp", "suspect": suspect, "relation": relation,
            "family": family, "strength": strength, "status": "ok", "ics": ics, "pcs": ics,
            "if_fsr": fsr, "if_sampled": 10 * fsr, "false_trigger_rate": 0.1,
            "datasets": ["fingerprint probes"]}  # fmt: skip


def write_provenance(s: ResultStore) -> None:
    """Pairs (two quantized, two pruned, four pool models) and their detector scores."""
    from tasks.provenance.config import ScoreConfig
    from tasks.provenance.score_step import detector_rows

    pairs = [
        pair_row("int8", "derived", "quantize", 8.0, 99.0, 1.0),
        pair_row("int4", "derived", "quantize", 4.0, 95.0, 0.5),
        pair_row("prune 0.1", "derived", "prune", 0.1, 97.0, 1.0),
        pair_row("prune 0.5", "derived", "prune", 0.5, 40.0, 0.0),
    ] + [pair_row(f"pool {i}", "independent", "independent", None, i, 0.0) for i in range(4)]
    for i, p in enumerate(pairs):
        write(s, "provenance_pair", f"p{i}", [p])
    cfg = ScoreConfig(bootstrap=20)
    rows = [r for d in ("if_fsr", "huref_ics") for r in detector_rows(cfg, "if_sft", d, pairs)]
    write(s, "detector_score", "ds", rows)
