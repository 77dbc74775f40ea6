"""The text summary of ``kind: if_sft``, shaped like the IF paper's Tables 5 and 6.

First every greedy row (condition x probe set: hits/total, FSR, 95% Clopper-Pearson CI), the
``sample_from_bos`` count and the sampled aggregates with their p-values; then, when user models
exist, one Table-5 line per user dataset: FSR_post at t=0, false triggers on normal and similar
prompts, the mean FSR_post over the sampled runs at t=0.7 and its p-values. Torch-free.
"""

from __future__ import annotations

import json

from runner.experiments.reports.common import train_tail, utility_table, wall_times
from runner.plan import Step
from runner.results.text import pct, render, short

ORDER = ("publish", "vanilla", "sample_from_bos", "tuned_publish")
SETS = ("fingerprint", "unseen_keys", "similar", "normal", "regularization", "bos_samples")


def report(cfg, steps: list[Step], store) -> str:
    """The whole summary text (see the module docstring)."""
    lines = [f"IF_SFT {cfg.name} on {cfg.model} ({cfg.prompt_format})"]
    labels: dict[str, str] = {
        s.step_id: str(s.config.get("data", "?")) for s in steps if s.kind == "finetune"
    }
    train_ids = [s.step_id for s in steps if s.result_kind == "train_run"]
    for r in sorted(
        store.read("train_run", train_ids).to_pylist(), key=lambda r: r["purpose"] != "fingerprint"
    ):
        lines.append(_train_line(r))
    ver_ids = [s.step_id for s in steps if s.result_kind == "verification"]
    rows = store.read("verification", ver_ids).to_pylist()
    if not rows:
        return "\n".join(lines + ["  no verification rows yet"])
    lines.append(_rows_table(rows, labels))
    tuned = [r for r in rows if r["condition"] == "tuned_publish"]
    if tuned:
        lines.append("  Table 5 shape (per user model):")
        lines.append(_table5(tuned, labels))
    evals = store.read("eval", [s.step_id for s in steps if s.result_kind == "eval"]).to_pylist()
    if evals:
        lines.append(utility_table(evals, {s.step_id: s.label.rsplit(":", 1)[-1] for s in steps}))
    lines.append(wall_times(steps, store))
    return "\n".join(lines)


def _train_line(r: dict) -> str:
    extra = json.loads(r["extra"] or "{}")
    what = (
        f"fingerprint {r['fingerprint_id']} ({r['dataset']})"
        if r["purpose"] == "fingerprint"
        else f"user fine-tune ({r['method']}) on {r['dataset']}"
    )
    return f"  {what}: {train_tail(r, extra.get('first_loss'))}"


def _rows_table(rows: list[dict], labels: dict[str, str]) -> str:
    header = ["condition", "user data", "probe_set", "hits/total", "FSR %", "95% CI", "p"]
    out = []

    def key(r):
        base = r["probe_set"].split(":")[0]
        return (
            ORDER.index(r["condition"]) if r["condition"] in ORDER else 9,
            labels.get(r["model_step_id"], "") if r["condition"] == "tuned_publish" else "",
            SETS.index(base) if base in SETS else 99,
            ":" in r["probe_set"],
        )

    for r in sorted(rows, key=key):
        if r["sample_idx"] is not None:
            continue  # individual sampled runs: the aggregate row summarises them
        if r.get("n_samples"):
            hits, fsr = (
                f"{r['n_hit']}/{r['n_total']} in {r['n_samples']} runs",
                _p(r.get("mean_fsr")),
            )
        else:
            hits, fsr = f"{r['n_hit']}/{r['n_total']}", _p(r["fsr"])
        ci = f"[{_p(r['ci_low'])}, {_p(r['ci_high'])}]" if r.get("ci_low") is not None else ""
        user = (
            short(labels.get(r["model_step_id"], "?"), 32)
            if r["condition"] == "tuned_publish"
            else ""
        )
        out.append([r["condition"], user, r["probe_set"], hits, fsr, ci, _pvalues(r)])
    return render(header, out)


def _table5(rows: list[dict], labels: dict[str, str]) -> str:
    header = ["user data", "FSR_post t=0", "normal", "similar", "FSR_post t=0.7 (mean)", "p"]
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["sample_idx"] is None:
            by.setdefault(r["model_step_id"], {})[r["probe_set"]] = r
    out = []
    for sid, sets in sorted(by.items(), key=lambda kv: labels.get(kv[0], kv[0])):
        sampled = sets.get("fingerprint:sampled")
        out.append(
            [
                short(labels.get(sid, sid), 40),
                _cell(sets.get("fingerprint")),
                _cell(sets.get("normal")),
                _cell(sets.get("similar")),
                _p(sampled.get("mean_fsr")) + f" ({sampled['n_samples']} runs)" if sampled else "-",
                _pvalues(sampled) if sampled else "",
            ]
        )
    return render(header, out)


def _cell(r: dict | None) -> str:
    return "-" if r is None else f"{_p(r['fsr'])} ({r['n_hit']}/{r['n_total']})"


def _pvalues(r: dict) -> str:
    parts = []
    for key, name in (
        ("p_ttest_one_sided", "t1"),
        ("p_ttest_two_sided", "t2"),
        ("p_binomial", "binom"),
    ):
        if r.get(key) is not None:
            parts.append(f"{name}={r[key]:.2g}")
    return " ".join(parts)


def _p(v) -> str:
    return "" if v is None else pct(v)
