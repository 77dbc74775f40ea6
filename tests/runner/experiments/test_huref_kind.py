"""The huref kind (plan, IDs, smoke run), the ``fprun huref`` verbs, bad input, the actor pool."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from runner.config import load_experiment
from runner.exec.run import run_experiment
from runner.experiments import huref as kind
from runner.plan import PlanContext
from runner.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "huref.yaml"


def cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run ``fprun ARGS`` through the real entry point (one-line errors, exit codes)."""
    from runner.cli import main

    monkeypatch.setattr(sys, "argv", ["fprun", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def _plan(tmp_path, overrides=()):
    cfg = load_experiment(SMOKE, list(overrides))
    ctx = PlanContext(config_path=SMOKE, results=str(tmp_path / "r"), artifacts=str(tmp_path))
    return kind.plan(cfg, ctx)


def test_plan_ids_are_stable_and_follow_the_config(tmp_path):
    a, b = _plan(tmp_path), _plan(tmp_path)

    def ids(steps):
        return [s.step_id for s in steps] + sorted(
            d.step_id for s in steps for d in s.inputs.values()
        )

    assert ids(a) == ids(b)
    compare = a[0]
    assert compare.kind == "huref_compare" and len(compare.inputs) == 5
    assert {s.kind for s in compare.inputs.values()} == {"huref_extract"}
    k64 = _plan(tmp_path, ["k=64"])[0]
    assert k64.step_id != compare.step_id
    # derive steps do not depend on k: shared between both plans
    derive = lambda c: {d.step_id for s in c.inputs.values() for d in s.inputs.values()}  # noqa
    assert derive(k64) == derive(compare)
    # resources are not part of any ID
    assert _plan(tmp_path, ["resources.actors=2"])[0].step_id == compare.step_id


def test_duplicate_names_and_missing_source_are_config_errors(tmp_path):
    from tasks.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: huref\nmodels: [{ref: tiny-llama}, {ref: tiny-llama}]\n")
    with pytest.raises(ConfigError, match="repeat"):
        load_experiment(bad)
    bad.write_text("kind: huref\nmodels: [{name: a}, {ref: tiny-llama}]\n")
    with pytest.raises(ConfigError, match="exactly one of ref"):
        load_experiment(bad)


def test_smoke_config_runs_locally_and_resumes(tmp_path, fprun_cache):
    res, art = str(tmp_path / "results"), str(tmp_path / "artifacts")
    out = run_experiment(SMOKE, results=res, artifacts=art, local=True, log=lambda _: None)
    assert out.summary.ok and "ICS" in out.text
    rows = {
        (r["model_a"], r["model_b"]): r for r in ResultStore(res).read("similarity").to_pylist()
    }
    assert len(rows) == 10
    assert rows[("tiny-llama", "tiny-llama+noise0.1")]["ics"] > 90
    assert rows[("tiny-llama", "tiny-llama-permuted-rotated")]["ics"] > 99.99
    assert abs(rows[("tiny-llama", "tiny-llama-seed1")]["ics"]) < 10
    assert rows[("tiny-llama", "tiny-neox")]["pcs"] is None
    assert len(ResultStore(res).read("huref").to_pylist()) == 5
    again = run_experiment(SMOKE, results=res, artifacts=art, local=True, log=lambda _: None)
    assert not again.summary.done and len(again.summary.skipped) == len(again.plan)


def test_cli_extract_then_compare(tmp_path, capsys, monkeypatch, fprun_cache):
    common = ["--results", str(tmp_path / "r"), "--artifacts", str(tmp_path / "a")]
    for name in ("tiny-llama", "tiny-llama:seed=1"):
        code, _, err = cli(
            [
                "huref",
                "extract",
                "--model",
                name,
                "--k",
                "64",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / name.replace(":", "_")),
                *common,
            ],
            capsys,
            monkeypatch,
        )
        assert code == 0, err
    code, out, err = cli(
        [
            "huref",
            "compare",
            str(tmp_path / "tiny-llama"),
            str(tmp_path / "tiny-llama_seed=1"),
            "--out",
            str(tmp_path / "cmp"),
            *common,
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert "ICS" in out and (tmp_path / "cmp" / "ics.csv").is_file()
    assert len(ResultStore(str(tmp_path / "r")).read("similarity")) == 1


def _one_line_exit_2(code: int, err: str, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_cli_bad_inputs_exit_2(tmp_path, capsys, monkeypatch, tiny_llama):
    from safetensors.torch import load_file, save_file

    common = ["--results", str(tmp_path / "r"), "--artifacts", str(tmp_path / "a")]
    # K larger than the vocabulary
    code, _, err = cli(
        ["huref", "extract", "--model", "tiny-llama", "--k", "5000", *common], capsys, monkeypatch
    )
    _one_line_exit_2(code, err, "exceeds")
    # a checkpoint with a missing layer
    shutil.copytree(tiny_llama, tmp_path / "cut")
    sd = load_file(tiny_llama / "model.safetensors")
    save_file(
        {k: v for k, v in sd.items() if "layers.1." not in k},
        tmp_path / "cut" / "model.safetensors",
        metadata={"format": "pt"},
    )
    code, _, err = cli(
        ["huref", "extract", "--model", str(tmp_path / "cut"), "--k", "32", *common],
        capsys,
        monkeypatch,
    )
    _one_line_exit_2(code, err, "lacks layer(s) [1]")
    # a corrupt (truncated) safetensors file
    shutil.copytree(tiny_llama, tmp_path / "corrupt")
    f = tmp_path / "corrupt" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:5000])
    code, _, err = cli(
        ["huref", "extract", "--model", str(tmp_path / "corrupt"), "--k", "32", *common],
        capsys,
        monkeypatch,
    )
    _one_line_exit_2(code, err, "truncated or corrupt")
    # comparing invariants of different K
    for k in ("32", "48"):
        assert (
            cli(
                [
                    "huref",
                    "extract",
                    "--model",
                    "tiny-llama",
                    "--k",
                    k,
                    "--out",
                    str(tmp_path / f"k{k}"),
                    *common,
                ],
                capsys,
                monkeypatch,
            )[0]
            == 0
        )
    code, _, err = cli(
        ["huref", "compare", str(tmp_path / "k32"), str(tmp_path / "k48"), *common],
        capsys,
        monkeypatch,
    )
    _one_line_exit_2(code, err, "different k")
    # a folder without invariants
    code, _, err = cli(
        ["huref", "compare", str(tmp_path / "k32"), str(tmp_path), *common], capsys, monkeypatch
    )
    _one_line_exit_2(code, err, "holds no HuRef invariants")
    # no similarity rows were written by the failed compares
    assert len(ResultStore(str(tmp_path / "r")).read("similarity")) == 0


def test_actor_pool_extracts_many_models_with_one_token_selection(
    ray_session, tmp_path, fprun_cache, tiny_llama, tiny_llama_unrelated, tiny_neox
):
    """Three models sharing a tokenizer on two actors: rows equal to in-process extraction."""
    from runner.exec.actors import ExtractPool
    from runner.exec.driver import StepSpec, run_step_inline

    specs = []
    for i, model in enumerate((tiny_llama, tiny_llama_unrelated, tiny_neox)):
        config = {"k": 64, "device": "cpu", "tokens": {"strategy": "vocab_rank"}}
        specs.append(
            StepSpec(
                step_id=f"s{i}",
                kind="huref_extract",
                fn="tasks.huref.extract:extract_step",
                config=config,
                inputs={"model": str(model)},
                out_dir=str(tmp_path / f"o{i}"),
            )
        )
    pool = ExtractPool(2, num_cpus=1)
    try:
        outs = pool.map(specs)
        stats = pool.stats()
    finally:
        pool.close()
    assert sum(s["calls"] for s in stats) == 3 and all(s["token_sets"] <= 1 for s in stats)
    local = run_step_inline(
        StepSpec(
            step_id="x",
            kind="huref_extract",
            fn="tasks.huref.extract:extract_step",
            config=specs[0].config,
            inputs=specs[0].inputs,
            out_dir=str(tmp_path / "local"),
        )
    )
    drop = ("seconds", "artifact")
    assert {k: v for k, v in outs[0].rows[0].items() if k not in drop} == {
        k: v for k, v in local.rows[0].items() if k not in drop
    }
    ours, theirs = (
        load_file(str(d / "invariants.safetensors"))["invariants"]
        for d in (Path(specs[0].out_dir), tmp_path / "local")
    )
    # an actor has 1 CPU, the local run 2: BLAS kernels may sum in another order (test below)
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())


def test_actor_pool_carries_bad_input_back(ray_session, tmp_path, fprun_cache, tiny_llama):
    from runner.exec.actors import ExtractPool
    from runner.exec.driver import StepSpec
    from tasks.errors import ConfigError

    spec = StepSpec(
        step_id="bad",
        kind="huref_extract",
        fn="tasks.huref.extract:extract_step",
        config={"k": 5000, "device": "cpu"},
        inputs={"model": str(tiny_llama)},
        out_dir=str(tmp_path / "bad"),
    )
    pool = ExtractPool(1, num_cpus=1)
    try:
        with pytest.raises(ConfigError, match="exceeds"):
            pool.map([spec])
    finally:
        pool.close()


def test_smoke_on_ray_with_actor_pool_equals_local(ray_session, tmp_path, monkeypatch, fprun_cache):
    """The production RayBackend routes executor "actor" steps to the shared pool (spied on, not
    replaced) and gives the local tables."""
    from runner.exec import actors

    routed = []
    real = actors.submit_step

    def spy(spec):
        routed.append(spec.kind)
        return real(spec)

    monkeypatch.setattr(actors, "submit_step", spy)
    tables = {}
    for mode in ("local", "ray"):
        res = str(tmp_path / mode / "results")
        out = run_experiment(
            SMOKE,
            ["resources.actors=2"],
            results=res,
            artifacts=str(tmp_path / mode / "artifacts"),
            local=mode == "local",
            log=lambda _: None,
        )
        assert out.summary.ok
        drop = {"started_at", "finished_at", "device", "seconds", "artifact"}
        tables[mode] = {
            kind: sorted(
                (
                    {k: v for k, v in r.items() if k not in drop}
                    for r in ResultStore(res).read(kind).to_pylist()
                ),
                key=lambda r: r["run_key"],
            )
            for kind in ("huref", "similarity")
        }
    # ICS to fp32 rounding: the actors run with 1 CPU each and the local run with 2, and BLAS
    # kernels (OpenBLAS's Haswell ones, which it picks on AMD Zen 5) may then sum in another
    # order; every other column is exact
    for table, rows in tables["local"].items():
        assert len(rows) == len(tables["ray"][table])
        for a, b in zip(rows, tables["ray"][table], strict=True):
            assert a.keys() == b.keys()
            assert {k: v for k, v in a.items() if k != "ics"} == {
                k: v for k, v in b.items() if k != "ics"
            }
            assert (a.get("ics") is None) == (b.get("ics") is None)
            if a.get("ics") is not None:
                assert math.isclose(a["ics"], b["ics"], abs_tol=1e-4)
    assert len(tables["ray"]["similarity"]) == 10
    assert routed.count("huref_extract") == 5 and set(routed) == {"huref_extract"}


def test_pool_size_leaves_a_cpu_for_ordinary_tasks():
    from runner.exec.pool_sizing import pool_size
    from runner.plan import Resources

    assert pool_size(Resources(num_cpus=1, num_workers=4), {"CPU": 2.0}) == 1
    assert pool_size(Resources(num_cpus=1, num_workers=4), {"CPU": 16.0}) == 4
    assert pool_size(Resources(num_cpus=1, num_gpus=0.5, num_workers=8), {"CPU": 64, "GPU": 2}) == 4
