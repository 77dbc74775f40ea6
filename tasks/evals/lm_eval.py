"""The seed's harmlessness suite through lm-eval, optional.

Needs the ``lm-eval`` extra (``pip install 'fprun[lm-eval]'``) and the tasks' data from the
Hugging Face hub. Either missing is a one-line error; nothing is ever estimated or faked. The
metric per task follows the seed's report_eval.py: acc_norm for arc/hellaswag/piqa/openbookqa/
logiqa/sciq/headqa, mcc for cola, f1 for record, acc otherwise; ``headqa`` runs as headqa_en and
headqa_es, giving the seed's 25 entries, and a ``mean`` row averages them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, DataError
from tasks.evals.config import LmEvalOptions

NORM_TASKS = ("arc", "hellaswag", "piqa", "openbookqa", "logiqa", "sciq", "headqa")
SPLIT_TASKS = {"headqa": ["headqa_en", "headqa_es"]}


def metric_for(task: str) -> str:
    """The seed's metric for a task name."""
    if task == "cola":
        return "mcc"
    if task == "record":
        return "f1"
    return "acc_norm" if task.startswith(NORM_TASKS) else "acc"


def expand(tasks: list[str]) -> list[str]:
    """Task names as lm-eval runs them (headqa split into its two languages)."""
    return [t for name in tasks for t in SPLIT_TASKS.get(name, [name])]


def _import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise ConfigError(
            "suite lm_eval needs the optional package lm-eval, not installed",
            "pip install 'fprun[lm-eval]' (its task data needs the hub)",
        ) from exc
    return lm_eval


def run_lm_eval(
    model_path: Path, opts: LmEvalOptions, *, device: str, dtype: str, batch_size: int
) -> list[dict]:
    """One row per task (the seed's metric, 95% interval from lm-eval's stderr) plus the mean."""
    lm_eval = _import_lm_eval()
    tasks = expand(opts.tasks)
    try:  # loads every task's data: fails here, before any model work, when it is unreachable
        from lm_eval.tasks import TaskManager, get_task_dict

        get_task_dict(tasks, TaskManager())
    except Exception as exc:  # noqa: BLE001 - lm-eval raises many kinds; all mean "no data here"
        raise DataError(
            f"lm-eval cannot load the task data ({type(exc).__name__}: {str(exc)[:120]})",
            "run where the Hugging Face hub is reachable, "
            "or pick other suites (refusal, math, perplexity)",
        ) from exc
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_path},dtype={dtype}",
        tasks=tasks,
        num_fewshot=opts.num_fewshot,
        batch_size=batch_size,
        device=device,
        limit=opts.limit,
    )
    rows = []
    for task in tasks:
        res = out["results"].get(task, {})
        metric = metric_for(task)
        value, stderr = res.get(f"{metric},none"), res.get(f"{metric}_stderr,none")
        ci = (
            (value - 1.96 * stderr, value + 1.96 * stderr)
            if _num(value) and _num(stderr)
            else (None, None)
        )
        rows.append(
            {
                "task": task,
                "metric": metric,
                "value": value,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n": (out.get("n-samples") or {}).get(task, {}).get("effective"),
                "dataset": f"lm-eval:{task}",
                "extra": {"num_fewshot": opts.num_fewshot, "limit": opts.limit},
            }
        )
    scores = [r["value"] for r in rows if _num(r["value"])]
    rows.append(
        {
            "task": "mean",
            "metric": "mean_score",
            "value": sum(scores) / len(scores) if scores else None,
            "n": len(scores),
            "dataset": f"lm-eval: {len(tasks)} harmlessness entries",
            "extra": {"num_fewshot": opts.num_fewshot, "limit": opts.limit},
        }
    )
    return rows


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and x == x  # excludes None and NaN
