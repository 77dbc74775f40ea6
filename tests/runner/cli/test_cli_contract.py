"""One test per class of broken contract (issue 14; the table of bad inputs is test_bad_inputs.py):
clean errors instead of tracebacks, refusing what a run would refuse, nothing left behind, hints
that name what the user typed, consistent verbs, readable plans, and progress.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runner import experiments
from tasks.errors import ConfigError, DataError

SMOKE = Path(__file__).resolve().parents[3] / "configs" / "smoke"


@pytest.fixture(autouse=True)
def toy_kind(monkeypatch):
    monkeypatch.setitem(experiments.KINDS, "toy", "tests.toy_kind")


def toy(tmp_path: Path, text: str = "kind: toy\nvalues: [1, 2]\n", name: str = "toy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def roots(tmp_path: Path) -> list[str]:
    return ["--results", str(tmp_path / "r"), "--artifacts", str(tmp_path / "a")]


# -- tracebacks instead of a clean error -----------------------------------------------------


def test_readers_turn_decoding_and_parse_errors_into_one_line_with_file_and_line(tmp_path):
    from tasks.readers import read_json, read_json_rows, read_yaml

    (tmp_path / "a.yaml").write_bytes(b"a: 1\nb: \xff\n")
    (tmp_path / "b.json").write_text('{"a": 1,\n "b": }\n')
    (tmp_path / "c.jsonl").write_text('{"a": 1}\n{"a": 2}\n{oops}\n')
    cases = [
        (lambda: read_yaml(tmp_path / "a.yaml"), ConfigError, "not valid UTF-8 (line 2"),
        (lambda: read_json(tmp_path / "b.json", what="x"), ConfigError, "(line 2:"),
        (lambda: read_json_rows(tmp_path / "c.jsonl", error=DataError), DataError, "line 3"),
        (lambda: read_yaml(tmp_path), ConfigError, "is a folder"),
    ]
    for call, family, needle in cases:
        with pytest.raises(family) as exc:
            call()
        assert needle in exc.value.one_line() and "\n" not in exc.value.one_line()


# -- accepted when it should be refused ------------------------------------------------------


def test_validate_and_dry_run_resolve_model_names_as_a_run_would(tmp_path, cli):
    bad = toy(tmp_path, "kind: if_sft\nmodel: tiny-lama\n", "bad.yaml")
    good = toy(tmp_path, "kind: if_sft\nmodel: tiny-llama\n", "good.yaml")
    assert cli(["validate", good]).exit_code == 0
    for args in (["validate", bad], ["run", bad, "--dry-run", *roots(tmp_path)]):
        out = cli(args)
        assert out.exit_code == 2 and "did you mean tiny-llama?" in out.stderr
    assert not (tmp_path / "r").exists()


# -- exit 2, but something was written -------------------------------------------------------


def test_a_step_failing_on_bad_input_removes_what_it_created(tmp_path, cli):
    cfg = toy(tmp_path, "kind: toy\nvalues: [1]\nbad_input_on: 1\n")
    out = cli(["run", cfg, "--local", *roots(tmp_path)])
    assert out.exit_code == 2 and "toy dataset is empty" in out.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "r").exists()


def test_an_unwritable_results_folder_is_found_before_any_step_runs(tmp_path, cli):
    (tmp_path / "r").write_text("a file")
    out = cli(["run", toy(tmp_path), "--local", *roots(tmp_path)])
    assert out.exit_code == 2 and "cannot write --results" in out.stderr
    assert not (tmp_path / "a").exists()


# -- hints that name things the user cannot type ---------------------------------------------


def test_errors_name_the_flag_the_set_or_the_yaml_key_typed(tmp_path, cli):
    sft = str(SMOKE / "if_sft.yaml")
    from_set = cli(["run", sft, "--dry-run", "--set", "train.lr=abc"])
    assert from_set.stderr.startswith("error: --set train.lr=abc:") and sft not in from_set.stderr
    from_yaml = cli(["validate", toy(tmp_path, "kind: toy\nvalues: [1]\ninner: {scale: x}\n")])
    assert "toy.yaml: inner.scale" in from_yaml.stderr
    folder = cli(["validate", str(tmp_path)])
    assert "is a folder, not a file" in folder.stderr


def test_allow_pickle_is_a_real_flag_that_converts_a_trusted_pickle(tiny_llama, tmp_path, cli):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in tiny_llama.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "fprun-zoo.json":
            shutil.copy(f, pickled / f.name)
    torch.save(load_file(tiny_llama / "model.safetensors"), pickled / "pytorch_model.bin")
    args = ["huref", "extract", "--model", str(pickled), "--k", "8", "--layers", "1", "--local"]
    refused = cli([*args, *roots(tmp_path)])
    assert refused.exit_code == 2 and "pass --allow-pickle" in refused.stderr
    allowed = cli([*args, "--allow-pickle", "--out", str(tmp_path / "inv"), *roots(tmp_path)])
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "inv" / "invariants.safetensors").is_file()


# -- inconsistent verbs ----------------------------------------------------------------------


def test_out_is_refused_when_taken_and_replaced_with_force(tmp_path, cli):
    res = roots(tmp_path)
    assert cli(["run", toy(tmp_path), "--local", *res]).exit_code == 0
    out = tmp_path / "rows.json"
    export = ["results", "export", "--kind", "eval", "--format", "json", "--out", str(out)]
    export += res[:2]
    assert cli(export).exit_code == 0 and len(out.read_text().splitlines()) == 3
    out.write_text("mine\n")
    again = cli(export)
    assert again.exit_code == 2 and "--force" in again.stderr and out.read_text() == "mine\n"
    assert cli([*export, "--force"]).exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_every_verb_that_runs_a_step_takes_local_and_address():
    import typer

    from runner.cli import app

    runs_steps = [
        "run", "demo", "fingerprint", "finetune", "verify", "eval", "huref extract",
        "huref compare", "huref train-encoder", "merge",
    ]  # fmt: skip
    command = typer.main.get_command(app)
    for verb in runs_steps:
        cmd = command
        for word in verb.split():
            cmd = cmd.commands[word]
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--local", "--address"} <= opts, verb
    sweep = {o for p in command.commands["sweep"].params for o in p.opts}
    assert "--address" in sweep and "--dry-run" in sweep  # --local: a sweep is Ray Tune


def test_one_name_for_the_learning_rate_in_every_config():
    from runner.experiments.huref_encoder import Config as EncoderConfig
    from runner.experiments.protocol import FinetuneEntry
    from tasks.config import validate
    from tasks.finetune.config import FinetuneConfig
    from tasks.fingerprint.config import TrainConfig

    for model in (TrainConfig, FinetuneConfig, FinetuneEntry, EncoderConfig):
        assert "lr" in model.model_fields and "learning_rate" not in model.model_fields
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        validate(FinetuneConfig, {"data": "x", "learning_rate": 1e-4}, "test")


def test_logs_go_to_stderr_results_to_stdout(tmp_path, cli):
    out = cli(["run", toy(tmp_path), "--local", *roots(tmp_path)])
    assert out.exit_code == 0
    assert out.stdout.strip() == "3 eval rows"
    assert "start [1/3]" in out.stderr and "done  [3/3]" in out.stderr


def test_validate_reports_every_bad_file(tmp_path, cli):
    good = toy(tmp_path)
    bad1 = toy(tmp_path, "kind: toy\nvalus: [1]\n", "bad1.yaml")
    bad2 = toy(tmp_path, "kind: toy\nvalues: []\n", "bad2.yaml")
    out = cli(["validate", bad1, good, bad2])
    errors = out.stderr.strip().splitlines()
    assert out.exit_code == 2 and len(errors) == 2
    assert "bad1.yaml" in errors[0] and "bad2.yaml" in errors[1]
    assert out.stdout.strip().startswith("ok") and "toy.yaml" in out.stdout


# -- plans and progress ----------------------------------------------------------------------


def test_dry_run_is_a_table_with_executor_resources_done_and_estimates(tmp_path, cli):
    cfg = toy(tmp_path)
    first = cli(["run", cfg, "--dry-run", *roots(tmp_path)])
    lines = first.stdout.splitlines()
    assert first.exit_code == 0 and lines[0].split()[:4] == ["#", "step", "kind", "label"]
    assert {"executor", "resources", "done", "time", "disk"} <= set(lines[0].split())
    assert lines[1].split()[2] == "toy_make" and "Ray task" in lines[1] and "1 CPU" in lines[1]
    assert "3 step(s), 0 already in results" in lines[-1]
    assert not (tmp_path / "r").exists()
    assert cli(["run", cfg, "--local", *roots(tmp_path)]).exit_code == 0
    again = cli(["run", cfg, "--dry-run", "--local", *roots(tmp_path)]).stdout.splitlines()
    assert all("in-process" in row and " yes " in row for row in again[1:4])
    assert "done: as it ran" in again[1] and "3 already in results" in again[-1]


def test_estimates_come_from_the_step_then_history_then_formula():
    from runner.estimates import estimate_plan
    from runner.plan import Estimate, Plan, Step

    set_by_plan = Step("toy_make", "tests.toy_kind:make", {"value": 1}, "eval")
    set_by_plan.estimate = Estimate(seconds=5, disk_gb=0.5, how="merge cell: 2 x parent")
    extract = Step("huref_extract", "tasks.huref.extract:extract_step", {"k": 1024}, "huref")

    class NoStore:
        root = "/nonexistent"

        def done(self, kind, step_id):
            return False

    est = estimate_plan(Plan([set_by_plan, extract]), NoStore(), "/nonexistent")
    assert est[set_by_plan.step_id].how == "merge cell: 2 x parent"
    assert est[extract.step_id].disk_gb == pytest.approx(3 * 2 * 1024 * 1024 * 4 / 1e9)
    assert est[extract.step_id].seconds is None
    text = Plan([set_by_plan, extract]).dry_run_text(estimates=est)
    assert "5 s" in text and "merge cell" in text and "about" not in text.splitlines()[-1][:10]


def test_sweep_dry_run_lists_trials_and_their_steps_without_ray(tmp_path, cli):
    out = cli(["sweep", str(SMOKE / "sweep_adapter_dim.yaml"), "--dry-run", *roots(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "trial adapter.dim=" in out.stdout and "if_adapter" in out.stdout
    assert "Ray Train x1" in out.stdout and "in the trial" in out.stdout


def test_plain_progress_lines_count_steps_and_report_inner_progress(monkeypatch):
    from runner.exec import progress as prog

    lines: list[str] = []
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(prog.time, "time", lambda: float(next(clock)))
    view = prog.RunProgress(lines.append)
    view.begin([("s1", "train", None), ("s2", "verify", 20.0)])
    view.started_step("s1", "s1  train", "fp")
    for done in range(0, 101, 25):
        view.report("s1", "training steps", done, 100)
    view.finished("s1", "s1  train", 40.0, 1)
    text = "\n".join(lines)
    assert "start [1/2]" in text and "fp: training steps 100/100 (" in text and "/s, ETA" in text
    assert "done  [1/2]" in text and "run ETA 20 s" in text  # s2's estimate; s1 is done


def test_run_eta_counts_queued_pool_steps_whole_and_times_steps_from_their_first_report(
    monkeypatch,
):
    """An actor pool takes every cell at once and runs one per actor: a submitted step that has
    not reported is queued, so the ETA must not shrink as the queue waits."""
    from runner.exec import progress as prog

    now = [0.0]
    monkeypatch.setattr(prog.time, "time", lambda: now[0])
    lines: list[str] = []
    view = prog.RunProgress(lines.append)
    view.begin([(f"c{i}", "merge_cell", None) for i in range(4)])
    for i in range(4):
        view.started_step(f"c{i}", f"c{i}", f"c{i}")
    view.report("c0", "cell stages", 0, 2)
    now[0] = 50.0
    view.finished("c0", "c0", 50.0, 1)
    view.report("c1", "cell stages", 0, 2)
    now[0] = 100.0
    view.finished("c1", "c1", 100.0, 1)  # submitted at 0, ran 50 s from its first report
    assert view.durations["merge_cell"] == [50.0, 50.0]
    assert view.eta_text() == "ETA 1 min 40 s"  # two queued cells x 50 s, not 0
    view.report("c2", "cell stages", 0, 2)
    now[0] = 110.0
    assert view.eta_text() == "ETA 1 min 30 s"  # c2 has 40 s left, c3 waits 50 s


def test_rich_display_on_a_terminal_and_progress_files_from_workers(tmp_path):
    from runner.exec.progress import ProgressFile, RunProgress, clear_progress, read_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    view = RunProgress.for_stream(stream)
    view.begin([("s1", "train", None)])
    view.started_step("s1", "s1", "fp")
    view.report("s1", "training steps", 3, 10)
    view.close()
    assert "steps" in stream.getvalue() and "fp" in stream.getvalue()
    assert not RunProgress.for_stream(io.StringIO()).live
    hook = ProgressFile(tmp_path)
    hook("generated rows", 64, 128)
    assert read_progress(tmp_path) == ("generated rows", 64, 128)
    clear_progress(tmp_path)
    assert read_progress(tmp_path) is None and not list(tmp_path.iterdir())


def test_third_party_progress_bars_are_off(monkeypatch):
    from tasks.progress import QUIET_ENV, quiet_third_party

    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    quiet_third_party()
    import os

    import datasets
    from transformers.utils import logging as hf_logging

    assert all(os.environ[name] == value for name, value in QUIET_ENV.items())
    assert not datasets.is_progress_bar_enabled() and not hf_logging.is_progress_bar_enabled()


def test_keys_stay_out_of_error_lines(tmp_path, cli):
    fp = tmp_path / "fp" / "private"
    fp.mkdir(parents=True)
    secret = "hedgehog-secret-key-do-not-print"
    (fp / "fingerprint.json").write_text(json.dumps({"fingerprint_id": "0" * 16}))
    (fp / "keys.jsonl").write_text(json.dumps({"key": secret}) + "\n{" + secret + "\n")
    (fp / "probes.jsonl").write_text(json.dumps({"probe_set": "fingerprint", "user": secret}))
    out = cli(["verify", "--model", "tiny-llama", "--fingerprint", str(tmp_path / "fp")])
    assert out.exit_code == 2 and secret not in out.output
    from tasks.errors import FingerprintError
    from tasks.fingerprint.artifacts import read_keys

    with pytest.raises(FingerprintError) as exc:
        read_keys(tmp_path / "fp")
    assert secret not in exc.value.one_line() and "line 2" in exc.value.one_line()
