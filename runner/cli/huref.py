"""``fprun huref ...``: white-box fingerprints (METHODS.md section 3)."""

from __future__ import annotations

import typer

from runner.cli import app

huref_app = typer.Typer(help="HuRef: invariants, ICS/PCS, encoder, images.", no_args_is_help=True)
app.add_typer(huref_app, name="huref")
