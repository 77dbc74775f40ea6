"""Report section of sweeps: the objective against each swept parameter, one plot per sweep."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from runner.results.report.page import Figure, Section
from runner.results.report.plot import figure


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """Per sweep and swept key: every finished trial's objective (errored trials left out)."""
    if "sweep_trial" not in kinds:
        return []
    by_sweep: dict[str, list[dict]] = defaultdict(list)
    for r in store.read("sweep_trial").to_pylist():
        by_sweep[r["sweep"]].append(r)
    sec = Section("Sweeps", "Each point is one Tune trial; the objective is the sweep's metric.")
    for name, rows in sorted(by_sweep.items()):
        done = [r for r in rows if r["value"] is not None]
        if not done:
            continue
        params = [json.loads(r["params"]) for r in done]
        metric = done[0]["metric"]
        for key in sorted({k for p in params for k in p}):
            pts = [(p[key], r["value"]) for p, r in zip(params, done, strict=True) if key in p]
            png = f"sweep_{name}_{key}.png".replace("/", "_")
            with figure(out / png, width=6, height=3.8) as ax:
                xs = [x for x, _ in pts]
                numeric = all(isinstance(x, int | float) for x in xs)
                ax.scatter(xs if numeric else [str(x) for x in xs], [y for _, y in pts])
                if numeric and len(set(xs)) > 1 and min(xs) > 0 and max(xs) / min(xs) > 20:
                    ax.set_xscale("log")
                ax.set_xlabel(key)
                ax.set_ylabel(metric)
                ax.set_title(f"sweep {name}", fontsize=10)
            sec.figures.append(
                Figure(
                    png,
                    (
                        f"Sweep {name}: {metric} of {len(pts)} finished trials against {key} "
                        f"({len(rows) - len(done)} trials without a value left out)."
                    ),
                )
            )
    return [sec] if sec.figures else []
