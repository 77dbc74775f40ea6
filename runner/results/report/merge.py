"""Report section of the ``merge_cell`` table: does the fingerprint survive the merge, and at
what cost in HuRef similarity and utility?

Three figures per store, drawn from the rows alone: FSR and false triggers against the
fingerprinted model's weight (runner.results.merge_plot, one line per method), ICS of the merged
model to each parent, and refusal and math against the same weight; a table holds the parents'
baselines and the failed cells with their error.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import fmean

from runner.results.merge_plot import plot_fsr_vs_weight
from runner.results.report.page import Figure, Section
from runner.results.report.plot import figure


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """The merge grid's figures and its baselines table (nothing when no merged cell is ok)."""
    if "merge_cell" not in kinds:
        return []
    rows = store.read("merge_cell").to_pylist()
    merged = [r for r in rows if r["role"] == "merged" and r["status"] == "ok"]
    if not merged:
        return []
    sec = Section(
        "Merging (MergeGuard)",
        "Each point is one merge of a fingerprinted model with another expert, verified and "
        "evaluated; random methods show the mean over their seeds.",
    )
    pairs = ", ".join(sorted({f"{r['pair']} ({r['model_a']} + {r['model_b']})" for r in merged}))
    keys = max(r["fsr_total"] or 0 for r in merged)
    unseen = max(r["false_trigger_total"] or 0 for r in merged)
    plot_fsr_vs_weight(rows, out / "merge_fsr.png", title="Fingerprint survival under merging")
    sec.figures.append(
        Figure(
            "merge_fsr.png",
            f"FSR ({keys} fingerprint keys, 95% Clopper-Pearson) and false triggers ({unseen} "
            f"unseen random keys) of {len(merged)} merged models against the fingerprinted "
            f"model's weight. Pairs: {pairs}.",
        )
    )
    if any(r["ics_a"] is not None for r in merged):
        _metric_plot(merged, out / "merge_ics.png", [("ics_a", "ICS to the fingerprinted"),
                     ("ics_b", "ICS to the expert")], "HuRef ICS")  # fmt: skip
        sec.figures.append(
            Figure(
                "merge_ics.png",
                "HuRef invariant-term cosine similarity (ICS) of each merged model to the "
                "fingerprinted parent and to the other expert, mean over seeds per method.",
            )
        )
    if any(r["refusal_rate"] is not None or r["math_accuracy"] is not None for r in merged):
        n_ref = max(r["refusal_n"] or 0 for r in merged)
        n_math = max(r["math_n"] or 0 for r in merged)
        task = next((r["math_task"] for r in merged if r["math_task"]), "math")
        _metric_plot(merged, out / "merge_utility.png", [("refusal_rate", "refusal rate"),
                     ("math_accuracy", f"{task} accuracy")], "utility")  # fmt: skip
        sec.figures.append(
            Figure(
                "merge_utility.png",
                f"Utility of each merged model: refusal rate on {n_ref} harmful prompts and "
                f"accuracy on {n_math} {task} problems (greedy), mean over seeds per method.",
            )
        )
    if any(r["refusal_rate"] is not None and r["math_accuracy"] is not None for r in rows):
        _tradeoff(rows, out / "merge_tradeoff.png")
        sec.figures.append(
            Figure(
                "merge_tradeoff.png",
                "Refusal against math accuracy: each merged model (by method) beside its parents "
                "(stars), the utility a merge trades for keeping or losing the fingerprint.",
            )
        )
    for method, cells in sorted(_by_density(merged).items()):
        png = f"merge_heatmap_{method}.png"
        _heatmap(cells, out / png, method)
        sec.figures.append(
            Figure(
                png,
                f"{method}: FSR over the fingerprinted weight x density "
                f"({len(cells)} cells, mean over seeds and pairs).",
            )
        )
    sec.tables.append(_baselines(rows))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        sec.tables.append(
            (
                ["pair", "method", "weights", "error"],
                [
                    [r["pair"], r["merge_method"], str(r["weights"]), (r["error"] or "")[:160]]
                    for r in failed
                ],  # fmt: skip
            )
        )
    return [sec]


def _metric_plot(rows: list[dict], path: Path, panels: list[tuple[str, str]], what: str) -> None:
    """One panel per metric: the metric against the fingerprinted weight, a line per method."""
    with figure(path, width=6 * len(panels), height=4.0, ncols=len(panels)) as axes:
        for ax, (col, label) in zip(axes, panels, strict=True):
            by: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(
                lambda: defaultdict(list)
            )
            for r in rows:
                if r[col] is not None:
                    w = round(r["weight_fingerprinted"] or 0.0, 6)
                    by[(r["pair"], r["merge_method"])][w].append(r[col])
            for (pair, method), pts in sorted(by.items()):
                xs = sorted(pts)
                ax.plot(xs, [fmean(pts[x]) for x in xs], marker="o", label=f"{pair}: {method}")
            ax.set_xlabel("weight of the fingerprinted model")
            ax.set_ylabel(label)
            ax.set_title(f"{what}: {label}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.ticklabel_format(axis="y", useOffset=False)  # ICS near 100: digits, not +9.999e1
        axes[0].legend(fontsize=7)


def _baselines(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The parents as models of their own: FSR, false triggers, refusal, math."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    body = [
        [
            r["pair"],
            r["role"],
            pct(r["fsr"]),
            pct(r["false_trigger_rate"]),
            pct(r["refusal_rate"]),
            pct(r["math_accuracy"]),
        ]  # fmt: skip
        for r in sorted(rows, key=lambda r: (r["pair"], r["role"]))
        if r["role"] != "merged"
    ]
    return (["pair", "parent", "FSR", "false triggers", "refusal", "math"], body)


def _tradeoff(rows: list[dict], path: Path) -> None:
    """Refusal rate against math accuracy, merged models by method, parents as stars."""
    with figure(path, width=6.5, height=4.5) as ax:
        by: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["refusal_rate"] is not None and r["math_accuracy"] is not None:
                key = r["merge_method"] if r["role"] == "merged" else f"parent: {r['role']}"
                by[key].append(r)
        for key, rs in sorted(by.items()):
            star = key.startswith("parent")
            ax.scatter([r["math_accuracy"] for r in rs], [r["refusal_rate"] for r in rs],
                       marker="*" if star else "o", s=140 if star else 25, label=key)  # fmt: skip
        ax.set_xlabel("math accuracy")
        ax.set_ylabel("refusal rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def _by_density(rows: list[dict]) -> dict[str, dict[tuple[float, float], list[float]]]:
    """method -> (weight, density) -> FSRs, for methods swept over two or more densities."""
    out: dict[str, dict[tuple[float, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["densities"] and r["fsr"] is not None:
            key = (round(r["weight_fingerprinted"] or 0.0, 6), round(r["densities"][0], 6))
            out[r["merge_method"]][key].append(r["fsr"])
    return {m: c for m, c in out.items() if len({d for _, d in c}) > 1}


def _heatmap(cells: dict[tuple[float, float], list[float]], path: Path, method: str) -> None:
    weights = sorted({w for w, _ in cells})
    densities = sorted({d for _, d in cells})
    grid = [[fmean(cells[(w, d)]) if (w, d) in cells else float("nan") for w in weights]
            for d in densities]  # fmt: skip
    with figure(path, width=1.0 + 0.8 * len(weights), height=1.5 + 0.5 * len(densities)) as ax:
        img = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(weights)), [f"{w:g}" for w in weights])
        ax.set_yticks(range(len(densities)), [f"{d:g}" for d in densities])
        ax.set_xlabel("weight of the fingerprinted model")
        ax.set_ylabel("density")
        ax.set_title(f"{method}: FSR", fontsize=10)
        ax.figure.colorbar(img, ax=ax)
