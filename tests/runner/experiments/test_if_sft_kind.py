"""``kind: if_sft``: plan wiring, step-ID stability, bad input (exit 2), and a local smoke run."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.experiments import if_sft
from runner.plan import PlanContext
from runner.results.store import ResultStore
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "if_sft.yaml"


def steps(overrides=()):
    cfg = load_experiment(SMOKE, list(overrides))
    return if_sft.plan(cfg, PlanContext(SMOKE, "r", "a"))


def ids(overrides=()):
    return [s.step_id for s in steps(overrides)]


def test_plan_wires_fingerprint_then_publish_and_vanilla():
    fp, publish, vanilla = steps()
    assert fp.fn == "tasks.fingerprint.sft:fingerprint_if_sft" and fp.executor == "train"
    assert fp.result_kind == "train_run" and fp.resources.num_workers == 1
    assert "num_workers" not in fp.config["train"] and fp.config["model"] == "tiny-llama"
    assert publish.fn == vanilla.fn == "tasks.verify.step:verify_step"
    assert publish.inputs == {"fingerprint": fp, "model": fp}
    assert publish.config["condition"] == "publish" and publish.config["model"] is None
    assert vanilla.inputs == {"fingerprint": fp}
    assert vanilla.config["condition"] == "vanilla" and vanilla.config["model"] == "tiny-llama"


def test_step_ids_are_stable_and_ignore_resources():
    base = ids()
    assert ids() == base
    assert ids(["train.num_workers=2", "train.cpus_per_worker=2"]) == base


def test_changed_lr_changes_only_the_fingerprint_step_and_its_dependants():
    base = ids()
    lr = ids(["train.lr=5e-4"])
    assert all(a != b for a, b in zip(base, lr, strict=True))  # both verify steps depend on it
    verify_only = ids(["verify.batch_size=8"])
    assert verify_only[0] == base[0] and verify_only[1:] != base[1:]


def test_config_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="lrr"):
        load_experiment(SMOKE, ["train.lrr=1e-4"])
    with pytest.raises(ConfigError, match="multiple of per_device_batch_size"):
        load_experiment(SMOKE, ["train.num_workers=3"])
    with pytest.raises(ConfigError, match="strategy"):
        steps(["train.strategy=deepspeed_zero9"])


def test_misspelled_key_exits_2_via_cli(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("n_unseen_keys:", "n_unseen_key:"))
    out = cli(["validate", bad])
    assert out.exit_code == 2 and "n_unseen_key" in out.output and "\n" not in out.output.strip()


def test_missing_model_path_exits_2_before_any_step(tmp_path, cli):
    res = tmp_path / "r"
    out = cli(
        [
            "run",
            SMOKE,
            "--local",
            "--set",
            "model=./no/such/model",
            "--results",
            res,
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert out.exit_code == 2 and "does not exist" in out.output
    assert not res.exists() and not (tmp_path / "a").exists()
    out = cli(
        [
            "fingerprint",
            "--method",
            "if_sft",
            "--model",
            "/no/such/model",
            "--out",
            tmp_path / "fp",
            "--local",
            "--results",
            res,
        ]
    )
    assert out.exit_code == 2 and not (tmp_path / "fp").exists()


def test_empty_dataset_exits_2_and_writes_no_rows(tmp_path, cli):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = tmp_path / "r"
    out = cli(
        [
            "run",
            SMOKE,
            "--local",
            "--set",
            f"data.source={empty}",
            "--results",
            res,
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert out.exit_code == 2 and "holds no rows" in out.output
    assert ResultStore(res).read("train_run").num_rows == 0


def test_smoke_runs_locally_and_resumes(tiny_llama, tmp_path, cli):
    res, art = tmp_path / "r", tmp_path / "a"
    args = ["run", SMOKE, "--local", "--results", res, "--artifacts", art]
    out = cli(args)
    assert out.exit_code == 0, out.output
    assert "publish" in out.output and "vanilla" in out.output and "unseen_keys" in out.output
    store = ResultStore(res)
    train = store.read("train_run").to_pylist()
    assert len(train) == 1 and train[0]["method"] == "if_sft"
    ver = store.read("verification").to_pylist()
    assert {r["condition"] for r in ver} == {"publish", "vanilla"}
    assert {r["fingerprint_id"] for r in ver} == {train[0]["fingerprint_id"]}
    fsr = {(r["condition"], r["probe_set"]): r["fsr"] for r in ver}
    # training and verification render prompts alike: the tiny model answers its keys
    assert fsr["publish", "fingerprint"] == 1.0 and fsr["vanilla", "fingerprint"] == 0.0
    again = cli(args)
    assert again.exit_code == 0 and store.read("verification").num_rows == len(ver)


def test_fingerprint_verb_places_the_folder_at_out(tiny_llama, tmp_path, cli):
    out_dir = tmp_path / "fp"
    out = cli(
        [
            "fingerprint",
            "--method",
            "if_sft",
            "--model",
            "tiny-llama",
            "--out",
            out_dir,
            "--no-verify",
            "--local",
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
            "--set",
            "data.n_normal=4",
            "--set",
            "data.key.max_parts=3",
            "--set",
            "data.key.min_parts=2",
            "--set",
            "train.max_steps=2",
        ]
    )
    assert out.exit_code == 0, out.output
    assert (out_dir / "published" / "model.safetensors").is_file()
    assert (out_dir / "private" / "keys.jsonl").is_file()
    again = cli(
        ["fingerprint", "--method", "if_sft", "--model", "tiny-llama", "--out", out_dir, "--local"]
    )
    assert again.exit_code == 2 and "already exists" in again.output


def test_bundled_if_sft_configs_validate(cli):
    out = cli(["validate", ROOT / "configs" / "if_sft.yaml", SMOKE, ROOT / "configs" / "demo.yaml"])
    assert out.exit_code == 0, out.output


PROTOCOL = ROOT / "configs" / "smoke" / "if_sft_protocol.yaml"


def test_protocol_plan_wires_user_models_and_shares_greedy_step_ids():
    cfg = load_experiment(PROTOCOL)
    plan = if_sft.plan(cfg, PlanContext(PROTOCOL, "r", "a"))
    by = {s.label.split(":", 1)[1]: s for s in plan[1:]}
    fp = plan[0]
    bos, ft, tuned = (
        by["sample_from_bos"],
        by["finetune:gsm_symbolic"],
        by["tuned_publish:gsm_symbolic"],
    )
    assert bos.config["probe_sets"] == [] and bos.config["bos_samples"] == 8
    assert bos.config["sampling"]["runs"] == 0 and bos.inputs["model"] is fp
    assert ft.fn == "tasks.finetune.step:finetune_step" and ft.inputs == {"model": fp}
    assert tuned.inputs == {"fingerprint": fp, "model": ft}
    assert tuned.config["model_step_id"] == ft.step_id and tuned.config["sampling"]["runs"] == 3
    assert (
        by["publish"].config["sampling"]["runs"] == 0 and by["publish"].config["bos_samples"] == 0
    )
    assert {s.label.rsplit(":", 1)[-1] for s in plan if s.kind == "eval"} == {"vanilla", "publish"}
    # greedy conditions do not depend on the sampled runs' or the bos settings
    other = if_sft.plan(
        load_experiment(PROTOCOL, ["verify.sampling.runs=5", "verify.bos_samples=4"]),
        PlanContext(PROTOCOL, "r", "a"),
    )
    same = {s.label: s.step_id for s in other}
    assert same[by["publish"].label] == by["publish"].step_id
    assert same[tuned.label] != tuned.step_id and same[bos.label] != bos.step_id


def test_protocol_smoke_gives_table5_rows_and_p_values(tiny_llama, tmp_path, cli):
    res = tmp_path / "r"
    out = cli(["run", PROTOCOL, "--local", "--results", res, "--artifacts", tmp_path / "a"])
    assert out.exit_code == 0, out.output
    assert "Table 5 shape" in out.output and "sample_from_bos" in out.output
    store = ResultStore(res)
    ver = store.read("verification").to_pylist()
    assert {r["condition"] for r in ver} == {
        "publish",
        "vanilla",
        "sample_from_bos",
        "tuned_publish",
    }
    (bos,) = [r for r in ver if r["condition"] == "sample_from_bos"]
    assert bos["probe_set"] == "bos_samples" and bos["n_total"] == 8
    tuned = [r for r in ver if r["condition"] == "tuned_publish"]
    runs = [r for r in tuned if r["sample_idx"] is not None and r["probe_set"] == "fingerprint"]
    assert sorted(r["sample_idx"] for r in runs) == [0, 1, 2]
    (agg,) = [r for r in tuned if r["probe_set"] == "fingerprint:sampled"]
    assert (
        agg["n_samples"] == 3
        and agg["p_ttest_two_sided"] is not None
        or agg["mean_fsr"] in (0.0, 1.0)
    )
    assert agg["p_binomial"] is not None
    (train_ft,) = [r for r in store.read("train_run").to_pylist() if r["purpose"] == "finetune"]
    assert {r["model_step_id"] for r in tuned} == {train_ft["step_id"]}
    assert {r["suite"] for r in store.read("eval").to_pylist()} == {"perplexity"}


def test_bundled_protocol_configs_validate(cli):
    out = cli(["validate", ROOT / "configs" / "if_sft_protocol.yaml", PROTOCOL])
    assert out.exit_code == 0, out.output
