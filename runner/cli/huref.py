"""``fprun huref ...``: white-box fingerprints (HuRef, Zeng et al., NeurIPS'24).

``extract`` and ``compare`` run as one-step plans through the same executor and result store as
``fprun run`` (rows land in the ``huref`` / ``similarity`` tables, a re-run is skipped), then copy
the artifact's files to a new ``--out`` folder. Every input (flags, model, token file, the
invariants' shapes) is checked before the step runs, and errors name the flag typed.
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
    check_out,
    config_from_flags,
    model_arg,
    place_files,
    run_single_step,
)
from tasks.errors import ConfigError
from tasks.huref.store import META_FILE, TENSOR_FILE
from tasks.readers import read_text


def extract(
    model: Annotated[str, typer.Option(help="zoo name, local folder or hub id")],
    out: Annotated[
        Path | None,
        typer.Option(help="a new folder for invariants.safetensors + huref.json"),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="number of tokens (>= 2)")] = 4096,
    layers: Annotated[int, typer.Option(help="last layers used (>= 1)")] = 2,
    tokens: Annotated[str, typer.Option(help="vocab_rank | corpus | file")] = "vocab_rank",
    corpus: Annotated[list[str] | None, typer.Option(help="corpus item (repeatable)")] = None,
    token_file: Annotated[str | None, typer.Option(help="token strings (--tokens file)")] = None,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    allow_pickle: AllowPickle = False,
    force: Force = False,
    set_: SetOpt = None,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Extract one model's invariant terms by reading only the tensors they need."""
    from runner.plan import Step
    from tasks.huref.config import ExtractConfig

    flags = {
        "model": ("--model", model),
        "k": ("--k", k),
        "n_layers": ("--layers", layers),
        "dtype": ("--dtype", dtype),
        "device": ("--device", device),
        "tokens.strategy": ("--tokens", tokens),
        "tokens.corpus": ("--corpus", corpus or []),
        "tokens.file": ("--token-file", token_file),
    }
    cfg = config_from_flags(ExtractConfig, flags, set_, "fprun huref extract")
    if cfg.tokens.strategy == "file":
        if not cfg.tokens.file:
            raise ConfigError("--tokens file needs --token-file PATH", "pass --token-file")
        read_text(cfg.tokens.file, what="--token-file")
    cfg = cfg.model_copy(update={"model": model_arg(model, allow_pickle)})
    if out is not None:
        check_out(out, force=force)
    step = Step(
        "huref_extract", "tasks.huref.extract:extract_step", cfg.model_dump(), "huref", label=model
    )
    folder = run_single_step(step, results, artifacts, local=local, address=address)
    if out is not None:
        place_files(folder, out, (TENSOR_FILE, META_FILE))
    typer.echo(f"invariants: {out or folder}")


def compare(
    dirs: Annotated[list[Path], typer.Argument(help="invariants folders (fprun huref extract)")],
    out: Annotated[
        Path | None, typer.Option(help="a new folder for similarity.json + ics.csv")
    ] = None,
    pcs: Annotated[bool, typer.Option(help="also stream PCS from the checkpoints")] = True,
    mixed_tokens: Annotated[
        bool, typer.Option(help="allow different token sets (cross-family controls)")
    ] = False,
    chunk_mb: Annotated[int, typer.Option(help="memory budget of one read block (>= 1)")] = 256,
    force: Force = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """N x N ICS (and PCS) matrix, reading each invariants file once."""
    import json

    import numpy as np

    from runner.plan import Step
    from tasks.huref.compare import check_invariants, compare_identity, format_matrix
    from tasks.huref.config import CompareConfig

    flags = {
        "pcs": ("--pcs" if pcs else "--no-pcs", pcs),
        "mixed_tokens": ("--mixed-tokens", mixed_tokens),
        "chunk_mb": ("--chunk-mb", chunk_mb),
    }
    cfg = config_from_flags(CompareConfig, flags, None, "fprun huref compare")
    if len(dirs) < 2:
        raise ConfigError("compare needs at least two invariants folders", "pass two or more")
    check_invariants(dirs, mixed_tokens=cfg.mixed_tokens, pcs=cfg.pcs)
    if out is not None:
        check_out(out, force=force)
    config = {
        "paths": [str(d.resolve()) for d in dirs],
        "identity": compare_identity(dirs),
        **cfg.model_dump(),
    }
    step = Step("huref_compare", "tasks.huref.compare:compare_paths_step", config, "similarity")
    folder = run_single_step(step, results, artifacts, local=local, address=address)
    if out is not None:
        place_files(folder, out, ("similarity.json", "ics.csv"))
    doc = json.loads((folder / "similarity.json").read_text(encoding="utf-8"))
    names = doc["names"]
    typer.echo(format_matrix(names, np.array(doc["ics"], dtype=float), "ICS"))
    if pcs:
        pcs_m = np.array([[np.nan if v is None else v for v in row] for row in doc["pcs"]])
        typer.echo(format_matrix(names, pcs_m, "PCS"))
    typer.echo(f"matrix: {(out or folder) / 'similarity.json'}")
