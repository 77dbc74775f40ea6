"""``fprun fingerprint``: fingerprint one model and put its fingerprint folder at ``--out``.

A one-experiment run through :func:`runner.exec.run.run_experiment`, so it resumes, records Parquet
rows and verifies exactly like ``fprun run``: the method's bundled YAML (``configs/<method>.yaml``)
is the starting point, ``--model`` and ``--set`` override it (errors name the flag). The
fingerprint folder (``published/`` + ``private/``) is then hard-linked (or copied) from the
artifacts store to ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    AllowPickle,
    Artifacts,
    Force,
    Local,
    Results,
    SetOpt,
)
from tasks.errors import ConfigError

# method -> bundled experiment YAML (a kind whose first step is the fingerprint step)
METHODS: dict[str, str] = {"if_sft": "if_sft.yaml"}


def fingerprint(
    method: Annotated[str, typer.Option(help="if_sft")],
    model: Annotated[str, typer.Option(help="base model: zoo name, local folder or hub id")],
    out: Annotated[Path, typer.Option(help="where the fingerprint folder goes (new or empty)")],
    set_: SetOpt = None,
    verify: Annotated[bool, typer.Option(help="also verify publish/vanilla")] = True,
    link: Annotated[bool, typer.Option(help="symlink the artifact folder, don't copy")] = False,
    allow_pickle: AllowPickle = False,
    force: Force = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Fingerprint MODEL with METHOD (the bundled configs/<method>.yaml plus --set overrides)."""
    from runner.cli.common import (
        check_executor,
        check_out,
        configs_dir,
        finish_run,
        model_arg,
        place_out,
    )
    from runner.exec.driver import artifact_dir
    from runner.exec.run import run_experiment

    if method not in METHODS:
        raise ConfigError(f"--method {method} is not a method", f"use one of {', '.join(METHODS)}")
    check_executor(local, address)
    check_out(out, force=force)
    flags = {"model": ("--model", model_arg(model, allow_pickle))}
    overrides = [] if verify else ["verify.conditions=[]"]
    result = run_experiment(
        configs_dir() / METHODS[method],
        [*overrides, *(set_ or [])],
        results=results,
        artifacts=artifacts,
        local=local,
        address=address,
        flags=flags,
    )
    finish_run(result)
    place_out(artifact_dir(artifacts, result.plan.steps[0]), out, link=link)
    typer.echo(f"fingerprint folder: {out}  (published/ is shareable; private/ holds the keys)")
