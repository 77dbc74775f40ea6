"""The text summary of ``kind: if_adapter``, shaped like the IF paper's Tables 3 and 6.

One line per condition (FSR_pre block, then an FSR_post block per user model), columns FSR on
the keys, false triggers on normal prompts, on similar decoys and on unseen random keys; the mean
FSR_post over user datasets (what Table 3 reports); training lines; utility before/after
fingerprinting with the delta. Torch-free: reads only the result store.
"""

from __future__ import annotations

from collections import defaultdict

from runner.experiments.reports.common import train_tail, utility_table, wall_times
from runner.plan import Step
from runner.results.text import render, short

SETS = ("fingerprint", "normal", "similar", "unseen_keys")
PRE = ("vanilla", "publish", "publish_w_adapter", "vanilla_w_adapter")
POST = ("tuned_publish", "tuned_w_adapter", "tuned_direct")
EXPECT = {
    "vanilla": "0",
    "publish": "0",
    "publish_w_adapter": "100",
    "vanilla_w_adapter": "0",
    "tuned_publish": "0",
    "tuned_w_adapter": "100",
    "tuned_direct": "any",
}


def report(cfg, steps: list[Step], store) -> str:
    """The whole summary text (see the module docstring)."""
    fp = steps[0]
    a = cfg.adapter
    t_rule = "seed (instructions only)" if a.seed_token_set_bug else "fprun"
    lines = [
        f"IF_adapter {cfg.name} on {cfg.model}: dim {a.dim}, init {a.init}, residual "
        f"{a.residual}, token set {t_rule}"
    ]
    train_ids = [s.step_id for s in steps if s.result_kind == "train_run"]
    labels: dict[str, str] = {}
    for r in sorted(
        store.read("train_run", train_ids).to_pylist(), key=lambda r: r["purpose"] != "fingerprint"
    ):
        lines.append(_train_line(r))
        if r["purpose"] == "finetune":
            labels[r["step_id"]] = r["dataset"]
    for s in steps:
        if s.kind == "finetune":
            labels.setdefault(s.step_id, s.config.get("data", "?"))
    ver_ids = [s.step_id for s in steps if s.result_kind == "verification"]
    rows = store.read("verification", ver_ids).to_pylist()
    lines.append(_fsr_table(rows, fp.step_id, labels) if rows else "  no verification rows yet")
    evals = store.read("eval", [s.step_id for s in steps if s.result_kind == "eval"]).to_pylist()
    if evals:
        lines.append(utility_table(evals, {s.step_id: s.label.rsplit(":", 1)[-1] for s in steps}))
    lines.append(wall_times(steps, store))
    return "\n".join(lines)


def _train_line(r: dict) -> str:
    import json

    extra = json.loads(r["extra"] or "{}")
    what = (
        f"fingerprint {r['fingerprint_id']} (|T| {extra.get('n_tokens_T')}, published rows "
        f"changed {extra.get('published_rows_changed')})"
        if r["purpose"] == "fingerprint"
        else f"user fine-tune ({r['method']}) on {r['dataset']}"
    )
    return f"  {what}: {train_tail(r, extra.get('first_loss'))}"


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{100 * row['fsr']:.1f} ({row['n_hit']}/{row['n_total']})"


def _fsr_table(rows: list[dict], fp_id: str, labels: dict[str, str]) -> str:
    # Over 60 lines on purpose: its three blocks (pre, post, mean) share one row index.
    greedy = defaultdict(dict)  # (condition, user model step) -> probe set -> row
    for r in rows:
        if r["sample_idx"] is None and ":" not in r["probe_set"]:
            user = r["model_step_id"] if r["condition"] in POST else ""
            greedy[(r["condition"], user)][r["probe_set"]] = r
    header = [
        "stage",
        "condition",
        "user data",
        "FSR % (keys)",
        "normal %",
        "similar %",
        "unseen keys %",
        "ideal FSR",
    ]
    out = []
    for cond in PRE:
        if (cond, "") in greedy:
            out.append(
                [
                    "FSR_pre",
                    cond,
                    "",
                    *(_cell(greedy[(cond, "")].get(s)) for s in SETS),
                    EXPECT[cond],
                ]
            )
    users = sorted({u for (_, u) in greedy if u}, key=lambda u: labels.get(u, u))
    for user in users:
        for cond in POST:
            if (cond, user) in greedy:
                out.append(
                    [
                        "FSR_post",
                        cond,
                        short(labels.get(user, user)),
                        *(_cell(greedy[(cond, user)].get(s)) for s in SETS),
                        EXPECT[cond],
                    ]
                )
    if len(users) > 1:  # Table 3 averages FSR_post over the user datasets
        for cond in POST:
            fsrs = [
                greedy[(cond, u)]["fingerprint"]["fsr"]
                for u in users
                if "fingerprint" in greedy.get((cond, u), {})
            ]
            if fsrs:
                out.append(
                    [
                        "FSR_post",
                        cond,
                        f"mean of {len(fsrs)}",
                        f"{100 * sum(fsrs) / len(fsrs):.1f}",
                        "",
                        "",
                        "",
                        EXPECT[cond],
                    ]
                )
    return render(header, out)
