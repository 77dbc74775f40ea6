"""Report section of the ``eval`` table: each utility metric per model with its interval."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from runner.results.report.page import Figure, Section
from runner.results.report.plot import datasets_of, figure


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """One bar chart per (suite, task, metric): the models side by side."""
    if "eval" not in kinds:
        return []
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in store.read("eval").to_pylist():
        if r["value"] is not None:
            by[(r["suite"], r["task"], r["metric"])].append(r)
    sec = Section("Utility", "Did fingerprinting, fine-tuning or merging hurt the model?")
    for (suite, task, metric), rows in sorted(by.items()):
        rows = sorted(rows, key=lambda r: str(r["model_ref"]))
        png = f"eval_{suite}_{task}_{metric}.png".replace("/", "_").replace(":", "_")
        with figure(out / png, width=max(5.0, 0.9 * len(rows) + 2), height=3.8) as ax:
            ys = [r["value"] for r in rows]
            err = None
            if all(r["ci_low"] is not None for r in rows):
                err = [[y - r["ci_low"] for y, r in zip(ys, rows, strict=True)],
                       [r["ci_high"] - y for y, r in zip(ys, rows, strict=True)]]  # fmt: skip
            ax.bar(range(len(rows)), ys, yerr=err, capsize=3)
            ax.set_xticks(range(len(rows)), [_short(r["model_ref"]) for r in rows],
                          rotation=30, ha="right", fontsize=8)  # fmt: skip
            ax.set_ylabel(metric)
            ax.set_title(f"{suite}: {task}", fontsize=10)
        n = max(r["n"] or 0 for r in rows)
        sec.figures.append(
            Figure(
                png,
                (
                    f"{suite} / {task}: {metric} per model (n = {n} items each"
                    f"{', 95% intervals' if err else ''}). Data: {datasets_of(rows)}."
                ),
            )
        )
    return [sec] if sec.figures else []


def _short(ref: str | None) -> str:
    text = str(ref or "-").rstrip("/")
    return text.rsplit("/", 2)[-2] + "/" + text.rsplit("/", 1)[-1] if text.count("/") > 1 else text
