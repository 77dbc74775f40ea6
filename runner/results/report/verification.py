"""Report section of the ``verification`` table: FSR by condition with its interval, false
triggers beside it, and the sampled runs' p-values as a table."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from runner.results.report.page import Figure, Section
from runner.results.report.plot import datasets_of, figure, models_of

SETS = ("fingerprint", "unseen_keys", "similar", "normal")
LABELS = {"fingerprint": "keys (FSR)", "unseen_keys": "unseen keys", "similar": "decoys",
          "normal": "normal prompts"}  # fmt: skip
ORDER = ("publish", "publish_w_adapter", "vanilla", "vanilla_w_adapter", "tuned_publish",
         "tuned_w_adapter", "tuned_direct")  # fmt: skip


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """One figure per fingerprint: every greedy condition, the four probe sets side by side."""
    if "verification" not in kinds:
        return []
    rows = store.read("verification").to_pylist()
    greedy = [r for r in rows if r["sample_idx"] is None and ":" not in r["probe_set"]]
    by_fp: dict[tuple, list[dict]] = defaultdict(list)
    for r in greedy:
        by_fp[(r["method"], r["fingerprint_id"])].append(r)
    sec = Section(
        "Fingerprint verification",
        "FSR is the share of fingerprint keys whose greedy completion contains the target; false "
        "triggers are the same share on keys never trained (unseen), decoys and normal prompts. "
        "Bars show the rate, whiskers its 95% Clopper-Pearson interval.",
    )
    for (method, fp_id), group in sorted(by_fp.items(), key=lambda kv: str(kv[0])):
        png = f"verification_{method}_{fp_id}.png"
        n_keys = max((r["n_total"] for r in group if r["probe_set"] == "fingerprint"), default=0)
        _bars(group, out / png, f"{method} fingerprint {fp_id}")
        caption = (f"{method} fingerprint {fp_id}: FSR on {n_keys} keys and false-trigger rates "
                   f"per condition (greedy). Models: {models_of(group)}. "
                   f"Probes: {datasets_of(group)}.")  # fmt: skip
        sec.figures.append(Figure(png, caption))
    sampled = [r for r in rows if r["probe_set"].endswith(":sampled")]
    if sampled:
        sec.tables.append(_sampled_table(sampled))
    return [sec]


def _key(r: dict) -> tuple:
    cond = r["condition"]
    return (ORDER.index(cond) if cond in ORDER else len(ORDER), cond, r["model_step_id"] or "")


def _bars(rows: list[dict], path: Path, title: str) -> None:
    cells: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        cells[_key(r)][r["probe_set"]] = r
    conds = sorted(cells)
    width = 0.8 / len(SETS)
    with figure(path, width=max(6.0, 1.3 * len(conds) + 2)) as ax:
        for j, name in enumerate(SETS):
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(conds):
                r = cells[c].get(name)
                if r is None or r["fsr"] is None:
                    continue
                xs.append(i + (j - 1.5) * width)
                ys.append(100 * r["fsr"])
                lo.append(100 * (r["fsr"] - r["ci_low"]))
                hi.append(100 * (r["ci_high"] - r["fsr"]))
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=LABELS[name])
        repeats = {c[1] for c in conds if sum(d[1] == c[1] for d in conds) > 1}
        labels = [c[1] + (f"\n{c[2][:8]}" if c[1] in repeats and c[2] else "") for c in conds]
        ax.set_xticks(range(len(conds)), labels, fontsize=8)
        ax.set_ylabel("% of probes with the target")
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)


def _sampled_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["condition", "fingerprint", "runs", "hits", "mean FSR", "p (t, one-sided)",
              "p (binomial)"]  # fmt: skip

    def p(v):
        return "-" if v is None else f"{v:.2g}"

    body = [[r["condition"], r["fingerprint_id"] or "-", str(r["n_samples"]),
             f"{r['n_hit']}/{r['n_total']}", f"{100 * (r['mean_fsr'] or 0):.1f}%",
             p(r["p_ttest_one_sided"]), p(r["p_binomial"])] for r in rows]  # fmt: skip
    return header, body
