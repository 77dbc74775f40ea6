"""The CLI contract, table-driven: every bad input of every verb is exit 2, one line, no traceback,
and nothing written under ``--results``, ``--artifacts`` or ``--out`` (docs/cli.md).

Inputs are small files made once per session (no model is built); the cases run in-process
through ``runner.cli.common.run_app`` (what ``main`` runs), and a few as real processes to show
exit code 2 end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.runner.cli.bad_input_cases_a import CASES as CASES_A
from tests.runner.cli.bad_input_cases_b import CASES as CASES_B

SMOKE = Path(__file__).resolve().parents[3] / "configs" / "smoke"
CASES = CASES_A + CASES_B  # (case id, command line, a part of the expected error line)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad (and good) inputs the cases point at; nothing here is written by a case."""
    from safetensors.numpy import save_file

    from tasks.huref.store import save_invariants

    t = tmp_path_factory.mktemp("bad-inputs")
    (t / "latin1.yaml").write_bytes(b"kind: if_sft\nmodel: caf\xe9\n")
    (t / "syntax.yaml").write_text("kind: if_sft\nmodel: [tiny-llama\n")
    (t / "adir").mkdir()
    (t / "lama.yaml").write_text("kind: if_sft\nmodel: tiny-lama\n")
    (t / "misspelled.yaml").write_text("kind: if_sft\nmodel: tiny-llama\ntrain: {lrr: 1.0e-4}\n")
    (t / "range.yaml").write_text("kind: if_sft\nmodel: tiny-llama\ntrain: {lr: -1}\n")
    (t / "list.yaml").write_text("- kind: if_sft\n")
    (t / "ft_data.yaml").write_text(
        "kind: if_sft\nmodel: tiny-llama\nfinetune:\n  - data: nope/train.jsonl\n"
    )
    (t / "afile").write_text("mine\n")
    gone = [{"model": str(t / "gone"), "parameters": {"weight": 0.5}}] * 2
    (t / "m.yml").write_text(yaml.safe_dump({"merge_method": "linear", "models": gone}))
    (t / "occupied").mkdir()
    (t / "occupied" / "keep.txt").write_text("mine\n")
    (t / "store").mkdir()
    row = {"instruction": "Add 1 and 2.", "output": "3"}
    (t / "good.jsonl").write_text(json.dumps(row) + "\n")
    (t / "badline.jsonl").write_text(json.dumps(row) + "\n{not json\n")
    (t / "latin1.jsonl").write_bytes(json.dumps(row).encode() + b'\n{"instruction": "caf\xe9"}\n')
    for name, weights in (("model", None), ("pickled", b"pickle"), ("corrupt", b"\x08")):
        (t / name).mkdir()
        (t / name / "config.json").write_text('{"model_type": "llama"}')
        if weights is None:
            save_file({"w": np.zeros(4, dtype=np.float32)}, str(t / name / "model.safetensors"))
        elif name == "pickled":
            (t / name / "pytorch_model.bin").write_bytes(weights)
        else:
            (t / name / "model.safetensors").write_bytes(weights * 16)
    fp = t / "fp" / "private"
    fp.mkdir(parents=True)
    meta = {"fingerprint_id": "0" * 16, "method": "if_sft", "template": "dialogue"}
    (fp / "fingerprint.json").write_text(json.dumps({**meta, "prompt_format": "chat_template"}))
    probe = {"probe_set": "fingerprint", "split": "test", "user": "x"}
    (fp / "probes.jsonl").write_text(json.dumps(probe) + "\n")
    for name, k in (("inv4", 4), ("inv4b", 4), ("inv8", 8), ("inv_cut", 4)):
        meta = {"model_ref": name, "arch": "llama", "k": k, "n_layers": 1, "dtype": "float32",
                "token_strategy": "file", "token_set_hash": "h", "hidden_size": 8,
                "model_path": str(t / "gone")}  # fmt: skip
        save_invariants(t / name, np.random.default_rng(k).random((3, k, k)), meta)
    cut = t / "inv_cut" / "invariants.safetensors"
    cut.write_bytes(cut.read_bytes()[:-40])
    return t


def fill(command: str, t: Path, case: Path) -> list[str]:
    macros = {
        "@r": "--results {r} --artifacts {a}",
        "@sft": str(SMOKE / "if_sft.yaml"),
        "@sweep": str(SMOKE / "sweep_adapter_dim.yaml"),
    }
    paths = {"{t}": t, "{r}": case / "r", "{a}": case / "a", "{o}": case / "o"}
    args = []
    for word in command.split(" "):
        for key, value in [*macros.items(), *paths.items()]:
            word = word.replace(key, str(value))
        args.extend(word.split(" "))
    return args


def snapshot(t: Path) -> dict[str, bytes]:
    return {str(p.relative_to(t)): p.read_bytes() for p in sorted(t.rglob("*")) if p.is_file()}


def check_clean(res, case: Path, expect: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expect in lines[0], lines[0]
    assert not list(case.iterdir()), f"written: {sorted(p.name for p in case.iterdir())}"


def test_the_table_has_40_distinct_cases_over_every_verb():
    from runner.cli import VERBS

    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert len({c[1] for c in CASES}) == len(CASES)
    words = [c[1].split(" ") for c in CASES]
    seen = {w[0] for w in words} | {" ".join(w[:2]) for w in words}
    missing = set(VERBS) - seen
    assert not missing, sorted(missing)


@pytest.mark.parametrize("case_id,command,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case_id, command, expect, inputs, tmp_path, cli, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # default roots (./fprun-results ...) would land in the case dir
    case = tmp_path / "case"
    case.mkdir()
    before = snapshot(inputs)
    res = cli(fill(command, inputs, case))
    check_clean(res, case, expect)
    assert snapshot(inputs) == before, "an input was changed"
    assert not (tmp_path / "fprun-results").exists() and not (tmp_path / "fprun-artifacts").exists()


REAL = ["validate-not-utf8", "run-set-not-yaml", "compare-chunk-range", "show-limit-range"]


@pytest.mark.parametrize("case_id", REAL)
def test_bad_input_in_a_real_process_exits_2(case_id, inputs, tmp_path):
    (_, command, expect) = next(c for c in CASES if c[0] == case_id)
    case = tmp_path / "case"
    case.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()", *fill(command, inputs, case)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert expect in proc.stderr and not list(case.iterdir())
