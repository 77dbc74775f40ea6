"""``fprun eval``: one utility suite on one model, as a one-step plan.

Rows go to the ``eval`` table with provenance; a re-run of the same model (same weights, checked
by content for local folders) and settings is skipped and prints the stored rows.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    AllowPickle,
    Artifacts,
    Local,
    Results,
    SetOpt,
)


def format_rows(rows: list[dict]) -> str:
    """One line per row: task, metric, value with its interval, n and dataset."""
    lines = []
    for r in rows:
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
        value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        lines.append(
            f"{r['suite']:<10} {r['task']:<28} {r['metric']:<13} {value}{ci}  "
            f"n={r['n']}  {r['dataset']}"
        )
    return "\n".join(lines)


def eval_(
    model: Annotated[
        str,
        typer.Option(
            help="zoo name, model folder, fingerprint folder (its published model) or hub id"
        ),
    ],
    suite: Annotated[str, typer.Option(help="refusal | math | perplexity | lm_eval")],
    set_: SetOpt = None,
    allow_pickle: AllowPickle = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Measure a model's utility: perplexity, math accuracy or refusal rate."""
    from runner.cli.common import check_executor, config_from_flags, model_arg, run_single_step
    from runner.plan import Step
    from runner.results.store import ResultStore
    from tasks.evals.config import EvalConfig
    from tasks.finetune.config import model_identity_of

    check_executor(local, address)
    flags = {"suite": ("--suite", suite), "model": ("--model", model)}
    cfg = config_from_flags(EvalConfig, flags, set_, "fprun eval")
    ref = model_arg(model, allow_pickle)  # a corrupt checkpoint fails here, not in the step
    cfg = cfg.model_copy(update={"model": ref, "model_identity": model_identity_of(ref)})
    step = Step(
        "eval",
        "tasks.evals.step:eval_step",
        cfg.model_dump(mode="json", exclude_defaults=True),
        "eval",
        label=suite,
    )
    run_single_step(step, results, artifacts, local=local, address=address)
    rows = ResultStore(results).read("eval", [step.step_id]).to_pylist()
    typer.echo(format_rows(rows))
