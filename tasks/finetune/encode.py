"""Prompt text and tokenization for user fine-tuning, with the loss on the response only.

``alpaca`` is stanford_alpaca's ``train.py`` template (the seed's user fine-tune), byte for byte:
the "with input" variant when ``input`` is non-empty, else the "no input" one, then the response
and EOS. ``chat_template`` renders the pair with the model's own chat template through
:func:`tasks.fingerprint.prompts.render_training`, the renderer IF_SFT uses. Prompt and response
are tokenized separately and their ids concatenated, so the loss mask is exact; the seed masked
as many leading tokens as the prompt alone has, off by one where a BPE merge spans the boundary.
"""

from __future__ import annotations

from typing import Any

from tasks.fingerprint.prompts import encode, render_training
from tasks.training.loop import IGNORE_INDEX

PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def alpaca_prompt(record: dict[str, str]) -> str:
    """The Alpaca source text (train.py uses the input variant iff ``input != ""``)."""
    if record.get("input", "") != "":
        return PROMPT_INPUT.format_map(record)
    return PROMPT_NO_INPUT.format_map(record)


def chat_messages(record: dict[str, str]) -> list[dict[str, str]]:
    """One user turn (instruction, blank line, input) and the assistant's output."""
    user = "\n\n".join(part for part in (record["instruction"], record.get("input", "")) if part)
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def inference_prompt(tokenizer: Any, record: dict[str, str], prompt_format: str) -> str:
    """What the model sees before its answer, in the training format (for self-answering)."""
    if prompt_format == "alpaca":
        return alpaca_prompt(record)
    return tokenizer.apply_chat_template(
        chat_messages(record)[:1], tokenize=False, add_generation_prompt=True
    )


def encode_record(
    tokenizer: Any, record: dict[str, str], prompt_format: str, max_length: int
) -> dict[str, list[int]] | None:
    """``input_ids`` and ``labels`` (prompt positions = IGNORE_INDEX), truncated to max_length.

    Returns:
        None when truncation leaves no response token to learn from (such a row would add a
        0/0 loss term).
    """
    if prompt_format == "alpaca":
        # The prompt gets the tokenizer's usual special tokens (BOS for Llama, as the seed's
        # LlamaTokenizer gave it); the response gets none, then EOS like train.py's target.
        prompt = tokenizer(alpaca_prompt(record))["input_ids"]
        response = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
        pieces = [(prompt, False), (response + [tokenizer.eos_token_id], True)]
    else:
        segments = render_training(tokenizer, chat_messages(record), "chat_template")
        pieces = [
            (encode(tokenizer, text, "chat_template"), is_answer) for text, is_answer in segments
        ]
    ids: list[int] = []
    labels: list[int] = []
    for piece, is_answer in pieces:
        ids += piece
        labels += piece if is_answer else [IGNORE_INDEX] * len(piece)
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}
