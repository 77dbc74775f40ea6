"""Report section of HuRef: the ICS matrix as a heatmap, and the contact sheet of pictures."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

from runner.results.report.page import Figure, Section
from runner.results.report.plot import figure


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """One heatmap per compare step (its models in first-seen order), then each contact sheet."""
    if "similarity" not in kinds:
        return []
    sec = Section(
        "HuRef: invariant-terms cosine similarity (ICS)",
        "ICS x 100 between the invariants of the last layers over the same rare tokens: near 100 "
        "for a model and its offspring, near 0 for unrelated models. Cells where the two models "
        "used different token sets (another tokenizer) are marked, as ICS there measures nothing.",
    )
    by_step: dict[str, list[dict]] = defaultdict(list)
    for r in store.read("similarity").to_pylist():
        by_step[r["step_id"]].append(r)
    for sid, rows in sorted(by_step.items()):
        png = f"ics_{sid}.png"
        names = _heatmap(rows, out / png)
        k = rows[0]["k"]
        caption = f"ICS matrix of {len(names)} models (K = {k} tokens per invariant; "
        caption += f"compare step {sid}). Models: {', '.join(names)}."
        sec.figures.append(Figure(png, caption))
    if "huref_image" in kinds:
        sheets = {r["sheet"]: r for r in store.read("huref_image").to_pylist()}
        for sheet, r in sorted(sheets.items()):
            src = Path(sheet)
            if src.is_file():
                name = f"contact_sheet_{r['step_id']}.png"
                shutil.copy2(src, out / name)
                caption = (f"Contact sheet: each model's invariants reduced to a 512-vector "
                           f"({r['method']}) and drawn by {r['generator']}; titles give the "
                           "feature cosine and ICS to the first model.")  # fmt: skip
                sec.figures.append(Figure(name, caption))
    return [sec]


def _heatmap(rows: list[dict], path: Path) -> list[str]:
    import numpy as np

    names: list[str] = []
    for r in rows:
        for m in (r["model_a"], r["model_b"]):
            if m not in names:
                names.append(m)
    n = len(names)
    mat = np.full((n, n), np.nan)
    other = np.zeros((n, n), bool)
    for r in rows:
        i, j = names.index(r["model_a"]), names.index(r["model_b"])
        mat[i, j] = mat[j, i] = r["ics"] if r["ics"] is not None else np.nan
        other[i, j] = other[j, i] = r["tokens_match"] is False
    np.fill_diagonal(mat, 100.0)
    with figure(path, width=1.0 * n + 3, height=0.8 * n + 2) as ax:
        im = ax.imshow(mat, vmin=-10, vmax=100, cmap="viridis")
        ax.figure.colorbar(im, ax=ax, label="ICS")
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i in range(n):
            for j in range(n):
                text = "tok" if other[i, j] else ("" if np.isnan(mat[i, j]) else f"{mat[i, j]:.0f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    return names
