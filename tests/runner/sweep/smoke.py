"""The bundled sweep configs the sweep tests load."""

from __future__ import annotations

from pathlib import Path

from runner.config import load_experiment
from runner.experiments import sweep as sweep_kind

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "sweep_adapter_dim.yaml"
FULL = ROOT / "configs" / "sweeps" / "adapter_dim.yaml"


def smoke(*overrides: str) -> sweep_kind.Config:
    return load_experiment(SMOKE, list(overrides))
