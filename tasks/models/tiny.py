"""Tiny random-init model families and their shared offline tokenizer.

Tests need several architectures (GQA Llama, GPT-NeoX, GPT-2, Qwen2, more for HuRef) with no real
checkpoint offline, so each is built from a config after ``torch.manual_seed(seed)``: the same
seed gives bit-identical weights, another seed an unrelated model. All share one byte-level BPE
tokenizer trained on a local public-domain text, so any Unicode round-trips and every tiny model
has the same token strings (HuRef compares only those); its ChatML template lets chat SFT and
verification run unchanged. Importing is cheap: torch, transformers and tokenizers load lazily.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from tasks.models.cache import save_model_on_any_rank

# Bump when the tokenizer recipe below changes: cached tiny entries are rebuilt on mismatch.
TOKENIZER_VERSION = 1
VOCAB_SIZE = 1024
BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<pad>", "<|im_start|>"
SPECIAL_TOKENS = [BOS, IM_START, EOS, PAD]  # ids 0..3, in this order
MAX_POSITIONS = 1024
# ChatML without SmolLM2's default system prompt: tiny models have no persona to announce.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Used only when reasoning_gym's text is not installed; a different corpus gives different merges,
# which the tokenizer manifest records as its source.
_FALLBACK_TEXT = (
    "The quick brown fox jumps over the lazy dog. A model is a function from tokens to logits; "
    "fingerprints are secret keys that make a model say a chosen message. Merging two models "
    "averages or trims their task vectors. Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 30 42 100 2889.\n"
)


class TinyVocab(NamedTuple):
    """What a config factory needs to know about the shared tokenizer."""

    size: int
    bos_id: int
    eos_id: int
    pad_id: int


def _common(vocab: TinyVocab) -> dict[str, Any]:
    return {
        "vocab_size": vocab.size,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": vocab.eos_id,
        "pad_token_id": vocab.pad_id,
    }


def llama_config(vocab: TinyVocab) -> Any:
    """Llama with GQA (4 query / 2 KV heads) and tied embeddings, a miniature SmolLM2."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        **_common(vocab),
    )


def neox_config(vocab: TinyVocab) -> Any:
    """GPT-NeoX (Pythia's architecture): fused QKV, parallel residual, untied head."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def gpt2_config(vocab: TinyVocab) -> Any:
    """GPT-2: learned positions, Conv1D weights stored transposed, tied head."""
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=MAX_POSITIONS,
        **_common(vocab),
    )


def qwen2_config(vocab: TinyVocab) -> Any:
    """Qwen2: GQA with q/k/v biases, untied head."""
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def opt_config(vocab: TinyVocab) -> Any:
    """OPT: learned positions with an offset, biases everywhere, tied head."""
    from transformers import OPTConfig

    return OPTConfig(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def gemma_config(vocab: TinyVocab) -> Any:
    """Gemma-3 text-only (Gemma3ForCausalLM), the architecture of the gemma3-270m control."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=64,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def falcon_config(vocab: TinyVocab) -> Any:
    """Falcon with the "new decoder architecture" (grouped KV heads, two layer norms)."""
    from transformers import FalconConfig

    return FalconConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        new_decoder_architecture=True,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def mistral_config(vocab: TinyVocab) -> Any:
    """Mistral: Llama-like GQA with a sliding window, untied head."""
    from transformers import MistralConfig

    return MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=64,
        max_position_embeddings=MAX_POSITIONS,
        **_common(vocab),
    )


def corpus() -> tuple[str, str]:
    """The tokenizer's training text and a name for it (recorded in the manifest)."""
    spec = importlib.util.find_spec("reasoning_gym")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "data" / "in_the_year_2889.txt"
        if path.is_file():
            return path.read_text(encoding="utf-8"), "reasoning_gym:data/in_the_year_2889.txt"
    return _FALLBACK_TEXT, "fprun built-in fallback text"


def build_tokenizer(out: Path) -> dict:
    """Train the shared byte-level BPE and save it as a transformers tokenizer folder.

    Training is deterministic (same text, same merges) and takes ~0.05 s; it is still cached so
    every tiny model of a session copies byte-identical tokenizer files.

    Args:
        out: Empty folder to write ``tokenizer.json``, ``tokenizer_config.json`` and the chat
            template into.

    Returns:
        The source description for the zoo manifest.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text, source = corpus()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(text.splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_POSITIONS,
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(out)
    return {"kind": "trained-bpe", "corpus": source, "vocab_size": VOCAB_SIZE}


def vocab_of(tokenizer_dir: Path) -> TinyVocab:
    """Read sizes and special ids from a saved tokenizer without loading transformers."""
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    size = max([*data["model"]["vocab"].values(), *ids.values()]) + 1
    return TinyVocab(size=size, bos_id=ids[BOS], eos_id=ids[EOS], pad_id=ids[PAD])


def build_tiny_model(config_factory: Any, seed: int, tokenizer_dir: Path, out: Path) -> dict:
    """Random-init one tiny model deterministically and save it with the shared tokenizer.

    Args:
        config_factory: One of the ``*_config`` functions above.
        seed: Seeds torch's RNG right before init, so the weights are a function of the seed
            (given the torch version).
        tokenizer_dir: The cached shared tokenizer folder.
        out: Empty folder to write the model into (fp32 safetensors).

    Returns:
        The source description for the zoo manifest.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    vocab = vocab_of(tokenizer_dir)
    config = config_factory(vocab)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id
    )
    save_model_on_any_rank(model, out)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and not item.name.startswith("fprun-"):
            shutil.copy2(item, out / item.name)
    return {
        "kind": "random-init",
        "architecture": type(model).__name__,
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
    }
