"""``fprun finetune`` and ``fprun eval`` through the typer app: results, re-runs, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.results.store import ResultStore

ROWS = [
    {"instruction": f"Add {a} and {b}.", "output": f"{a + b}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 1)]
]
QUICK = ["--set", "max_steps=2", "--set", "max_length=160", "--set", "global_batch_size=4"]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_finetune_then_eval_write_rows_and_rerun_skips(tiny_llama, data_file, tmp_path, cli):
    res, art = str(tmp_path / "r"), str(tmp_path / "a")
    common = ["--results", res, "--artifacts", art]
    out = cli(
        [
            "finetune",
            "--model",
            str(tiny_llama),
            "--data",
            str(data_file),
            "--out",
            str(tmp_path / "user"),
            *QUICK,
            *common,
        ]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "user" / "model.safetensors").is_file() and "2 steps" in out.output
    rows = ResultStore(res).read("train_run").to_pylist()
    assert len(rows) == 1 and rows[0]["purpose"] == "finetune" and rows[0]["git_sha"]
    again = cli(
        [
            "finetune",
            "--model",
            str(tiny_llama),
            "--data",
            str(data_file),
            "--out",
            str(tmp_path / "user2"),
            *QUICK,
            *common,
        ]
    )
    assert again.exit_code == 0 and "skip" in again.output
    assert (tmp_path / "user2" / "model.safetensors").is_file()
    assert ResultStore(res).read("train_run").num_rows == 1

    ev = cli(
        [
            "eval",
            "--model",
            str(tmp_path / "user"),
            "--suite",
            "perplexity",
            "--set",
            "perplexity.max_chunks=2",
            "--set",
            "perplexity.chunk_tokens=32",
            *common,
        ]
    )
    assert ev.exit_code == 0, ev.output
    assert "perplexity" in ev.output and "in_the_year_2889" in ev.output
    table = ResultStore(res).read("eval").to_pylist()
    assert {r["metric"] for r in table} == {"perplexity", "mean_nll"}


@pytest.mark.parametrize(
    "case",
    ["missing_model", "missing_field", "unknown_name", "hub_offline", "out_taken", "bad_key"],
)
def test_bad_input_exits_2_with_one_line(case, tiny_llama, data_file, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, data, out = str(tiny_llama), str(data_file), tmp_path / "user"
    extra: list[str] = []
    expect = {
        "missing_model": "does not exist",
        "missing_field": "missing the field 'output'",
        "unknown_name": "unknown dataset 'alpacca'",
        "hub_offline": "needs the Hugging Face",
        "out_taken": "already exists",
        "bad_key": "learning_rat",
    }[case]
    if case == "missing_model":
        model = str(tmp_path / "no-such-model")
    elif case == "missing_field":
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"instruction": "x", "input": "y"}]))
        data = str(bad)
    elif case == "unknown_name":
        data = "alpacca"
    elif case == "hub_offline":
        data = "alpaca"
    elif case == "out_taken":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        extra = ["--set", "learning_rat=1e-4"]
    result = cli(
        [
            "finetune",
            "--model",
            model,
            "--data",
            data,
            "--out",
            str(out),
            *extra,
            "--results",
            str(tmp_path / "r"),
            "--artifacts",
            str(tmp_path / "a"),
        ]
    )
    assert result.exit_code == 2 and expect in result.output
    assert "\n" not in result.output.strip()
    assert not (tmp_path / "r").exists()  # nothing written


def test_eval_bad_input_exits_2_in_a_real_process(tmp_path, cli):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from runner.cli import main; main()",
            "eval",
            "--model",
            str(tmp_path / "missing"),
            "--suite",
            "math",
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr
    wrong = cli(["eval", "--model", "tiny-llama", "--suite", "vibes"])
    assert wrong.exit_code == 2 and "suite" in wrong.output


def test_finetune_under_ray_train_with_two_workers(ray_session, tiny_llama, data_file, tmp_path):
    """The same step function on 2 Ray Train workers (DDP over gloo): rank 0's row and model."""
    from runner.exec.driver import StepSpec, artifact_dir
    from runner.exec.ray_tasks import RayBackend
    from runner.plan import Resources, Step

    config = {
        "model": str(tiny_llama),
        "data": str(data_file),
        "method": "lora",
        "max_steps": 2,
        "max_length": 160,
        "global_batch_size": 4,
    }
    step = Step(
        "finetune",
        "tasks.finetune.step:finetune_step",
        config,
        "train_run",
        executor="train",
        resources=Resources(num_workers=2, num_cpus=1),
    )
    art = tmp_path / "a"
    spec = StepSpec(
        step_id=step.step_id,
        kind=step.kind,
        fn=step.fn,
        config=step.config,
        inputs={},
        out_dir=str(artifact_dir(art, step)),
        executor="train",
        resources=step.resources,
    )
    backend = RayBackend(results=str(tmp_path / "r"), artifacts=str(art))
    _, outcome = backend.wait([backend.submit(spec)])
    backend.close()
    assert not isinstance(outcome, BaseException), outcome
    (row,) = outcome.rows
    assert row["num_workers"] == 2 and row["strategy"] == "ddp" and row["steps"] == 2
    assert json.loads(row["extra"])["grad_accum"] == 1  # 4 = 2 workers x 2 per device
    out = Path(spec.out_dir)
    assert (out / "model.safetensors").is_file() and (out / "adapter").is_dir()
