"""The core verbs through the real typer app: exit codes, one-line errors, results show/export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runner import experiments


@pytest.fixture(autouse=True)
def toy_kind(monkeypatch):
    monkeypatch.setitem(experiments.KINDS, "toy", "tests.toy_kind")


def test_run_local_then_show_and_export(tmp_path, cli):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("kind: toy\nvalues: [1, 2]\n")
    res = str(tmp_path / "r")
    out = cli(["run", str(cfg), "--local", "--results", res, "--artifacts", str(tmp_path / "a")])
    assert out.exit_code == 0, out.output
    assert "3 eval rows" in out.output
    shown = cli(["results", "show", "--kind", "eval", "--results", res])
    assert shown.exit_code == 0 and "total" in shown.output and "git_sha" not in shown.output
    exp = tmp_path / "e.json"
    assert (
        cli(
            [
                "results",
                "export",
                "--kind",
                "eval",
                "--format",
                "json",
                "--out",
                str(exp),
                "--results",
                res,
            ]
        ).exit_code
        == 0
    )
    rows = [json.loads(line) for line in exp.read_text().splitlines()]
    assert len(rows) == 3 and all(r["step_id"] for r in rows)


def test_dry_run_prints_steps_and_writes_nothing(tmp_path, cli):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("kind: toy\nvalues: [1, 2]\n")
    out = cli(["run", str(cfg), "--dry-run", "--results", str(tmp_path / "r")])
    assert out.exit_code == 0 and out.output.count("toy_make") == 2
    assert not (tmp_path / "r").exists()


def test_failed_step_exits_1(tmp_path, cli):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("kind: toy\nvalues: [1]\nfail_on: 1\n")
    out = cli(
        [
            "run",
            str(cfg),
            "--local",
            "--results",
            str(tmp_path / "r"),
            "--artifacts",
            str(tmp_path / "a"),
        ]
    )
    assert out.exit_code == 1


def test_misspelled_key_exits_2_with_one_line(tmp_path, cli):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("kind: toy\nvalus: [1]\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from runner.cli import main; main()", "validate", str(cfg)],
        capture_output=True,
        text=True,
    )
    # the toy kind is not registered in a fresh process: the error names the unknown kind
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown experiment kind" in proc.stderr
    out = cli(["validate", str(cfg)])
    assert out.exit_code == 2 and "'valus'" in out.output and "'values'" in out.output


def test_unknown_result_kind_and_format(tmp_path, cli):
    assert cli(["results", "show", "--kind", "nope", "--results", str(tmp_path)]).exit_code == 2
    out = cli(
        [
            "results",
            "export",
            "--kind",
            "eval",
            "--format",
            "xls",
            "--out",
            str(tmp_path / "x"),
            "--results",
            str(tmp_path),
        ]
    )
    assert out.exit_code == 2


def test_demo_runs_its_suite_and_ends_with_the_report(tmp_path, cli, monkeypatch):
    """``fprun demo`` on a stand-in configs folder (the toy kind): the run, then the report
    rebuilt in the workspace on every run, its path printed as a file:// URL."""
    from runner.cli import core

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toy.yaml").write_text("kind: toy\nvalues: [1, 2]\n")
    (configs / "demo.yaml").write_text("kind: suite\nexperiments:\n  - config: toy.yaml\n")
    monkeypatch.setattr(core, "configs_dir", lambda: configs)
    ws = tmp_path / "ws"
    for _ in range(2):  # the second run skips the steps and replaces the report
        out = cli(["demo", "--out", ws, "--local"])
        assert out.exit_code == 0, out.output
        page = ws / "report" / "index.html"
        assert f"report: {page.resolve().as_uri()}" in out.stdout
        assert "Utility" in page.read_text()  # the toy kind writes eval rows
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]  # no temporary left behind
