"""Config loading, step identity, the result store and the local executor (no torch needed)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from runner import experiments
from runner.config import apply_overrides, load_experiment
from runner.exec.run import run_experiment
from runner.plan import Plan, Step, code_version
from runner.results.store import ResultStore, finalize_rows, now
from tasks.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def toy_kind(monkeypatch):
    monkeypatch.setitem(experiments.KINDS, "toy", "tests.toy_kind")


def write(tmp_path, text, name="toy.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_misspelled_key_names_key_and_suggestion(tmp_path):
    p = write(tmp_path, "kind: toy\nvalues: [1]\ninner: {scael: 3}\n")
    with pytest.raises(ConfigError) as exc:
        load_experiment(p)
    line = exc.value.one_line()
    assert "inner.scael" in line and "'scale'" in line and "\n" not in line


def test_unknown_kind_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment kind 'tyo'"):
        load_experiment(write(tmp_path, "kind: tyo\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values():
    out = apply_overrides({"a": {"b": 1}, "l": [1, 2]}, ["a.b=2.5", "a.c=[1, 2]", "l.1=x"])
    assert out == {"a": {"b": 2.5, "c": [1, 2]}, "l": [1, "x"]}
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])


def test_step_id_depends_on_content_not_identity():
    a = Step("toy_make", "tests.toy_kind:make", {"value": 1, "x": [1, 2]}, "eval")
    b = Step("toy_make", "tests.toy_kind:make", {"x": [1, 2], "value": 1}, "eval")
    c = Step("toy_make", "tests.toy_kind:make", {"value": 2, "x": [1, 2]}, "eval")
    assert a.step_id == b.step_id != c.step_id and len(a.step_id) == 16
    t1 = Step("toy_total", "tests.toy_kind:total", {}, "eval", inputs={"v": a})
    t2 = Step("toy_total", "tests.toy_kind:total", {}, "eval", inputs={"v": c})
    assert t1.step_id != t2.step_id
    assert code_version("tests.toy_kind:make") == "1"
    plan = Plan([t1, Step("toy_total", "tests.toy_kind:total", {}, "eval", inputs={"v": b})])
    assert [s.kind for s in plan] == ["toy_make", "toy_total"]  # b == a, deduplicated


def test_store_rejects_unknown_columns_and_duplicate_keys(tmp_path):
    kw = dict(step_id="s" * 16, config_hash="c", started_at=now(), finished_at=now(), device="cpu")
    with pytest.raises(ValueError, match="not in its schema"):
        finalize_rows("eval", [{"suite": "x", "valeu": 1.0}], **kw)
    row = {"suite": "x", "task": "t", "metric": "m", "value": 1.0}
    with pytest.raises(ValueError, match="repeat a run_key"):
        finalize_rows("eval", [row, row], **kw)
    table = finalize_rows("eval", [row], **kw)
    store = ResultStore(tmp_path / "res")
    store.write("eval", "s" * 16, table)
    assert store.done("eval", "s" * 16)
    assert [p.name for p in (tmp_path / "res" / "eval").iterdir()] == ["s" * 16 + ".parquet"]
    back = store.read("eval")
    assert back.column("run_key").to_pylist() == ["s" * 16 + "/x/t/m"]
    assert back.schema.field("fsr" if False else "value").metadata[b"description"]


def test_local_run_writes_once_and_resumes(tmp_path):
    cfg = write(tmp_path, "kind: toy\nvalues: [1, 2, 3]\n")
    kw = dict(
        results=str(tmp_path / "r"), artifacts=str(tmp_path / "a"), local=True, log=lambda s: None
    )
    first = run_experiment(cfg, **kw)
    assert first.summary.ok and len(first.summary.done) == 4
    table = ResultStore(tmp_path / "r").read("eval")
    total = [r for r in table.to_pylist() if r["task"] == "total"][0]
    assert total["value"] == 12.0 and total["datasets"] == []
    second = run_experiment(cfg, **kw)
    assert second.summary.done == [] and len(second.summary.skipped) == 4
    assert ResultStore(tmp_path / "r").read("eval").num_rows == 4
    third = run_experiment(cfg, ["inner.scale=3"], **kw)  # only the total step is new
    assert len(third.summary.done) == 1 and len(third.summary.skipped) == 3


def test_failed_step_blocks_dependents_and_keeps_results(tmp_path):
    cfg = write(tmp_path, "kind: toy\nvalues: [1, 2]\nfail_on: 2\n")
    res = run_experiment(
        cfg,
        results=str(tmp_path / "r"),
        artifacts=str(tmp_path / "a"),
        local=True,
        log=lambda s: None,
    )
    assert len(res.summary.failed) == 1 and len(res.summary.blocked) == 1
    assert len(res.summary.done) == 1


def test_bad_input_aborts_without_partial_files(tmp_path):
    r = tmp_path / "r"
    good = write(tmp_path, "kind: toy\nvalues: [1]\n", "good.yaml")
    run_experiment(
        good, results=str(r), artifacts=str(tmp_path / "a"), local=True, log=lambda s: None
    )
    before = sorted(p.name for p in (r / "eval").iterdir())
    bad = write(tmp_path, "kind: toy\nvalues: [1, 5]\nbad_input_on: 5\n", "bad.yaml")
    with pytest.raises(DataError):
        run_experiment(
            bad, results=str(r), artifacts=str(tmp_path / "a"), local=True, log=lambda s: None
        )
    after = sorted(p.name for p in (r / "eval").iterdir())
    assert set(before) <= set(after) and len(after) == len(before) + 1  # the good step only
    assert not [n for n in after if not n.endswith(".parquet")]  # no temp files left
    for p in (r / "eval").iterdir():
        pq.read_table(p)
