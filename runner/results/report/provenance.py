"""Report section of provenance: which code, libraries, devices and datasets made the rows."""

from __future__ import annotations

from pathlib import Path

from runner.results.report.page import Section

COLUMNS = ("git_sha", "fprun_version", "torch_version", "transformers_version", "peft_version",
           "mergekit_version", "ray_version", "device")  # fmt: skip


def section(store, kinds: list[str], out: Path) -> list[Section]:
    """One row per result kind and distinct provenance; the datasets each kind used."""
    header = ["result kind", "rows", *COLUMNS]
    body, data_rows = [], []
    for kind in kinds:
        table = store.read(kind)
        rows = table.select([c for c in COLUMNS if c in table.column_names]).to_pylist()
        combos: dict[tuple, int] = {}
        for r in rows:
            key = tuple(str(r.get(c) or "-") for c in COLUMNS)
            combos[key] = combos.get(key, 0) + 1
        body += [[kind, str(n), *key] for key, n in sorted(combos.items())]
        names = sorted({d for ds in table.column("datasets").to_pylist() for d in (ds or [])})
        data_rows.append([kind, "; ".join(names) or "-"])
    sec = Section("Provenance", "What produced these rows. Offline stand-in datasets are named "
                  "with the dataset they stand in for.")  # fmt: skip
    sec.tables += [(header, body), (["result kind", "datasets"], data_rows)]
    return [sec]
