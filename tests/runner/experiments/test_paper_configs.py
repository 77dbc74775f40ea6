"""Every paper-scale recipe under configs/paper/ plans anywhere: ``--dry-run`` gives its steps with
GPU resources on the heavy ones (training, generation, merge cells, and HuRef extraction in the
HuRef recipe; a merge grid's parents are extracted on CPU, a streaming read); nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.exec.run import run_experiment

PAPER = sorted((Path(__file__).resolve().parents[3] / "configs" / "paper").glob("*.yaml"))
HEAVY = {"if_sft", "if_adapter", "finetune", "merge_cell", "verify", "eval", "provenance_pair"}


def test_there_is_a_paper_recipe_per_method():
    names = {p.stem for p in PAPER}
    assert {"if_sft_7b", "huref_7b", "mergeguard_7b"} <= names


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipe_dry_runs_with_gpu_resources(config, tmp_path):
    out = run_experiment(
        config, dry_run=True, results=str(tmp_path / "r"), artifacts=str(tmp_path / "a")
    )
    assert out.summary is None and out.plan
    heavy = [s for s in out.plan if s.kind in HEAVY]
    if config.stem.startswith("huref"):
        heavy = [s for s in out.plan if s.kind == "huref_extract"]
    assert heavy, [s.kind for s in out.plan]
    for step in heavy:
        res = step.resources
        assert res.use_gpu or res.num_gpus > 0, (step.kind, res)
    assert "step(s)" in out.text  # the plan table's closing line
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()
