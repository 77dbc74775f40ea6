"""Text in, text out over the shared generation engine (:mod:`tasks.generation.engine`).

The utility evals and the self-answered fine-tune data speak in prompt strings; the engine that
verification uses (length-sorted left-padded batches, finished rows leave the batch, per-row
seeded sampling independent of batch size) speaks in token ids. This adapter tokenizes, calls it
and returns the decoded completions.
"""

from __future__ import annotations

from typing import Any


def generate(model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any) -> list[str]:
    """Completions (prompt excluded, special tokens dropped) in the order of ``prompts``."""
    return [g.text for g in generate_full(model, tokenizer, prompts, **kwargs)]


def generate_full(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    add_special_tokens: bool = True,
) -> list[Any]:
    """:class:`tasks.generation.engine.Generation` per prompt: text, tokens and why it stopped.

    Args:
        add_special_tokens: False for chat-template text, which carries its own.
        seed: Sampling seed; row i draws from its own generator, so the samples do not depend
            on ``batch_size``.
    """
    from tasks.generation.engine import SamplingParams
    from tasks.generation.engine import generate as engine

    ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    sampling = (
        SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        if do_sample
        else None
    )
    was_training = model.training
    model.eval()
    try:
        out = engine(
            model,
            tokenizer,
            ids,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            batch_size=batch_size,
        )
    finally:
        model.train(was_training)
    return out
