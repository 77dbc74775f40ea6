"""The report page: sections of figures and tables rendered into one self-contained HTML file."""

from __future__ import annotations

import html
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from runner.results.store import ResultStore
from tasks.errors import StoreError
from tasks.files import atomic_write_text

PAGE = "index.html"
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;
color:#444;margin-top:.4em}table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}th{background:#f5f5f5}
.note{color:#555;font-size:.9em}"""


@dataclass
class Figure:
    """A PNG (relative to the page) and its caption."""

    png: str
    caption: str


@dataclass
class Section:
    """One part of the page: a title, a lead sentence, figures and small tables."""

    title: str
    lead: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)


def build_report(results: str | Path, out: str | Path) -> Path:
    """Write ``out/index.html`` and its PNGs from the store at ``results``; returns the page.

    Raises:
        StoreError: ``results`` holds no result tables, or ``out`` cannot be written.
    """
    from runner.results.report import SECTIONS

    store = ResultStore(results)
    kinds = store.kinds()
    if not kinds:
        raise StoreError(
            f"no result tables under {results}", "pass a folder that holds fprun results"
        )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for target in SECTIONS.values():
        module, _, func = target.partition(":")
        found = getattr(importlib.import_module(module), func)(store, kinds, out_dir)
        sections.extend(found or [])
    return atomic_write_text(out_dir / PAGE, render_page(str(results), sections))


def render_page(source: str, sections: list[Section]) -> str:
    """The HTML text of the page."""
    esc = html.escape
    toc = "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>' for i, s in enumerate(sections))
    body = [f"<h1>fprun report</h1><p class=note>From the result tables in {esc(source)}.</p>",
            f"<ul>{toc}</ul>"]  # fmt: skip
    for i, s in enumerate(sections):
        body.append(f'<h2 id="s{i}">{esc(s.title)}</h2>')
        if s.lead:
            body.append(f"<p>{esc(s.lead)}</p>")
        for f in s.figures:
            body.append(f'<figure><img src="{esc(f.png)}" alt="{esc(f.caption[:120])}">'
                        f"<figcaption>{esc(f.caption)}</figcaption></figure>")  # fmt: skip
        for header, rows in s.tables:
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                            for r in rows)  # fmt: skip
            body.append(f"<table><tr>{head}</tr>{cells}</table>")
    meta = '<meta charset=utf-8><title>fprun report</title><link rel=icon href="data:,">'
    return (f"<!doctype html><html lang=en><head>{meta}"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip
