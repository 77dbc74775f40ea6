"""The ``fprun`` command line (DESIGN.md section 3).

Commands live in topic modules (``core``, ``zoo``, ``ifp``, ``huref`` ...) that each add themselves
to the one typer app; heavy imports (torch, ray, transformers) happen inside command bodies so that
``fprun --help`` and ``fprun validate`` stay instant. Bad input surfaces as a
:class:`tasks.errors.FprunError`, caught here once: one line on stderr, exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from tasks.errors import FprunError

app = typer.Typer(
    name="fprun",
    help="Ray-based experiment runner for LLM fingerprinting (IF, HuRef, MergeGuard).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module registers its commands on `app` at import (one line per topic, no edits elsewhere).
COMMAND_MODULES = [
    "runner.cli.core", "runner.cli.zoo", "runner.cli.huref", "runner.cli.fingerprint",
    "runner.cli.huref_encoder",
    "runner.cli.finetune", "runner.cli.evals",
    "runner.cli.verify",
    "runner.cli.sweep",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Console-script entry point: exit 2 with one line for bad input, 1 for a failed run."""
    try:
        app()
    except FprunError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
