"""``fprun fingerprint``: fingerprint one model and put its fingerprint folder at ``--out``.

A one-experiment run through :func:`runner.exec.run.run_experiment`, so it resumes, records Parquet
rows and verifies exactly like ``fprun run``: the method's bundled YAML (``configs/<method>.yaml``)
is the starting point, ``--model`` and ``--set`` override it. The fingerprint folder
(``published/`` + ``private/``) is then hard-linked (or copied) from the artifacts store to
``--out``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import DEFAULT_ARTIFACTS, DEFAULT_RESULTS, Artifacts, Results, SetOpt
from tasks.errors import ConfigError

# method -> bundled experiment YAML (a kind whose first step is the fingerprint step)
METHODS: dict[str, str] = {"if_sft": "if_sft.yaml"}


def fingerprint(
    method: Annotated[str, typer.Option(help="if_sft")],
    model: Annotated[str, typer.Option(help="base model: zoo name, local folder or hub id")],
    out: Annotated[Path, typer.Option(help="where the fingerprint folder goes (must be new)")],
    set_: SetOpt = None,
    verify: Annotated[bool, typer.Option(help="also verify publish/vanilla")] = True,
    link: Annotated[bool, typer.Option(help="symlink the artifact folder, don't copy")] = False,
    local: Annotated[bool, typer.Option("--local", help="in-process reference executor")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Fingerprint MODEL with METHOD (the bundled configs/<method>.yaml plus --set overrides)."""
    from runner.cli.common import check_out, configs_dir, finish_run, place_out
    from runner.exec.run import run_experiment

    if method not in METHODS:
        raise ConfigError(
            f"unknown fingerprint method {method!r}", f"use one of {', '.join(METHODS)}"
        )
    if local and address:
        raise ConfigError("--local and --address exclude each other", "pass only one")
    check_out(out)
    overrides = [f"model={model}", *(set_ or [])]
    if not verify:
        overrides.append("verify.conditions=[]")
    base = configs_dir() / METHODS[method]
    with tempfile.TemporaryDirectory(prefix="fprun-fingerprint-") as tmp:
        cfg_path = Path(tmp) / base.name  # a copy, so the run's config path names the method
        cfg_path.write_text(base.read_text(encoding="utf-8"), encoding="utf-8")
        result = run_experiment(
            cfg_path, overrides, results=results, artifacts=artifacts, local=local, address=address
        )
    finish_run(result)
    from runner.exec.driver import artifact_dir

    src = artifact_dir(artifacts, result.plan.steps[0])
    place_out(src, out, link=link)
    typer.echo(f"fingerprint folder: {out}  (published/ is shareable; private/ holds the keys)")
