"""``fprun huref ...``: white-box fingerprints (HuRef, Zeng et al., NeurIPS'24).

``extract`` and ``compare`` run as one-step plans through the same executor and result store as
``fprun run`` (rows land in the ``huref`` / ``similarity`` tables, a re-run is skipped), then copy
the artifact to ``--out``. Other topics (encoder, images) add commands to :data:`huref_app`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Artifacts,
    Results,
    SetOpt,
    run_single_step,
)


def _copy_out(src: Path, out: Path | None) -> None:
    if out is None or out.resolve() == src.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)


def extract(
    model: Annotated[str, typer.Option(help="zoo name, local folder or hub id")],
    out: Annotated[
        Path | None, typer.Option(help="copy invariants.safetensors + huref.json here")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="number of tokens")] = 4096,
    layers: Annotated[int, typer.Option(help="last layers used")] = 2,
    tokens: Annotated[str, typer.Option(help="vocab_rank | corpus | file")] = "vocab_rank",
    corpus: Annotated[list[str] | None, typer.Option(help="corpus item (repeatable)")] = None,
    token_file: Annotated[str | None, typer.Option(help="token strings (tokens=file)")] = None,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    set_: SetOpt = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Extract one model's invariant terms by reading only the tensors they need."""
    from runner.config import apply_overrides
    from runner.plan import Step
    from tasks.config import validate
    from tasks.huref.config import ExtractConfig

    data = {
        "model": model,
        "k": k,
        "n_layers": layers,
        "dtype": dtype,
        "device": device,
        "tokens": {"strategy": tokens, "corpus": corpus or [], "file": token_file},
    }
    cfg = validate(ExtractConfig, apply_overrides(data, set_ or []), "fprun huref extract")
    step = Step(
        "huref_extract", "tasks.huref.extract:extract_step", cfg.model_dump(), "huref", label=model
    )
    folder = run_single_step(step, results, artifacts)
    _copy_out(folder, out)
    typer.echo(f"invariants: {out or folder}")


def compare(
    dirs: Annotated[list[Path], typer.Argument(help="invariants folders (fprun huref extract)")],
    out: Annotated[Path | None, typer.Option(help="copy similarity.json + ics.csv here")] = None,
    pcs: Annotated[bool, typer.Option(help="also stream PCS from the checkpoints")] = True,
    mixed_tokens: Annotated[
        bool, typer.Option(help="allow different token sets (cross-family controls)")
    ] = False,
    chunk_mb: Annotated[int, typer.Option(help="memory budget of one read block")] = 256,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """N x N ICS (and PCS) matrix, reading each invariants file once."""
    import json

    from runner.plan import Step
    from tasks.huref.compare import compare_identity, format_matrix

    config = {
        "paths": [str(d.resolve()) for d in dirs],
        "identity": compare_identity(dirs),
        "pcs": pcs,
        "mixed_tokens": mixed_tokens,
        "chunk_mb": chunk_mb,
    }
    step = Step("huref_compare", "tasks.huref.compare:compare_paths_step", config, "similarity")
    folder = run_single_step(step, results, artifacts)
    _copy_out(folder, out)
    doc = json.loads((folder / "similarity.json").read_text())
    import numpy as np

    names = doc["names"]
    typer.echo(format_matrix(names, np.array(doc["ics"], dtype=float), "ICS"))
    if pcs:
        pcs_m = np.array([[np.nan if v is None else v for v in row] for row in doc["pcs"]])
        typer.echo(format_matrix(names, pcs_m, "PCS"))
    typer.echo(f"matrix: {(out or folder) / 'similarity.json'}")
