"""``fprun zoo get``: materialise a zoo model (real or tiny) as a plain safetensors folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import Force


def zoo_get(
    name: Annotated[str, typer.Argument(help="zoo name, e.g. smollm2-135m-instruct, tiny-llama")],
    out: Annotated[Path, typer.Option(help="destination folder (new, empty, or this model)")],
    link: Annotated[bool, typer.Option(help="symlink the cached folder, don't copy")] = False,
    force: Force = False,
) -> None:
    """Convert (once, cached) and copy a zoo model to OUT."""
    from tasks.models.zoo import zoo_get as get

    path = get(name, out, link=link, force=force)
    typer.echo(f"{name} -> {path}")
