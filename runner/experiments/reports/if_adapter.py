"""The text summary of ``kind: if_adapter``, shaped like the IF paper's Tables 3 and 6.

One line per condition (FSR_pre block, then an FSR_post block per user model), columns FSR on
the keys, false triggers on normal prompts, on similar decoys and on unseen random keys; the mean
FSR_post over user datasets (what Table 3 reports); training lines; utility before/after
fingerprinting with the delta. Torch-free: reads only the result store.
"""

from __future__ import annotations

from collections import defaultdict

from runner.plan import Step

SETS = ("fingerprint", "normal", "similar", "unseen_keys")
PRE = ("vanilla", "publish", "publish_w_adapter", "vanilla_w_adapter")
POST = ("tuned_publish", "tuned_w_adapter", "tuned_direct")
EXPECT = {"vanilla": "0", "publish": "0", "publish_w_adapter": "100", "vanilla_w_adapter": "0",
          "tuned_publish": "0", "tuned_w_adapter": "100", "tuned_direct": "any"}


def report(cfg, steps: list[Step], store) -> str:
    """The whole summary text (see the module docstring)."""
    fp = steps[0]
    a = cfg.adapter
    t_rule = "seed (instructions only)" if a.seed_token_set_bug else "fprun"
    lines = [f"IF_adapter {cfg.name} on {cfg.model}: dim {a.dim}, init {a.init}, residual "
             f"{a.residual}, token set {t_rule}"]
    train_ids = [s.step_id for s in steps if s.result_kind == "train_run"]
    labels: dict[str, str] = {}
    for r in sorted(store.read("train_run", train_ids).to_pylist(),
                    key=lambda r: r["purpose"] != "fingerprint"):
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
        lines.append(_utility(evals, {s.step_id: s.label.rsplit(":", 1)[-1] for s in steps}))
    lines.append(_wall_times(steps, store))
    return "\n".join(lines)


def _wall_times(steps: list[Step], store) -> str:
    """Seconds per step group, from the rows' provenance (each step's start to its end)."""
    groups = {"if_adapter": "fingerprint", "if_sft": "fingerprint", "verify": "verification",
              "verify_adapter": "verification", "finetune": "user fine-tune", "eval": "utility"}
    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for kind in ("train_run", "verification", "eval"):
        wanted = [s.step_id for s in steps if s.result_kind == kind]
        seen = {}
        for r in store.read(kind, wanted).to_pylist():
            seen[r["step_id"]] = (r["finished_at"] - r["started_at"]).total_seconds()
        for s in steps:
            if s.step_id in seen:
                spent[groups[s.kind]] += seen[s.step_id]
                counts[groups[s.kind]] += 1
    parts = [f"{name} {spent[name]:.0f} s ({counts[name]} step{'s' * (counts[name] != 1)})"
             for name in dict.fromkeys(groups.values()) if counts[name]]
    return f"  wall time: {', '.join(parts)}; total {sum(spent.values()):.0f} s"


def _train_line(r: dict) -> str:
    import json

    extra = json.loads(r["extra"] or "{}")
    what = (f"fingerprint {r['fingerprint_id']} (|T| {extra.get('n_tokens_T')}, published rows "
            f"changed {extra.get('published_rows_changed')})" if r["purpose"] == "fingerprint"
            else f"user fine-tune ({r['method']}) on {r['dataset']}")
    return (f"  {what}: {r['steps']} steps, loss {_num(extra.get('first_loss'))} -> "
            f"{_num(r['final_loss'])}, {_num(r['train_seconds'])} s, peak RSS "
            f"{_num(r['peak_rss_mb'])} MB")


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{100 * row['fsr']:.1f} ({row['n_hit']}/{row['n_total']})"


def _fsr_table(rows: list[dict], fp_id: str, labels: dict[str, str]) -> str:
    greedy = defaultdict(dict)  # (condition, user model step) -> probe set -> row
    for r in rows:
        if r["sample_idx"] is None and ":" not in r["probe_set"]:
            user = r["model_step_id"] if r["condition"] in POST else ""
            greedy[(r["condition"], user)][r["probe_set"]] = r
    header = ["stage", "condition", "user data", "FSR % (keys)", "normal %", "similar %",
              "unseen keys %", "ideal FSR"]
    out = []
    for cond in PRE:
        if (cond, "") in greedy:
            out.append(["FSR_pre", cond, "", *(_cell(greedy[(cond, "")].get(s)) for s in SETS),
                        EXPECT[cond]])
    users = sorted({u for (_, u) in greedy if u}, key=lambda u: labels.get(u, u))
    for user in users:
        for cond in POST:
            if (cond, user) in greedy:
                out.append(["FSR_post", cond, _short(labels.get(user, user)),
                            *(_cell(greedy[(cond, user)].get(s)) for s in SETS), EXPECT[cond]])
    if len(users) > 1:  # Table 3 averages FSR_post over the user datasets
        for cond in POST:
            fsrs = [greedy[(cond, u)]["fingerprint"]["fsr"] for u in users
                    if "fingerprint" in greedy.get((cond, u), {})]
            if fsrs:
                out.append(["FSR_post", cond, f"mean of {len(fsrs)}",
                            f"{100 * sum(fsrs) / len(fsrs):.1f}", "", "", "", EXPECT[cond]])
    return _render(header, out)


def _utility(evals: list[dict], which_of: dict[str, str]) -> str:
    by = defaultdict(dict)  # (suite, task, metric) -> vanilla|publish -> row
    for r in evals:
        by[(r["suite"], r["task"], r["metric"])][which_of.get(r["step_id"], "?")] = r
    header = ["utility", "metric", "vanilla", "published", "delta", "data"]
    out = []
    for (suite, task, metric), got in sorted(by.items()):
        v, p = got.get("vanilla"), got.get("publish")
        delta = (f"{p['value'] - v['value']:+.4g}" if v and p and v["value"] is not None
                 and p["value"] is not None else "")
        out.append([f"{suite}:{task}", metric, _val(v), _val(p), delta,
                    _short((v or p)["dataset"] or "")])
    return _render(header, out)


def _val(r: dict | None) -> str:
    if r is None or r["value"] is None:
        return "-"
    ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
    return f"{r['value']:.4g}{ci}"


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join("  " + fmt.format(*r).rstrip() for r in [header, *rows])


def _num(v) -> str:
    return "?" if v is None else f"{v:.4g}"
