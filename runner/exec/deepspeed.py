"""Distributed-training strategies by name, and the DeepSpeed ZeRO configs behind them.

A step asks for a strategy with one string (``Resources.strategy``), so YAMLs stay small and
validate without torch: ``ddp``, ``deepspeed`` (= ZeRO-2), ``deepspeed_zero2``, ``deepspeed_zero3``,
``deepspeed_zero2_offload``, ``deepspeed_zero3_offload``, or ``deepspeed:<path.json>``. The dicts
use Hugging Face's ``"auto"`` values, so the HF Trainer fills batch size, accumulation, clipping
and precision from its ``TrainingArguments``; the variants derive from one base dict rather than
four drifting JSON files. Imports neither torch nor ray (``fprun validate`` uses it).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

_BASE: dict[str, Any] = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "zero_optimization": {
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    },
    "steps_per_print": 1_000_000,  # HF Trainer logs; DeepSpeed's own prints are noise
    "wall_clock_breakdown": False,
}

NAMED: dict[str, tuple[int, bool]] = {
    "deepspeed": (2, False),
    "deepspeed_zero2": (2, False),
    "deepspeed_zero3": (3, False),
    "deepspeed_zero2_offload": (2, True),
    "deepspeed_zero3_offload": (3, True),
}
STRATEGIES: tuple[str, ...] = ("ddp", *NAMED)


def zero_config(stage: int, offload: bool = False) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO ``stage`` 2 or 3, optionally offloading to CPU memory.

    Stage 3 gathers the full 16-bit weights on save, so ``trainer.save_model`` writes an ordinary
    safetensors folder that the rest of fprun (verification, merges, HuRef) can read. Offload
    names DeepSpeed's AdamW explicitly: ZeRO-Offload needs its CPU optimizer (its op JIT-compiles
    once, ~60 s, cached in ``~/.cache/torch_extensions``).
    """
    if stage not in (2, 3):
        raise ConfigError(f"DeepSpeed ZeRO stage {stage} is not offered", "use stage 2 or 3")
    cfg = copy.deepcopy(_BASE)
    zero = cfg["zero_optimization"]
    zero["stage"] = stage
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    return cfg


def resolve_strategy(name: str) -> tuple[str, dict[str, Any] | None]:
    """Map a strategy name to ``(strategy, deepspeed_config)`` for the training function.

    Returns ``("ddp", None)`` or ``("deepspeed", <config dict>)``; an unknown name is a config
    error listing the known ones.
    """
    if name == "ddp":
        return "ddp", None
    if name in NAMED:
        return "deepspeed", zero_config(*NAMED[name])
    if name.startswith("deepspeed:"):
        return "deepspeed", _read_json(Path(name.partition(":")[2]).expanduser())
    raise ConfigError(
        f"unknown training strategy {name!r}",
        f"use one of {', '.join(STRATEGIES)} or deepspeed:<file.json>",
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"DeepSpeed config {path} does not exist",
            "pass an existing JSON file or a named strategy",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"DeepSpeed config {path} is not valid JSON ({exc.msg})", "fix the file"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"DeepSpeed config {path} is not a JSON object", "fix the file")
    return data
