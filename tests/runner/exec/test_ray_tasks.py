"""The Ray executor: same tables as the local reference, bad input across Ray, shared paths.

All Ray tests share the session's local instance (``ray_session`` in conftest.py).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

from runner import experiments
from runner.exec.ray_tasks import RemoteBadInput, check_shared_paths, unwrap
from runner.exec.run import run_experiment
from runner.results.store import ResultStore
from tasks.errors import DataError, StoreError
from tests.tables import differences, table_rows

ROOT = Path(__file__).resolve().parents[3]
SMOKE_IF_SFT = ROOT / "configs" / "smoke" / "if_sft.yaml"
# The local-vs-Ray equality leaves out when and where a step ran; train_run rows also carry
# measured wall time and peak memory, which no two runs share whatever the executor.


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(experiments.KINDS, "toy", "tests.toy_kind")

    def write(text: str, name: str = "toy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def quiet(_line: str) -> None:
    pass


def cli(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``fprun ARGS`` through the real entry point; returns (exit code, stderr)."""
    from runner.cli import main

    monkeypatch.setattr(sys, "argv", ["fprun", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_toy_kind_gives_the_local_tables_on_ray_and_resumes(ray_session, toy, tmp_path):
    cfg = toy("kind: toy\nvalues: [1, 2, 3]\n")
    art = str(tmp_path / "a")
    local = run_experiment(cfg, results=str(tmp_path / "rl"), artifacts=art, local=True, log=quiet)
    on_ray = run_experiment(cfg, results=str(tmp_path / "rr"), artifacts=art, log=quiet)
    assert local.summary.ok and on_ray.summary.ok and len(on_ray.summary.done) == 4
    assert not differences(table_rows(tmp_path / "rr", "eval"), table_rows(tmp_path / "rl", "eval"))
    again = run_experiment(cfg, results=str(tmp_path / "rr"), artifacts=art, log=quiet)
    assert again.summary.done == [] and len(again.summary.skipped) == 4


def test_failed_ray_step_blocks_dependants_and_keeps_other_results(ray_session, toy, tmp_path):
    cfg = toy("kind: toy\nvalues: [1, 2]\nfail_on: 2\n")
    res = run_experiment(cfg, results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"), log=quiet)
    assert len(res.summary.done) == 1 and len(res.summary.blocked) == 1
    assert "toy failure" in next(iter(res.summary.failed.values()))


def test_bad_input_in_a_ray_worker_is_the_same_family_and_exits_2(
    ray_session, toy, tmp_path, capsys, monkeypatch
):
    cfg = toy("kind: toy\nvalues: [1, 5]\nbad_input_on: 5\n")
    with pytest.raises(DataError, match="toy dataset is empty; pass a non-empty dataset"):
        run_experiment(cfg, results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"), log=quiet)
    code, err = cli(
        ["run", cfg, "--results", tmp_path / "r2", "--artifacts", tmp_path / "a"],
        capsys,
        monkeypatch,
    )
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and errors == ["error: toy dataset is empty; pass a non-empty dataset"]


def test_relative_results_on_a_multi_node_cluster_exit_2_before_any_step(
    ray_session, toy, tmp_path, capsys, monkeypatch
):
    cfg = toy("kind: toy\nvalues: [1]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("runner.exec.ray_tasks.alive_nodes", lambda: 3)  # simulates 3 nodes
    code, err = cli(
        ["run", cfg, "--results", "res", "--artifacts", tmp_path / "a"], capsys, monkeypatch
    )
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--results res is a relative path" in errors[0]
    assert not (tmp_path / "res").exists() and not (tmp_path / "a").exists()
    assert ray_session.is_initialized()  # the session's instance was not ours to stop


def test_shared_path_rule():
    job = Path("/tmp/ray/session_x/runtime_resources/working_dir_files/pkg")
    check_shared_paths("res", "art", n_nodes=1, job_dir=None)  # one node: anything goes
    check_shared_paths("s3://bucket/res", "/mnt/shared/art", n_nodes=4, job_dir=job)
    with pytest.raises(StoreError, match="--artifacts art is a relative path"):
        check_shared_paths("/mnt/shared/res", "art", n_nodes=2, job_dir=None)
    with pytest.raises(StoreError, match="inside the job's uploaded working dir"):
        check_shared_paths(str(job / "res"), "/mnt/shared/art", n_nodes=2, job_dir=job)


def test_bad_input_carrier_survives_pickling_and_restores_the_family():
    err = DataError("the dataset is empty", "pass a non-empty one")
    carrier = RemoteBadInput(type(err).__module__, type(err).__qualname__, err.problem, err.fix)
    back = unwrap(pickle.loads(pickle.dumps(carrier)))
    assert type(back) is DataError and back.one_line() == err.one_line()
    plain = RuntimeError("boom")
    assert unwrap(plain) is plain


@pytest.mark.skipif(not SMOKE_IF_SFT.exists(), reason="configs/smoke/if_sft.yaml not there yet")
def test_if_sft_smoke_gives_the_local_tables_on_ray(ray_session, tmp_path):
    art = str(tmp_path / "a")
    on_ray = run_experiment(SMOKE_IF_SFT, results=str(tmp_path / "rr"), artifacts=art, log=quiet)
    local = run_experiment(
        SMOKE_IF_SFT, results=str(tmp_path / "rl"), artifacts=art, local=True, log=quiet
    )
    assert on_ray.summary.ok and local.summary.ok and len(on_ray.summary.done) == 3
    for kind in ("train_run", "verification"):
        ray_rows, local_rows = table_rows(tmp_path / "rr", kind), table_rows(tmp_path / "rl", kind)
        assert ray_rows and not differences(ray_rows, local_rows), kind
    device = ResultStore(str(tmp_path / "rr")).read("train_run").column("device").to_pylist()
    assert device[0].startswith("ray-train:1x")
    again = run_experiment(SMOKE_IF_SFT, results=str(tmp_path / "rr"), artifacts=art, log=quiet)
    assert again.summary.done == [] and len(again.summary.skipped) == 3


def test_actor_steps_run_on_the_shared_pool_and_close_frees_it(ray_session, tmp_path):
    from runner.exec import actors
    from runner.exec.driver import StepSpec
    from runner.exec.ray_tasks import RayBackend

    def run(backend: RayBackend, executor: str, **config):
        spec = StepSpec(
            step_id=f"{executor}{len(config)}",
            kind="toy_make",
            fn="tests.toy_kind:make",
            config=config,
            inputs={},
            executor=executor,
            out_dir=str(tmp_path / "a" / executor / str(len(config))),
        )
        return backend.wait([backend.submit(spec)])[1]

    backend = RayBackend(results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"))
    try:
        on_actor, on_task = run(backend, "actor", value=7.0), run(backend, "task", value=7.0)
        assert len(actors._POOLS) == 1 and on_actor.rows == on_task.rows
        bad = run(backend, "actor", value=5.0, bad_input_on=5.0)
        assert type(bad) is DataError
    finally:
        backend.close()
    assert actors._POOLS == {} and ray_session.is_initialized()
