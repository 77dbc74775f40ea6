"""``kind: mergeguard``: plan wiring, canonical keys, the disk budget, bad input (exit 2), a failed
cell as a row, and a killed driver resumed without duplicates (tiny models, in-process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.exec.run import run_experiment
from runner.experiments import mergeguard
from runner.plan import PlanContext
from runner.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "mergeguard.yaml"
PAPER = ROOT / "configs" / "paper" / "mergeguard_7b.yaml"
# A small grid: two good cells around one that fails inside mergekit (della: density - epsilon
# must stay above 0), no templates, no baselines.
SMALL = [
    "pairs.0.templates=[]",
    "pairs.0.baselines=false",
    "pairs.0.grid=[{methods: [task_arithmetic], weights: [0.3, 0.7]},"
    " {methods: [della], weights: 0.5, densities: 0.1}, {methods: [linear], weights: 0.5}]",
]


def plan(path=SMOKE, overrides=(), results="r", artifacts="a"):
    cfg = load_experiment(path, list(overrides))
    return cfg, mergeguard.plan(cfg, PlanContext(Path(path), results, artifacts))


def test_plan_shares_upstream_steps_and_keys_cells_canonically():
    cfg, steps = plan()
    cells = [s for s in steps if s.kind == "merge_cell"]
    assert {s.inputs["fingerprint"].kind for s in cells} == {"if_sft"}
    fp = cells[0].inputs["fingerprint"]
    from runner.experiments import if_sft

    sft = load_experiment(ROOT / "configs" / "smoke" / "if_sft.yaml")
    assert fp.step_id == if_sft.plan(sft, PlanContext(SMOKE, "r", "a"))[0].step_id
    assert [s.config.get("parent") for s in cells[:3]] == ["fingerprinted", "expert", "base"]
    assert all(s.executor == "actor" and s.estimate.disk_gb > 0 for s in cells)
    # 0.1 + 0.2 is the template's 0.3? no: task.yml is 0.7/0.7; a 0.3/0.7 cell spelled two ways
    _, again = plan(overrides=["pairs.0.grid.0.weights=[0.30000000000000004, 0.7]"])
    assert {s.step_id for s in steps} == {s.step_id for s in again}
    _, kept = plan(overrides=["keep=true"])
    assert {s.step_id for s in steps} == {s.step_id for s in kept}  # keep is not in the key


def test_over_budget_grid_exits_2_before_anything(cli, tmp_path):
    res = cli(
        [
            "run",
            SMOKE,
            "--local",
            "--set",
            "disk.budget_gb=0.0001",
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert res.exit_code == 2 and "disk.budget_gb is 0.0001" in res.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


def test_merge_verb_bad_input_exits_2_without_network(
    cli, tmp_path, tiny_llama, tiny_neox, monkeypatch
):
    def no_network(*args, **kwargs):
        raise AssertionError("a network call was made")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    common = ["--results", tmp_path / "r", "--artifacts", tmp_path / "a"]
    args = ["merge", ROOT / "configs" / "merges" / "ties.yml", "--out", tmp_path / "o"]
    res = cli(
        [
            *args,
            "--model",
            f"fingerprinted={tmp_path / 'missing'}",
            "--model",
            f"expert={tiny_llama}",
            "--model",
            f"base={tiny_llama}",
            *common,
        ]
    )
    assert res.exit_code == 2 and "does not exist" in res.stderr
    res = cli(
        [
            *args,
            "--model",
            f"fingerprinted={tiny_neox}",
            "--model",
            f"expert={tiny_llama}",
            "--model",
            f"base={tiny_llama}",
            *common,
        ]
    )
    assert res.exit_code == 2 and "GPTNeoX" in res.stderr
    res = cli([*args, "--model", f"fingerprinted={tiny_llama}", *common])
    assert res.exit_code == 2 and "--model expert=REF" in res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_paper_config_dry_run_shows_plan_disk_and_actor_layout(tmp_path):
    out = run_experiment(
        PAPER, dry_run=True, results=str(tmp_path / "r"), artifacts=str(tmp_path / "a")
    )
    assert out.summary is None and "merge_cell" in out.text
    cells = [s for s in out.plan if s.kind == "merge_cell"]
    assert len(cells) == 285 and all(s.executor == "actor" for s in cells)
    assert cells[0].resources.num_gpus == 1 and cells[0].resources.num_workers == 8
    assert cells[0].estimate.disk_gb == pytest.approx(27.35, abs=0.01)
    cfg = load_experiment(PAPER)
    notes = mergeguard.dry_run_notes(
        cfg, PlanContext(PAPER, str(tmp_path / "r"), str(tmp_path / "a"))
    )
    assert "8 actor(s) per node" in notes and "1 GPU" in notes
    assert "27.35 GB scratch per cell" in notes and "budget 2000 GB" in notes
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory, fprun_cache, tiny_llama) -> Path:
    """Results/artifacts where the grid's fingerprint and expert steps are already done: stand-ins
    (a fingerprint it never learned, a perturbed base) written as those steps' outputs, so the
    tests run the grid itself in seconds."""
    from runner.exec.driver import artifact_dir
    from runner.results.records import Outcome, write_result
    from runner.results.store import now
    from tests.tasks.merge.conftest import fake_fingerprint, perturbed_copy

    root = tmp_path_factory.mktemp("mergeguard")
    cfg = load_experiment(SMOKE, SMALL)
    steps = mergeguard.plan(cfg, PlanContext(SMOKE, str(root / "r"), str(root / "a")))
    store = ResultStore(root / "r")
    for step in {d.step_id: d for s in steps for d in s.inputs.values()}.values():
        out = artifact_dir(root / "a", step)
        if step.kind == "if_sft":
            fake_fingerprint(out, perturbed_copy(tiny_llama, root / "fp-model", seed=1))
        elif step.kind == "finetune":
            perturbed_copy(tiny_llama, out, seed=2)
        else:
            continue
        row = {"discriminator": "final", "purpose": step.kind, "dataset": "stand-in"}
        write_result(store, step, Outcome([row], now(), now(), "cpu"))
    return root


def test_failed_cell_is_a_row_and_the_grid_goes_on(grid_root, tmp_path):
    import shutil

    shutil.copytree(grid_root, tmp_path / "g")
    res, art = str(tmp_path / "g" / "r"), str(tmp_path / "g" / "a")
    out = run_experiment(SMOKE, SMALL, results=res, artifacts=art, local=True, log=lambda _: None)
    assert out.summary.ok  # a failed merge is a finished cell, not a failed step
    rows = ResultStore(res).read("merge_cell").to_pylist()
    assert sorted(r["status"] for r in rows) == ["failed", "ok", "ok", "ok"]
    bad = next(r for r in rows if r["status"] == "failed")
    assert bad["merge_method"] == "della" and "epsilon" in bad["error"].lower()
    assert "FAILED" in out.text and "plot: " in out.text
    cfg = load_experiment(SMOKE, SMALL)
    lines = mergeguard.headline(cfg, ResultStore(res), PlanContext(SMOKE, res, art))
    assert len(lines) == 3 and all(v.startswith("FSR ") for _, v, _ in lines)  # the ok cells


def test_killed_driver_resumes_without_duplicates(grid_root, tmp_path):
    import shutil

    shutil.copytree(grid_root, tmp_path / "g")
    res, art = tmp_path / "g" / "r", tmp_path / "g" / "a"
    cmd = [
        str(Path(sys.executable).with_name("fprun")),
        "run",
        str(SMOKE),
        "--local",
        "--results",
        str(res),
        "--artifacts",
        str(art),
    ]
    for o in SMALL:
        cmd += ["--set", o]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    cells = res / "merge_cell"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(cells.glob("*.parquet")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started
    proc.wait()
    before = {p.name for p in cells.glob("*.parquet")}
    assert 1 <= len(before) < 4, "the driver finished before it could be killed"
    lines: list[str] = []
    out = run_experiment(
        SMOKE, SMALL, results=str(res), artifacts=str(art), local=True, log=lines.append
    )
    assert out.summary.ok
    skipped = [ln for ln in lines if ln.startswith("skip") and "merge_cell" in ln]
    assert len(skipped) == len(before)
    rows = ResultStore(res).read("merge_cell").to_pylist()
    assert len(rows) == 4 and len({r["run_key"] for r in rows}) == 4
