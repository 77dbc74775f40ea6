"""The ``fprun`` command line: one map of verbs to the functions that implement them.

Each verb is a plain function in a topic module; :data:`VERBS` below is the whole CLI at a glance.
Heavy imports (torch, ray, transformers) happen inside the functions, so ``fprun --help`` and
``fprun validate`` stay instant. Bad input surfaces as a :class:`tasks.errors.FprunError` (or a
usage error), caught once in :func:`main`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from runner.cli.common import run_app

# verb (or "group verb") -> "module:function"
VERBS: dict[str, str] = {
    "run": "runner.cli.core:run",
    "demo": "runner.cli.core:demo",
    "validate": "runner.cli.core:validate",
    "ls": "runner.cli.core:ls_",
    "zoo get": "runner.cli.zoo:zoo_get",
    "fingerprint": "runner.cli.fingerprint:fingerprint",
    "finetune": "runner.cli.finetune:finetune",
    "verify": "runner.cli.verify:verify",
    "eval": "runner.cli.evals:eval_",
    "huref extract": "runner.cli.huref:extract",
    "huref compare": "runner.cli.huref:compare",
    "huref image": "runner.cli.huref_image:image",
    "huref train-encoder": "runner.cli.huref_image:train_encoder",
    "sweep": "runner.cli.sweep:sweep",
    "merge": "runner.cli.merge:merge",
    "results show": "runner.cli.results:results_show",
    "results export": "runner.cli.results:results_export",
    "report": "runner.cli.report:report",
}
GROUPS: dict[str, str] = {
    "zoo": "Models fprun can build or convert offline.",
    "huref": "HuRef: invariants, ICS/PCS, encoder, images.",
    "results": "Read the result tables.",
}

app = typer.Typer(
    name="fprun",
    help="Ray-based experiment runner for LLM fingerprinting (IF, HuRef, MergeGuard).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register() -> None:
    groups = {name: typer.Typer(help=text, no_args_is_help=True) for name, text in GROUPS.items()}
    for name, group in groups.items():
        app.add_typer(group, name=name)
    for verb, target in VERBS.items():
        module, _, func = target.partition(":")
        fn = getattr(importlib.import_module(module), func)
        group, _, sub = verb.rpartition(" ")
        (groups[group] if group else app).command(sub)(fn)


_register()


def main() -> None:
    """Console-script entry point: exit 2 with one line for bad input, 1 for a failed run."""
    sys.exit(run_app(app))  # runner.cli.common: the one error line, usage errors included
