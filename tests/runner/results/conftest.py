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
    return s
