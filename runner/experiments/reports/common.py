"""Pieces shared by the IF experiment summaries: training lines, utility, wall times.

Torch-free: everything reads rows from the result store.
"""

from __future__ import annotations

from collections import defaultdict

from runner.plan import Step
from runner.results.text import num, render, short

STEP_GROUPS = {
    "if_adapter": "fingerprint",
    "if_sft": "fingerprint",
    "verify": "verification",
    "verify_adapter": "verification",
    "finetune": "user fine-tune",
    "eval": "utility",
}


def wall_times(steps: list[Step], store) -> str:
    """Seconds per step group, from the rows' provenance (each step's start to its end)."""
    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for kind in ("train_run", "verification", "eval"):
        wanted = [s.step_id for s in steps if s.result_kind == kind]
        seen = {}
        for r in store.read(kind, wanted).to_pylist():
            seen[r["step_id"]] = (r["finished_at"] - r["started_at"]).total_seconds()
        for s in steps:
            if s.step_id in seen and s.kind in STEP_GROUPS:
                spent[STEP_GROUPS[s.kind]] += seen[s.step_id]
                counts[STEP_GROUPS[s.kind]] += 1
    parts = [
        f"{name} {spent[name]:.0f} s ({counts[name]} step{'s' * (counts[name] != 1)})"
        for name in dict.fromkeys(STEP_GROUPS.values())
        if counts[name]
    ]
    return f"  wall time: {', '.join(parts)}; total {sum(spent.values()):.0f} s"


def utility_table(evals: list[dict], which_of: dict[str, str]) -> str:
    """Utility of the vanilla and the published model side by side, with the delta."""
    by = defaultdict(dict)  # (suite, task, metric) -> vanilla|publish -> row
    for r in evals:
        by[(r["suite"], r["task"], r["metric"])][which_of.get(r["step_id"], "?")] = r
    header = ["utility", "metric", "vanilla", "published", "delta", "data"]
    out = []
    for (suite, task, metric), got in sorted(by.items()):
        v, p = got.get("vanilla"), got.get("publish")
        delta = (
            f"{p['value'] - v['value']:+.4g}"
            if v and p and v["value"] is not None and p["value"] is not None
            else ""
        )
        out.append(
            [
                f"{suite}:{task}",
                metric,
                value_cell(v),
                value_cell(p),
                delta,
                short((v or p)["dataset"] or ""),
            ]
        )
    return render(header, out)


def value_cell(r: dict | None) -> str:
    """An eval value with its 95% interval."""
    if r is None or r["value"] is None:
        return "-"
    ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
    return f"{r['value']:.4g}{ci}"


def train_tail(r: dict, first_loss) -> str:
    """The common end of a training line: steps, losses, seconds, peak memory."""
    loss = (
        f"loss {num(first_loss)} -> {num(r['final_loss'])}"
        if first_loss is not None
        else f"final loss {num(r['final_loss'])}"
    )
    return (
        f"{r['steps']} steps, {loss}, {num(r['train_seconds'])} s, peak RSS "
        f"{num(r['peak_rss_mb'])} MB"
    )


def fsr_headline(method: str, steps: list[Step], store) -> list[tuple[str, str, str]]:
    """(what, value, note) per greedy condition: FSR on the keys, unseen-key false triggers."""
    ids = [s.step_id for s in steps if s.result_kind == "verification"]
    by: dict[tuple[str, str], dict] = defaultdict(dict)
    for r in store.read("verification", ids).to_pylist():
        if r["sample_idx"] is None and ":" not in r["probe_set"]:
            by[(r["condition"], r["model_step_id"] or "")][r["probe_set"]] = r
    out = []
    for (cond, _), sets in by.items():
        keys, unseen = sets.get("fingerprint"), sets.get("unseen_keys")
        if keys is None:
            continue
        note = f"unseen-key false triggers {unseen['n_hit']}/{unseen['n_total']}" if unseen else ""
        out.append(
            (
                f"{method} FSR {cond}",
                f"{keys['n_hit']}/{keys['n_total']} ({100 * keys['fsr']:.0f}%)",
                note,
            )
        )
    return out
