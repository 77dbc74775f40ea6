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

SMOKE = Path(__file__).resolve().parents[3] / "configs" / "smoke"
# (case id, command line, a part of the expected error line). {t}: the inputs folder; {r}, {a},
# {o}: this case's results, artifacts and output paths (none of which may exist afterwards);
# @r: --results {r} --artifacts {a}; @sft, @sweep: the smoke IF_SFT and sweep configs.
CASES: list[tuple[str, str, str]] = [
    # validate: every file read, every problem named
    (
        "validate-not-utf8",
        "validate {t}/latin1.yaml",
        "not valid UTF-8 (line 2",
    ),
    (
        "validate-yaml-syntax",
        "validate {t}/syntax.yaml",
        "not valid YAML at line 3",
    ),
    (
        "validate-folder",
        "validate {t}/adir",
        "is a folder, not a file",
    ),
    (
        "validate-missing",
        "validate {t}/nope.yaml",
        "does not exist",
    ),
    (
        "validate-unknown-model",
        "validate {t}/lama.yaml",
        "did you mean tiny-llama?",
    ),
    (
        "validate-misspelled-key",
        "validate {t}/misspelled.yaml",
        "did you mean 'lr'?",
    ),
    (
        "validate-range",
        "validate {t}/range.yaml",
        "allowed: > 0",
    ),
    (
        "validate-finetune-data-missing",
        "validate {t}/ft_data.yaml",
        "data file nope/train.jsonl does not exist",
    ),
    (
        "validate-not-a-mapping",
        "validate {t}/list.yaml",
        "does not hold a mapping",
    ),
    # run
    (
        "run-set-not-yaml",
        "run @sft --local --set train.lr=[ @r",
        "not valid YAML",
    ),
    (
        "run-set-wrong-type",
        "run @sft --local --set train.lr=abc @r",
        "--set train.lr=abc",
    ),
    (
        "run-set-unknown-key",
        "run @sft --local --set trian.lr=1 @r",
        "unknown key 'trian'",
    ),
    (
        "run-set-not-key-value",
        "run @sft --local --set novalue @r",
        "is not key=value",
    ),
    (
        "run-local-and-address",
        "run @sft --local --address auto @r",
        "exclude each other",
    ),
    (
        "run-results-is-a-file",
        "run @sft --local --results {t}/afile --artifacts {a}",
        "is a file",
    ),
    (
        "run-missing-model-path",
        "run @sft --local --set model=/no/such/model @r",
        "does not exist",
    ),
    (
        "run-dry-run-unknown-model",
        "run {t}/lama.yaml --dry-run @r",
        "unknown model tiny-lama",
    ),
    (
        "run-not-utf8",
        "run {t}/latin1.yaml --local @r",
        "not valid UTF-8",
    ),
    (
        "run-a-sweep",
        "run @sweep --local @r",
        "fprun sweep",
    ),
    (
        "run-unknown-option",
        "run @sft --bogus",
        "No such option",
    ),
    (
        "run-missing-argument",
        "run",
        "Missing argument",
    ),
    # sweep, demo, ls
    (
        "sweep-not-a-sweep",
        "sweep @sft --dry-run @r",
        "not a sweep",
    ),
    (
        "sweep-empty-grid",
        "sweep @sweep --dry-run --set search.0.grid=[] @r",
        "--set search.0.grid=[]",
    ),
    (
        "sweep-not-utf8",
        "sweep {t}/latin1.yaml --dry-run @r",
        "not valid UTF-8",
    ),
    (
        "demo-local-and-address",
        "demo --local --address auto --out {o}",
        "exclude each other",
    ),
    (
        "ls-unknown",
        "ls gadgets",
        "cannot list 'gadgets'",
    ),
    (
        "unknown-verb",
        "frobnicate",
        "No such command",
    ),
    # zoo get
    (
        "zoo-unknown-name",
        "zoo get tiny-lama --out {o}",
        "did you mean tiny-llama?",
    ),
    (
        "zoo-out-taken",
        "zoo get tiny-llama --out {t}/occupied",
        "already exists",
    ),
    (
        "zoo-out-under-a-file",
        "zoo get tiny-llama --out {t}/afile/x",
        "is a file, not a folder",
    ),
    (
        "zoo-out-unwritable",
        "zoo get tiny-llama --out /proc/fprun-out",
        "not writable",
    ),
    # fingerprint
    (
        "fingerprint-method",
        "fingerprint --method if_sfd --model tiny-llama --out {o} @r",
        "--method if_sfd",
    ),
    (
        "fingerprint-unknown-model",
        "fingerprint --method if_sft --model tiny-lama --out {o} --local @r",
        "did you mean tiny-llama?",
    ),
    (
        "fingerprint-out-taken",
        "fingerprint --method if_sft --model tiny-llama --out {t}/occupied @r",
        "already exists",
    ),
    (
        "fingerprint-set-type",
        "fingerprint --method if_sft --model tiny-llama --out {o} --set train.epochs=many @r",
        "--set train.epochs=many",
    ),
    # finetune
    (
        "finetune-data-not-utf8",
        "finetune --model {t}/model --data {t}/latin1.jsonl --out {o} @r",
        "not valid UTF-8 (line 2",
    ),
    (
        "finetune-data-bad-line",
        "finetune --model {t}/model --data {t}/badline.jsonl --out {o} @r",
        "line 2 is not JSON",
    ),
    (
        "finetune-old-lr-name",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --set learning_rate=1e-4 @r",
        "did you mean 'lr'?",
    ),
    (
        "finetune-lr-range",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --set lr=-1 @r",
        "allowed: > 0",
    ),
    (
        "finetune-pickle",
        "finetune --model {t}/pickled --data {t}/good.jsonl --out {o} @r",
        "pass --allow-pickle",
    ),
    (
        "finetune-local-and-address",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --local --address auto @r",
        "exclude each other",
    ),
    (
        "finetune-out-is-a-file",
        "finetune --model {t}/model --data {t}/good.jsonl --out {t}/afile @r",
        "already exists",
    ),
    # verify
    (
        "verify-condition",
        "verify --model {t}/model --fingerprint {t}/fp --condition bogus @r",
        "--condition bogus is not a condition",
    ),
    (
        "verify-samples-range",
        "verify --model {t}/model --fingerprint {t}/fp --samples -1 @r",
        "--samples -1",
    ),
    (
        "verify-temperature-range",
        "verify --model {t}/model --fingerprint {t}/fp --temperature 0 @r",
        "allowed: > 0",
    ),
    (
        "verify-probe-set",
        "verify --model {t}/model --fingerprint {t}/fp --set probe_sets=[fingerprnt] @r",
        "unknown probe set 'fingerprnt'",
    ),
    (
        "verify-no-private",
        "verify --model {t}/model --fingerprint {t}/adir @r",
        "no private/",
    ),
    (
        "verify-unknown-model",
        "verify --model tiny-lama --fingerprint {t}/fp @r",
        "did you mean tiny-llama?",
    ),
    # eval
    (
        "eval-corrupt-checkpoint",
        "eval --model {t}/corrupt --suite math @r",
        "safetensors",
    ),
    (
        "eval-suite",
        "eval --model {t}/model --suite vibes @r",
        "--suite vibes",
    ),
    (
        "eval-batch-range",
        "eval --model {t}/model --suite math --set batch_size=0 @r",
        "allowed: >= 1",
    ),
    (
        "eval-empty-folder",
        "eval --model {t}/adir --suite math @r",
        "has no config.json",
    ),
    # huref extract
    (
        "extract-device",
        "huref extract --model {t}/model --device tpu @r",
        "--device tpu",
    ),
    (
        "extract-k-range",
        "huref extract --model {t}/model --k 1 @r",
        "allowed: >= 2",
    ),
    (
        "extract-token-file-missing",
        "huref extract --model {t}/model --tokens file @r",
        "--token-file",
    ),
    (
        "extract-token-file-absent",
        "huref extract --model {t}/model --tokens file --token-file {t}/nope.txt @r",
        "--token-file",
    ),
    (
        "extract-pickle",
        "huref extract --model {t}/pickled @r",
        "pickle checkpoint",
    ),
    (
        "extract-corrupt",
        "huref extract --model {t}/corrupt @r",
        "safetensors",
    ),
    (
        "extract-out-taken",
        "huref extract --model {t}/model --out {t}/occupied @r",
        "already exists",
    ),
    # huref compare
    (
        "compare-chunk-range",
        "huref compare {t}/inv4 {t}/inv4b --chunk-mb 0 @r",
        "--chunk-mb 0",
    ),
    (
        "compare-different-k",
        "huref compare {t}/inv4 {t}/inv8 --no-pcs @r",
        "different k",
    ),
    (
        "compare-corrupt",
        "huref compare {t}/inv4 {t}/inv_cut --no-pcs @r",
        "truncated or corrupt",
    ),
    (
        "compare-one-folder",
        "huref compare {t}/inv4 @r",
        "at least two",
    ),
    (
        "compare-out-unwritable",
        "huref compare {t}/inv4 {t}/inv4b --no-pcs --out /proc/fprun-out @r",
        "not writable",
    ),
    (
        "compare-pcs-model-gone",
        "huref compare {t}/inv4 {t}/inv4b @r",
        "--no-pcs",
    ),
    # huref image, train-encoder
    (
        "image-different-k",
        "huref image {t}/inv4 {t}/inv8 --out {o}",
        "different k",
    ),
    (
        "image-size-range",
        "huref image {t}/inv4 --size 4 --out {o}",
        "use 8 to 2048",
    ),
    (
        "image-out-taken",
        "huref image {t}/inv4 --out {t}/occupied",
        "already exists",
    ),
    (
        "train-encoder-set-type",
        "huref train-encoder --out {o} --set tokens=many @r",
        "--set tokens=many",
    ),
    (
        "train-encoder-config-not-utf8",
        "huref train-encoder --out {o} --config {t}/latin1.yaml @r",
        "not valid UTF-8",
    ),
    # results
    (
        "show-limit-range",
        "results show --limit -1 --results {r}",
        "use a value >= 0",
    ),
    (
        "show-missing-results",
        "results show --results {r}",
        "does not exist",
    ),
    (
        "show-unknown-kind",
        "results show --kind verifcation --results {r}",
        "unknown result kind",
    ),
    (
        "export-out-is-a-folder",
        "results export --kind eval --out {t}/adir --results {t}/store",
        "is a folder",
    ),
    (
        "export-out-exists",
        "results export --kind eval --out {t}/afile --results {t}/store",
        "already exists",
    ),
    (
        "export-format",
        "results export --kind eval --format xls --out {o} --results {t}/store",
        "--format xls",
    ),
    (
        "export-out-under-a-file",
        "results export --kind eval --out {t}/afile/x.csv --results {t}/store",
        "is a file, not a folder",
    ),
    # merge: the YAML, --model, flags and --out before any model is read
    (
        "merge-missing-config",
        "merge {t}/nope.yml --out {o} @r",
        "does not exist",
    ),
    (
        "merge-model-not-name-ref",
        "merge {t}/m.yml --out {o} --model base @r",
        "expected NAME=REF",
    ),
    (
        "merge-missing-model",
        "merge {t}/m.yml --out {o} @r",
        "does not exist",
    ),
    (
        "merge-set-typo",
        "merge {t}/m.yml --out {o} --set sed=1 @r",
        "did you mean 'seed'?",
    ),
    (
        "merge-shard-range",
        "merge {t}/m.yml --out {o} --shard-mb 0 @r",
        "--shard-mb 0",
    ),
    (
        "merge-out-taken",
        "merge {t}/m.yml --out {t}/occupied @r",
        "already exists",
    ),
    (
        "merge-local-and-address",
        "merge {t}/m.yml --out {o} --local --address auto @r",
        "exclude each other",
    ),
    # report: a store that holds results, an --out it may write
    (
        "report-no-results",
        "report {t}/store --out {o}",
        "no result tables",
    ),
    (
        "report-out-taken",
        "report {t}/store --out {t}/occupied",
        "already exists",
    ),
]


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
