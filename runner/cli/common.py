"""Options shared by many commands, so every verb spells them the same way."""

from __future__ import annotations

from typing import Annotated

import typer

Results = Annotated[
    str, typer.Option("--results", help="results root (folder or pyarrow.fs URI)")
]
Artifacts = Annotated[str, typer.Option("--artifacts", help="artifacts root (shared folder)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config key: a.b=value (repeatable)")
]
DEFAULT_RESULTS = "./fprun-results"
DEFAULT_ARTIFACTS = "./fprun-artifacts"
