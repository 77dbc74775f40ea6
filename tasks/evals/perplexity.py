"""Perplexity on held-out plain text, with fixed chunking and a token-weighted mean.

The text is tokenized once (no special tokens) and cut into non-overlapping chunks of exactly
``chunk_tokens`` tokens; the last, shorter remainder is dropped so every chunk is scored alike
and batches need no padding. Each chunk predicts its tokens 2..L from the preceding ones, so a
chunk contributes L - 1 scored tokens; perplexity is exp(total NLL / total scored tokens). The
default text is reasoning-gym's ``in_the_year_2889.txt`` (Jules Verne, public domain), which no
fprun training set contains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tasks.data.sources import package_file
from tasks.errors import DataError
from tasks.evals.config import PerplexityOptions

TOKENS_PER_FORWARD = 2048
BUILTIN_TEXTS = {
    "in_the_year_2889": (
        "reasoning_gym",
        "data/in_the_year_2889.txt",
        "reasoning_gym:data/in_the_year_2889.txt (Jules Verne, public domain)",
    )
}


def load_text(name: str) -> tuple[str, str]:
    """``(text, dataset label)`` of a built-in text or a UTF-8 file."""
    if name in BUILTIN_TEXTS:
        package, rel, label = BUILTIN_TEXTS[name]
        path = package_file(package, rel)
        if path is None:
            raise DataError(
                f"the {name} text needs the package reasoning-gym",
                "pip install reasoning-gym==0.1.25",
            )
    else:
        path, label = Path(name).expanduser(), f"file:{Path(name).name}"
        if not path.is_file():
            raise DataError(
                f"perplexity text {name} does not exist",
                "pass in_the_year_2889 or a UTF-8 text file",
            )
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"perplexity text {name} is empty", "pass a non-empty text")
    return text, label


def chunk_ids(tokenizer: Any, text: str, chunk_tokens: int, max_chunks: int | None) -> list:
    """Fixed, non-overlapping chunks of token ids (the remainder is dropped)."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    n = len(ids) // chunk_tokens
    if max_chunks is not None:
        n = min(n, max_chunks)
    if n == 0:
        raise DataError(
            f"the text has {len(ids)} tokens, fewer than one chunk of {chunk_tokens}",
            "use a longer text or a smaller chunk_tokens",
        )
    return [ids[i * chunk_tokens : (i + 1) * chunk_tokens] for i in range(n)]


def nll_sum(model: Any, chunks: list[list[int]], batch_size: int) -> tuple[float, int]:
    """Summed next-token NLL (nats) over all chunks and the number of scored tokens.

    A forward holds at most :data:`TOKENS_PER_FORWARD` tokens: the fp32 logits of a 49k-vocab
    model take 200 kB per token, so 16 chunks of 256 tokens peaked at 3.6 GB RSS on SmolLM2.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    batch_size = max(1, min(batch_size, TOKENS_PER_FORWARD // len(chunks[0])))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(chunks), batch_size):
            batch = torch.tensor(chunks[start : start + batch_size], device=device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            target = batch[:, 1:]
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += target.numel()
    return total, count


def run_perplexity(
    model: Any, tokenizer: Any, opts: PerplexityOptions, *, batch_size: int
) -> list[dict]:
    """Two rows: ``perplexity`` and ``mean_nll`` (nats per token), n = scored tokens."""
    text, label = load_text(opts.text)
    chunks = chunk_ids(tokenizer, text, opts.chunk_tokens, opts.max_chunks)
    total, count = nll_sum(model, chunks, batch_size)
    mean = total / count
    extra = {
        "chunk_tokens": opts.chunk_tokens,
        "chunks": len(chunks),
        "max_chunks": opts.max_chunks,
    }
    task = opts.text if opts.text in BUILTIN_TEXTS else Path(opts.text).name
    return [
        {
            "task": task,
            "metric": "perplexity",
            "value": math.exp(mean),
            "n": count,
            "dataset": label,
            "extra": extra,
        },
        {
            "task": task,
            "metric": "mean_nll",
            "value": mean,
            "n": count,
            "dataset": label,
            "extra": extra,
        },
    ]
