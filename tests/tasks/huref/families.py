"""The tiny model families HuRef tests run on, and helpers they share (fixture: conftest.py)."""

from pathlib import Path

import numpy as np
import torch

FAMILIES = [
    "tiny-llama",
    "tiny-neox",
    "tiny-gpt2",
    "tiny-qwen2",
    "tiny-opt",
    "tiny-gemma",
    "tiny-falcon",
    "tiny-mistral",
]
IDS = list(range(600, 1000, 5))  # 80 ordinary tokens of the shared tiny tokenizer


def _hf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), b.double()
    return float((a - b).norm() / b.norm())
