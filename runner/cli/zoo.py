"""``fprun zoo get``: materialise a zoo model (real or tiny) as a plain safetensors folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def zoo_get(
    name: Annotated[str, typer.Argument(help="zoo name, e.g. smollm2-135m-instruct, tiny-llama")],
    out: Annotated[Path, typer.Option(help="destination folder")],
    link: Annotated[bool, typer.Option(help="symlink the cached folder, don't copy")] = False,
) -> None:
    """Convert (once, cached) and copy a zoo model to OUT."""
    from tasks.models.zoo import zoo_get as get

    path = get(name, out, link=link)
    typer.echo(f"{name} -> {path}")
