"""HF-Trainer plumbing shared by the training steps (IF_SFT, IF_adapter, user fine-tuning).

The same function body runs in three settings: in-process (``fprun run --local``), in each
worker of a Ray Train ``TorchTrainer`` (DDP over gloo on CPU or NCCL on GPU), and under DeepSpeed
ZeRO. The differences are confined to :func:`training_arguments` (backend, ``deepspeed=``,
``use_cpu``) and :func:`save_published` (who writes). Under ``torch.distributed`` only rank 0
writes artifacts; the others return no rows, so the driver sees exactly one result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.fingerprint.config import TrainConfig
from tasks.fingerprint.prompts import render_training
from tasks.progress import ProgressFn, trainer_callback

IGNORE_INDEX = -100  # label value the causal-LM loss skips (HF convention)
PAD_TOKEN = "[PAD]"  # the seed's added pad token when a tokenizer has none


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from the launcher's environment (Ray Train and torchrun set it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def load_model_and_tokenizer(
    ref: str, *, trust_remote_code: bool = False, allow_pickle: bool = False
) -> tuple[Any, Any, Path]:
    """Resolve a model reference (zoo / folder / hub) and load it in fp32 for training.

    fp32 master weights are what CPU training needs; on GPU, ``bf16: true`` trains in mixed
    precision on top of them, as the seed's DeepSpeed bf16 runs did.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.models.zoo import resolve_model

    path = resolve_model(ref, allow_pickle=allow_pickle)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    return model, tokenizer, path


def ensure_pad_token(model: Any, tokenizer: Any) -> bool:
    """Give the tokenizer a pad token if it has none, as the seed does.

    The seed adds ``[PAD]`` and initialises the new embedding rows to the mean of the existing
    ones (transformers' ``mean_resizing``), so the new token starts as an average token.

    Returns:
        Whether a token was added (the published vocabulary then grows by one).
    """
    if tokenizer.pad_token is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return True


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, str]], prompt_format: str, max_len: int
) -> dict[str, list[int]]:
    """Token ids and labels of one conversation, with loss on assistant text only.

    The whole conversation is tokenized at once (exactly the ids inference sees) and a token is
    labelled when its character span overlaps an assistant segment of
    :func:`tasks.fingerprint.prompts.render_training`. Slow tokenizers have no offsets; they get
    the FastChat-style fallback of tokenizing each segment on its own.
    """
    segments = render_training(tokenizer, messages, prompt_format)
    specials = prompt_format != "chat_template"
    if getattr(tokenizer, "is_fast", False):
        ids, labels = _by_offsets(tokenizer, segments, specials)
    else:
        ids, labels = _by_segments(tokenizer, segments, specials)
    return {"input_ids": ids[:max_len], "labels": labels[:max_len], "length": len(ids)}


def _by_offsets(tokenizer: Any, segments: Sequence[tuple[str, bool]], specials: bool):
    text, spans, pos = "", [], 0
    for seg, is_assistant in segments:
        if is_assistant:
            spans.append((pos, pos + len(seg)))
        text += seg
        pos += len(seg)
    enc = tokenizer(text, add_special_tokens=specials, return_offsets_mapping=True)
    labels = [
        tok if any(s < end and e > start for start, end in spans) else IGNORE_INDEX
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]
    return list(enc["input_ids"]), labels


def _by_segments(tokenizer: Any, segments: Sequence[tuple[str, bool]], specials: bool):
    ids: list[int] = []
    if specials and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
    labels = [IGNORE_INDEX] * len(ids)
    for seg, is_assistant in segments:
        part = tokenizer(seg, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if is_assistant else [IGNORE_INDEX] * len(part)
    return ids, labels


def training_arguments(
    cfg: TrainConfig, output_dir: str, distributed: dict | None, world_size: int
) -> Any:
    """TrainingArguments from the step config and the launcher's ``distributed`` options.

    ``distributed`` (set by runner/exec/train.py under Ray Train): ``{"strategy": "ddp" |
    "deepspeed", "deepspeed_config": dict | None, "use_gpu": bool, "checkpoint_every": int,
    "resume_from": str}``; the ZeRO dicts come from ``runner/exec/deepspeed.py``. Without it the
    step runs in one process, on the GPU if one is visible. ``checkpoint_every`` N > 0 saves a
    full checkpoint (model, optimizer, scheduler, RNG) every N steps, which the launcher's
    callback hands to the run's storage.
    """
    import torch
    from transformers import TrainingArguments

    dist = distributed or {}
    use_gpu = bool(dist.get("use_gpu", torch.cuda.is_available()))
    if cfg.bf16 and not use_gpu:
        raise ConfigError(
            "train.bf16 is set but the step runs on CPU",
            "set train.bf16: false, or train.use_gpu: true on a GPU machine",
        )
    ds_config = dist.get("deepspeed_config") if dist.get("strategy") == "deepspeed" else None
    if dist.get("strategy") == "deepspeed" and not ds_config:
        raise ConfigError(
            "strategy deepspeed was given without a DeepSpeed config",
            "pass a named strategy such as deepspeed_zero3 (runner/exec/train.py)",
        )
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps or cfg.warmup_ratio,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum(world_size),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        optim=cfg.optim,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if dist.get("checkpoint_every") else "no",
        save_steps=dist.get("checkpoint_every") or 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not use_gpu,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        ddp_backend=("nccl" if use_gpu else "gloo") if world_size > 1 else None,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        deepspeed=ds_config,
        dataloader_pin_memory=use_gpu,
    )


@dataclass
class TrainOutcome:
    """What a finished ``Trainer.train()`` left behind."""

    trainer: Any
    seconds: float
    losses: list[float]
    resumed_from_step: int | None = None  # the checkpoint's optimizer step, when resumed

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


def run_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, list[int]]],
    cfg: TrainConfig,
    *,
    distributed: dict | None = None,
    callbacks: Sequence[Any] | None = None,
    trainer_hook: Callable[[Any], Any] | None = None,
    progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Train ``model`` on pre-tokenized rows with HF ``Trainer`` (right padding, -100 labels).

    ``callbacks`` are extra TrainerCallbacks (e.g. Ray's metric reporting), ``trainer_hook``
    may wrap the Trainer before training (Ray passes ``prepare_trainer``) and ``progress`` hears
    of every optimizer step (tasks.progress).
    """
    import datasets
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import PrinterCallback

    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    scratch = tempfile.mkdtemp(prefix="fprun-trainer-")  # Trainer wants one; nothing lands there
    try:
        args = training_arguments(cfg, scratch, distributed, world()[1])
        data = datasets.Dataset.from_list(
            [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[*(callbacks or []), *([trainer_callback(progress)] if progress else [])],
        )
        # With disable_tqdm the Trainer prints every log dict to stdout; rows keep the losses.
        trainer.remove_callback(PrinterCallback)
        if trainer_hook is not None:
            trainer = trainer_hook(trainer) or trainer
        resume = (distributed or {}).get("resume_from")
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
    finally:
        tokenizer.padding_side = side
        shutil.rmtree(scratch, ignore_errors=True)
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return TrainOutcome(trainer, seconds, losses, _checkpoint_step(resume))


def _checkpoint_step(folder: str | None) -> int | None:
    """The optimizer step an HF checkpoint folder was saved at (its ``trainer_state.json``)."""
    import json

    if folder is None:
        return None
    state = json.loads((Path(folder) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state["global_step"])


def is_zero3(trainer: Any) -> bool:
    """Whether the model is partitioned by DeepSpeed ZeRO-3 (saving is then collective)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(plugin is not None and plugin.zero_stage == 3)


def save_published(trainer: Any, tokenizer: Any, out: Path, writer: bool) -> None:
    """Save the trained model (safetensors) and tokenizer to ``out`` on the writing rank.

    Every rank must enter ``save_model`` under ZeRO-3 (it gathers the shards), but only the
    writer writes. Trainer also pickles its TrainingArguments next to the model; that file is
    removed because fprun refuses pickles in model folders.
    """
    if writer or is_zero3(trainer):
        trainer.save_model(str(out))
    if writer:
        tokenizer.save_pretrained(str(out))
        (out / "training_args.bin").unlink(missing_ok=True)


def trainable_params(model: Any) -> int:
    """Parameters with ``requires_grad`` (ZeRO-3 partitions report their full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
