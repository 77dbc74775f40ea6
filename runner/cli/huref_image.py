"""``fprun huref train-encoder`` and ``fprun huref image`` (docs/huref_images.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import DEFAULT_ARTIFACTS, DEFAULT_RESULTS, Artifacts, Results, SetOpt
from tasks.errors import StoreError

CONFIG_NAME = "huref_encoder.yaml"
COPIED = ("encoder.safetensors", "encoder.json", "train_log.jsonl")


def train_encoder(
    out: Annotated[Path, typer.Option(help="folder for the trained encoder")],
    set_: SetOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="start from this YAML (kind: huref_encoder), e.g. configs/smoke/huref_encoder.yaml"
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: train in this process)")
    ] = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Train the CNN encoder on synthetic triplets; defaults are the seed's GPU sizes.

    On a CPU pass small sizes, e.g. --config configs/smoke/huref_encoder.yaml or
    --set tokens=64 --set encoder.kernel=4 --set encoder.stride=2 --set batch_size=4.
    """
    import shutil

    import yaml

    from runner.config import apply_overrides, load_yaml
    from runner.exec.driver import artifact_dir
    from runner.exec.run import run_experiment
    from runner.experiments.huref_encoder import Config
    from tasks.config import validate

    data = load_yaml(config) if config is not None else {"kind": "huref_encoder"}
    data = apply_overrides(data, set_ or [])
    cfg = validate(Config, data, str(config or "train-encoder --set"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_NAME
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    result = run_experiment(
        path, results=results, artifacts=artifacts, local=address is None, address=address
    )
    if result.summary is not None and not result.summary.ok:
        typer.echo("encoder training failed; fix and re-run to resume", err=True)
        raise typer.Exit(1)
    src = artifact_dir(artifacts, next(iter(result.plan)))
    if not (src / COPIED[0]).is_file():
        raise StoreError(
            f"--results says this encoder was trained, but {src} is gone",
            "pass the --artifacts of that run, or a fresh --results",
        )
    for name in COPIED:
        shutil.copy2(src / name, out / name)
    typer.echo(result.text)
    typer.echo(f"encoder: {out}  (fprun huref image DIR... --encoder {out} --out IMAGES)")


def image(
    dirs: Annotated[list[Path], typer.Argument(help="invariant folders (fprun huref extract)")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs and the contact sheet")],
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
    size: Annotated[int, typer.Option(help="picture side in pixels (built-in generator)")] = 256,
    ics: Annotated[bool, typer.Option(help="show ICS to the first model in the titles")] = True,
) -> None:
    """One PNG per model plus a contact sheet: similar models get similar pictures."""
    from tasks.huref.encoder.family import SHEET_FILE, render_family

    manifest = render_family(
        dirs, out, encoder=encoder, allow_pickle=allow_pickle, stylegan=stylegan, size=size, ics=ics
    )
    for m in manifest["models"]:
        extra = "" if m["ics_to_first"] is None else f"  ICS {m['ics_to_first']:.2f}"
        typer.echo(f"{out / m['png']}  cos {m['feature_cos_to_first']:.4f}{extra}")
    typer.echo(f"contact sheet: {out / SHEET_FILE}")
