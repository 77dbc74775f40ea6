"""``kind: if_adapter``: plan wiring, step-ID stability, bad input (exit 2), a local smoke run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.exec.driver import artifact_dir
from runner.experiments import if_adapter
from runner.plan import PlanContext
from runner.results.store import ResultStore
from tasks.errors import ConfigError
from tests.tables import differences, table_rows

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "if_adapter.yaml"


def steps(overrides=()):
    cfg = load_experiment(SMOKE, list(overrides))
    return if_adapter.plan(cfg, PlanContext(SMOKE, "r", "a"))


def ids(overrides=()):
    return [s.step_id for s in steps(overrides)]


def by_label(plan):
    return {s.label.split(":", 1)[1] if ":" in s.label else "fingerprint": s for s in plan}


def test_plan_wires_the_whole_protocol():
    plan = steps()
    s = by_label(plan)
    fp = s["fingerprint"]
    assert plan[0] is fp and fp.executor == "train" and fp.result_kind == "train_run"
    assert fp.fn == "tasks.fingerprint.adapter.train:fingerprint_if_adapter"
    assert "num_workers" not in fp.config["train"] and fp.config["adapter"]["dim"] == 4
    assert (
        s["publish"].fn
        == s["vanilla"].fn
        == s["tuned_publish:gsm_symbolic"].fn
        == "tasks.verify.step:verify_step"
    )
    assert s["publish"].inputs == {"fingerprint": fp, "model": fp}
    assert s["vanilla"].inputs == {"fingerprint": fp}
    assert s["vanilla"].config["model"] == "tiny-llama"
    ft = s["finetune:gsm_symbolic"]
    assert ft.fn == "tasks.finetune.step:finetune_step" and ft.inputs == {"model": fp}
    assert ft.executor == "train" and ft.config["model_step_id"] == fp.step_id
    assert s["tuned_publish:gsm_symbolic"].inputs == {"fingerprint": fp, "model": ft}
    for cond in ("tuned_w_adapter", "tuned_direct"):
        step = s[f"{cond}:gsm_symbolic"]
        assert step.fn == "tasks.fingerprint.adapter.verify:verify_adapter_step"
        assert step.inputs == {"fingerprint": fp, "suspect": ft}
        assert step.config["condition"] == cond
        assert step.config["verify"]["model_step_id"] == ft.step_id
    assert s["publish_w_adapter"].inputs == {"fingerprint": fp}
    assert s["vanilla_w_adapter"].config["suspect"] == "tiny-llama"
    evals = [x for x in plan if x.result_kind == "eval"]
    assert len(evals) == 4 and {x.config["suite"] for x in evals} == {"perplexity", "math"}
    assert sum(x.inputs == {"model": fp} for x in evals) == 2
    assert {x.result_kind for x in plan} == set(if_adapter.RESULT_KINDS)


def test_several_user_datasets_each_get_a_fine_tune_and_three_conditions():
    extra = [
        "finetune=[{data: gsm_symbolic, n_rows: 8, max_steps: 2, max_length: 256}, "
        "{data: 'reasoning_gym:chain_sum', n_rows: 8, max_steps: 1, max_length: 128}]"
    ]
    plan = steps(extra)
    fts = [x for x in plan if x.kind == "finetune"]
    assert len(fts) == 2 and fts[0].step_id != fts[1].step_id
    post = [x for x in plan if x.result_kind == "verification" and "tuned" in x.label]
    assert len(post) == 6 and len(plan) == len(steps()) + 4


def test_step_ids_are_stable_and_ignore_resources():
    base = ids()
    assert ids() == base
    assert (
        ids(
            [
                "train.cpus_per_worker=2",
                "verify.num_cpus=2",
                "eval.num_cpus=2",
                "finetune.0.cpus_per_worker=2",
            ]
        )
        == base
    )


def test_a_change_reruns_exactly_its_dependants():
    base = dict(zip([s.label for s in steps()], ids(), strict=True))

    def changed(overrides):
        now = dict(zip([s.label for s in steps(overrides)], ids(overrides), strict=True))
        return {label for label in base if base[label] != now[label]}

    assert changed(["finetune.0.lr=1e-4"]) == {
        f"smoke_if_adapter:{x}"
        for x in (
            "finetune:gsm_symbolic",
            "tuned_publish:gsm_symbolic",
            "tuned_w_adapter:gsm_symbolic",
            "tuned_direct:gsm_symbolic",
        )
    }
    assert changed(["adapter.dim=8"]) == set(base) - {
        "smoke_if_adapter:perplexity:vanilla",
        "smoke_if_adapter:math:vanilla",
    }


def test_config_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="dimm"):
        load_experiment(SMOKE, ["adapter.dimm=8"])
    with pytest.raises(ConfigError, match="ZeRO-3"):
        load_experiment(SMOKE, ["train.strategy=deepspeed_zero3"])
    with pytest.raises(ConfigError, match="conditions"):
        load_experiment(SMOKE, ["verify.conditions=[publish, tuned_sideways]"])


def test_misspelled_key_exits_2_via_cli(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("n_unseen_keys:", "n_unseen_key:"))
    out = cli(["validate", bad])
    assert out.exit_code == 2 and "n_unseen_key" in out.output and "\n" not in out.output.strip()


@pytest.fixture(scope="module")
def smoke_run(tiny_llama, tmp_path_factory, cli):
    """The smoke protocol run once locally: (results, artifacts, CLI output)."""
    root = tmp_path_factory.mktemp("smoke")
    res, art = root / "r", root / "a"
    out = cli(["run", SMOKE, "--local", "--results", res, "--artifacts", art])
    return res, art, out


def test_smoke_runs_locally_prints_the_table_and_resumes(smoke_run, cli):
    res, art, out = smoke_run
    assert out.exit_code == 0, out.output
    for word in (
        "FSR_pre",
        "FSR_post",
        "publish_w_adapter",
        "tuned_w_adapter",
        "tuned_direct",
        "vanilla_w_adapter",
        "unseen keys",
        "perplexity",
        "delta",
    ):
        assert word in out.output, word
    store = ResultStore(res)
    ver = store.read("verification").to_pylist()
    assert {r["condition"] for r in ver} == {*if_adapter.PRE, *if_adapter.POST}
    assert len({r["fingerprint_id"] for r in ver}) == 1
    assert {r["purpose"] for r in store.read("train_run").to_pylist()} == {
        "fingerprint",
        "finetune",
    }
    assert store.read("eval").num_rows == 6
    again = cli(["run", SMOKE, "--local", "--results", res, "--artifacts", art])
    assert again.exit_code == 0 and store.read("verification").num_rows == len(ver)


def rerun_with(cli, smoke_run, tmp_path, tamper, condition="publish_w_adapter"):
    """Copy the finished run, tamper with its adapter, verify one adapter condition again."""
    res, art, _ = smoke_run
    res2, art2 = tmp_path / "r", tmp_path / "a"
    shutil.copytree(art, art2)
    shutil.copytree(res, res2)
    fp = artifact_dir(art2, steps()[0])
    tamper(fp / "private" / "adapter")
    step = next(s for s in steps() if s.label.split(":")[1:2] == [condition])
    (res2 / "verification" / f"{step.step_id}.parquet").unlink()  # make the step run again
    before = ResultStore(res2).read("verification").num_rows
    out = cli(["run", SMOKE, "--local", "--results", res2, "--artifacts", art2])
    return out, ResultStore(res2).read("verification").num_rows, before


def edit_meta(**changes):
    def tamper(folder: Path) -> None:
        path = folder / "adapter.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return tamper


def test_adapter_with_another_hidden_size_exits_2(smoke_run, tmp_path, cli):
    out, after, before = rerun_with(cli, smoke_run, tmp_path, edit_meta(hidden_size=32))
    assert out.exit_code == 2 and "hidden size 32" in out.error
    assert after == before  # nothing lost, nothing half-written


def test_adapter_with_another_token_set_exits_2(smoke_run, tmp_path, cli):
    out, after, before = rerun_with(cli, smoke_run, tmp_path, edit_meta(token_strings_sha256="0"))
    assert out.exit_code == 2 and "token set" in out.output and after == before
    out, _, _ = rerun_with(
        cli, smoke_run, tmp_path / "v", edit_meta(vocab_size=50), condition="tuned_w_adapter"
    )
    assert out.exit_code == 2 and "vocabulary" in out.output


def test_adapter_condition_without_the_adapter_exits_2(smoke_run, tmp_path, cli):
    out, after, before = rerun_with(cli, smoke_run, tmp_path, shutil.rmtree)
    assert out.exit_code == 2 and "without its adapter" in out.output and after == before


def test_bundled_if_adapter_configs_validate(cli):
    out = cli(["validate", ROOT / "configs" / "if_adapter.yaml", SMOKE])
    assert out.exit_code == 0, out.output


def test_smoke_on_ray_gives_the_local_tables_and_ddp_trains_the_adapter(
    ray_session, smoke_run, tmp_path
):
    """Local-vs-Ray equality (tests/tables.py) on the smoke config, then the fingerprint step on
    2 DDP workers."""
    from runner.exec.run import run_experiment

    local_res, local_art, _ = smoke_run
    out = run_experiment(
        SMOKE, results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"), log=lambda _: None
    )
    assert out.summary.ok
    for kind in ("train_run", "verification", "eval"):
        diff = differences(
            table_rows(tmp_path / "r", kind, tmp_path / "a"), table_rows(local_res, kind, local_art)
        )
        assert not diff, (kind, diff[:5])
    two = run_experiment(
        SMOKE,
        [
            "train.num_workers=2",
            "train.total_batch_size=4",
            "train.per_device_batch_size=2",
            "verify.conditions=[]",
            "finetune=[]",
            "eval.models=[]",
        ],
        results=str(tmp_path / "r2"),
        artifacts=str(tmp_path / "a2"),
        log=lambda _: None,
    )
    (row,) = ResultStore(str(tmp_path / "r2")).read("train_run").to_pylist()
    assert two.summary.ok and row["num_workers"] == 2 and row["strategy"] == "ddp"
    fp = artifact_dir(tmp_path / "a2", two.plan.steps[0])
    assert (fp / "private" / "adapter" / "adapter.safetensors").is_file()
    assert (fp / "published" / "model.safetensors").is_file()
