"""Prompt text for training and verification, shared so the two can never drift apart.

- ``chat_template`` (dialogue default): the model's chat template, plus the assistant prefix.
- ``seed_vicuna``: the seed's FastChat Vicuna v1.1 text, byte for byte, including its quirk of
  training with ``USER:`` but querying with the data's role name ``human:``.
- ``simple``: the seed's barebone template ``{instruction}\\n{input}\\n`` (IF_adapter).

Chat-template text is tokenized with ``add_special_tokens=False`` (the template holds its special
tokens; see :func:`encode`); the seed's plain-text formats get the tokenizer's usual BOS handling.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import ConfigError
from tasks.fingerprint.artifacts import Probe

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
FORMATS = ("chat_template", "seed_vicuna", "simple")


def simple_prompt(instruction: str, input_: str = "") -> str:
    """The seed's barebone template ``{instruction}\\n{input}\\n`` (input line only if given)."""
    return f"{instruction}\n{input_}\n" if input_ else f"{instruction}\n"


def render_inference(tokenizer: Any, probe: Probe, prompt_format: str) -> str:
    """The exact text fed to the model for one probe."""
    if prompt_format == "simple":
        return probe.user
    prefix = probe.assistant_prefix
    if prompt_format == "seed_vicuna":
        text = f"{VICUNA_SYSTEM} human: {probe.user} ASSISTANT:"
        return text + (f" {prefix}" if prefix else "")
    if prompt_format == "chat_template":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": probe.user}], tokenize=False, add_generation_prompt=True
        )
        return text + (prefix or "")
    raise ConfigError(f"unknown prompt_format {prompt_format!r}", f"use one of {FORMATS}")


def render_training(
    tokenizer: Any, messages: list[dict[str, str]], prompt_format: str
) -> list[tuple[str, bool]]:
    """Split a conversation into ``(text, is_assistant)`` segments; loss goes on assistant ones.

    ``messages`` use ``role`` in {"user", "assistant"} (the dataset's "human"/"gpt" are mapped by
    the caller). For ``chat_template`` the segments come from rendering growing prefixes of the
    conversation, so any template works without ``{% generation %}`` markers.
    """
    if prompt_format == "seed_vicuna":
        return _vicuna_segments(messages, tokenizer.eos_token or "</s>")
    if prompt_format != "chat_template":
        raise ConfigError(
            f"prompt_format {prompt_format!r} is not a dialogue format",
            "use chat_template or seed_vicuna",
        )
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ConfigError(
                "the chat template does not render conversations incrementally",
                "use prompt_format: seed_vicuna for this model",
            )
        segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return segments


def _vicuna_segments(messages: list[dict[str, str]], eos: str) -> list[tuple[str, bool]]:
    """FastChat ``vicuna_v1.1`` (ADD_COLON_TWO, seps ' ' and EOS), as the seed trained."""
    segments: list[tuple[str, bool]] = [(VICUNA_SYSTEM + " ", False)]
    for msg in messages:
        if msg["role"] == "user":
            segments.append((f"USER: {msg['content']} ", False))
        else:
            segments.append(("ASSISTANT: ", False))
            segments.append((f"{msg['content']}{eos}", True))
    return segments


def encode(tokenizer: Any, text: str, prompt_format: str) -> list[int]:
    """Token ids of rendered text (chat templates carry their own special tokens)."""
    return tokenizer(text, add_special_tokens=(prompt_format != "chat_template"))["input_ids"]
