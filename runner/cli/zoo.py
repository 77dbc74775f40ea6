"""``fprun zoo get``: materialise a zoo model (real or tiny) as a plain safetensors folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli import app

zoo_app = typer.Typer(help="Models fprun can build or convert offline.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("get")
def zoo_get(
    name: Annotated[str, typer.Argument(help="zoo name, e.g. smollm2-135m-instruct, tiny-llama")],
    out: Annotated[Path, typer.Option(help="destination folder")],
    link: Annotated[bool, typer.Option(help="symlink the cached folder, don't copy")] = False,
) -> None:
    """Convert (once, cached) and copy a zoo model to OUT."""
    from tasks.zoo import zoo_get as get

    path = get(name, out, link=link)
    typer.echo(f"{name} -> {path}")
