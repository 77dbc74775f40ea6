"""``fprun huref train-encoder`` and ``fprun huref image`` (docs/huref_images.md)."""

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
from tasks.errors import StoreError

CONFIG_NAME = "huref_encoder.yaml"
COPIED = ("encoder.safetensors", "encoder.json", "train_log.jsonl")


def train_encoder(
    out: Annotated[Path, typer.Option(help="folder for the trained encoder (new or empty)")],
    set_: SetOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="start from this YAML (kind: huref_encoder), e.g. configs/smoke/huref_encoder.yaml"
        ),
    ] = None,
    force: Force = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Train the CNN encoder on synthetic triplets; defaults are the seed's GPU sizes.

    On a CPU pass small sizes, e.g. --config configs/smoke/huref_encoder.yaml or
    --set tokens=64 --set encoder.kernel=4 --set encoder.stride=2 --set batch_size=4.
    """
    import yaml

    from runner.cli.common import check_executor, check_out, place_files, run_single_step
    from runner.config import apply_overrides, load_yaml
    from runner.experiments.huref_encoder import Config, plan
    from tasks.config import validate

    check_executor(local, address)
    origins: dict[str, str] = {}
    data = load_yaml(config) if config is not None else {"kind": "huref_encoder"}
    data = apply_overrides(data, set_ or [], origins)
    cfg = validate(Config, data, str(config or "fprun huref train-encoder"), origins)
    check_out(out, force=force)
    (step,) = plan(cfg, None)
    src = run_single_step(step, results, artifacts, local=local, address=address)
    if not (src / COPIED[0]).is_file():
        raise StoreError(
            f"--results says this encoder was trained, but {src} is gone",
            "pass the --artifacts of that run, or a fresh --results",
        )
    place_files(src, out, COPIED)
    (out / CONFIG_NAME).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    from runner.experiments.huref_encoder import summarize
    from runner.results.store import ResultStore

    typer.echo(summarize(cfg, ResultStore(results), None))
    typer.echo(f"encoder: {out}  (fprun huref image DIR... --encoder {out} --out IMAGES)")


def image(
    dirs: Annotated[list[Path], typer.Argument(help="invariant folders (fprun huref extract)")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs and the contact sheet (new)")],
    encoder: Annotated[
        Path | None, typer.Option(help="trained CNN encoder folder (default: mean pooling)")
    ] = None,
    stylegan: Annotated[
        Path | None,
        typer.Option(
            help="NVIDIA StyleGAN2 network pickle (e.g. afhqdog.pkl) instead of the built-in "
            "generator; needs --allow-pickle and NVIDIA's dnnlib/torch_utils"
        ),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="allow pickled encoders/generators (they can run code)"
        ),
    ] = False,
    size: Annotated[
        int, typer.Option(min=8, max=2048, help="picture side in pixels (built-in generator)")
    ] = 256,
    ics: Annotated[bool, typer.Option(help="show ICS to the first model in the titles")] = True,
    force: Force = False,
) -> None:
    """One PNG per model plus a contact sheet: similar models get similar pictures."""
    from runner.cli.common import check_out, clear_out
    from tasks.files import atomic_path
    from tasks.huref.compare import check_invariants
    from tasks.huref.encoder.family import SHEET_FILE, render_family

    check_invariants(dirs, mixed_tokens=True)  # same K and layers, readable, before any work
    check_out(out, force=force)
    with atomic_path(out) as tmp:  # all pictures or none
        tmp.mkdir()
        manifest = render_family(
            dirs, tmp, encoder=encoder, allow_pickle=allow_pickle, stylegan=stylegan, size=size,
            ics=ics,
        )  # fmt: skip
        clear_out(out)
    for m in manifest["models"]:
        extra = "" if m["ics_to_first"] is None else f"  ICS {m['ics_to_first']:.2f}"
        typer.echo(f"{out / m['png']}  cos {m['feature_cos_to_first']:.4f}{extra}")
    typer.echo(f"contact sheet: {out / SHEET_FILE}")
