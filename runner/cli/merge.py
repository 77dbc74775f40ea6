"""``fprun merge CONFIG.yml --out DIR``: one mergekit merge, in-process, as a one-step plan.

The YAML is mergekit's own (every method mergekit 0.1.5 registers); ``${name}`` placeholders (the
templates in ``configs/merges/``) are filled with ``--model name=REF``. Models are resolved and
preflighted before any work (exit 2 for a missing path, pickle weights, or parents that differ in
architecture, shapes, vocabulary or tokenizer). The merged model lands in ``--out`` (hard links
to the step's artifact folder); its ``merge_cell`` row goes to ``--results``, and a re-run with
the same YAML, models (by content), seed and device is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    Artifacts,
    Force,
    Local,
    Results,
    SetOpt,
)


def merge(
    config: Annotated[Path, typer.Argument(help="mergekit YAML (e.g. configs/merges/ties.yml)")],
    out: Annotated[Path, typer.Option(help="where the merged model folder goes (new)")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="fill a ${name} placeholder: name=REF (repeatable)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="random_seed, passed for every method")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N (CUDA draws other masks)")] = (
        "cpu"
    ),
    shard_mb: Annotated[int, typer.Option(help="output shard size in MiB (bounds RAM)")] = 1024,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
    set_: SetOpt = None,
    local: Local = False,
    address: Address = None,
    force: Force = False,
) -> None:
    """Merge models with mergekit's Python API (in-process, seeded, preflighted)."""
    from runner.cli.common import (
        check_executor,
        check_out,
        config_from_flags,
        place_out,
        run_single_step,
    )
    from runner.plan import Step
    from tasks.errors import ConfigError
    from tasks.merge.config import MergeYamlConfig
    from tasks.merge.yaml_step import fill_placeholders, resolve_yaml
    from tasks.models.local import model_identity

    check_executor(local, address)
    check_out(out, force=force)
    if not config.is_file():
        raise ConfigError(f"{config} does not exist", "pass a mergekit YAML file")
    models = {}
    for item in model or []:
        name, sep, ref = item.partition("=")
        if not sep or not name or not ref:
            raise ConfigError(f"--model {item}: expected NAME=REF", "e.g. --model base=tiny-llama")
        models[name.strip()] = ref.strip()
    text = fill_placeholders(config.read_text(encoding="utf-8"), models, str(config))
    flags = {
        "seed": ("--seed", seed),
        "device": ("--device", device),
        "shard_mb": ("--shard-mb", shard_mb),
    }
    cfg = config_from_flags(MergeYamlConfig, flags, set_, "fprun merge", base={"yaml": text})
    data, folders = resolve_yaml(text, str(config))  # models resolved and preflighted
    cfg = cfg.model_copy(
        update={"identities": {ref: model_identity(f) for ref, f in folders.items()}}
    )
    step = Step(
        "merge",
        "tasks.merge.yaml_step:merge_yaml_step",
        cfg.model_dump(mode="json"),
        "merge_cell",
        label=f"{data['merge_method']} ({config.name})",
    )
    folder = run_single_step(step, results, artifacts, local=local, address=address)
    place_out(folder / "merged", out)
    typer.echo(f"merged ({data['merge_method']}, seed {cfg.seed}, {cfg.device}) -> {out}")
