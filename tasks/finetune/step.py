"""User fine-tuning: the attack a fingerprint must survive.

:func:`finetune_step` trains a model (a fingerprint's ``published/`` one, or any) on user data
with the HF Trainer, full-parameter or LoRA through peft, and writes a plain model folder to
``out_dir`` (plus ``adapter/`` for LoRA and ``finetune.json``: recipe, dataset label, losses).
LoRA is merged with ``merge_and_unload`` into a freshly loaded base, as a user would publish it.
Runs in-process or on N Ray Train workers (``runner/exec/train.py``): rank 0 writes the artifacts
and returns the row, other ranks return ``[]``. The Trainer plumbing is IF_SFT's
(:mod:`tasks.training.loop`), so the fingerprinting and the attack train the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.data.sources import UserData
from tasks.data.user import load_user_data
from tasks.errors import DataError
from tasks.finetune.config import (
    FinetuneConfig,
    Hyper,
    StepModel,
    resolve_hyper,
    step_model,
)
from tasks.finetune.encode import IGNORE_INDEX, chat_messages, encode_record, inference_prompt
from tasks.fingerprint.config import TrainConfig
from tasks.progress import ProgressFn
from tasks.training.loop import (
    TrainOutcome,
    ensure_pad_token,
    is_zero3,
    load_model_and_tokenizer,
    run_trainer,
    save_published,
    tokenize_chat,
    trainable_params,
    world,
)
from tasks.training.rows import train_run_row

CODE_VERSION = "1"


def finetune_step(
    config: dict[str, Any],
    *,
    inputs: dict[str, Path],
    out_dir: Path,
    callbacks: list | None = None,
    trainer_hook: Any = None,
    distributed: dict | None = None,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """Fine-tune a model on user data; one ``train_run`` row (purpose ``finetune``).

    Args:
        config: A :class:`tasks.finetune.config.FinetuneConfig` as a dict.
        inputs: Optional ``{"model": folder}`` from an upstream step (a fingerprint folder
            means its ``published/`` model).
        out_dir: The step's artifact folder; becomes the fine-tuned model folder.
        callbacks: Extra HF Trainer callbacks (Ray Train's reporting).
        trainer_hook: Called with the built Trainer, returns the Trainer to use.
        distributed: ``{"strategy", "deepspeed_config", "use_gpu"}`` under Ray Train.

    Returns:
        The row on rank 0; ``[]`` on other ranks.

    Raises:
        ConfigError, ModelRefError, DataError: bad input, before any training.
    """
    # Over 60 lines on purpose: the recipe's steps in order, each checked before the model loads.
    cfg: FinetuneConfig = validate(FinetuneConfig, config, "finetune step")
    hyper = resolve_hyper(cfg)
    src = step_model(inputs, cfg.model)
    selfanswer = cfg.data == "mtbench_selfanswer"
    data = None if selfanswer else load_user_data(cfg)  # bad data fails before the model loads
    rank, world_size = world()
    train_cfg = trainer_config(cfg, hyper, distributed, world_size)
    train_cfg.grad_accum(world_size)  # an impossible batch layout fails before the model loads
    model, tokenizer, _ = load_model_and_tokenizer(str(src.path))
    pad_added = ensure_pad_token(model, tokenizer)
    if data is None:
        data = _self_answered(cfg, src, model, tokenizer, rank)
    rows, dropped = _encode(data, tokenizer, cfg, hyper)
    if cfg.method == "lora":
        model = _wrap_lora(model, cfg, hyper)
    out = run_trainer(
        model,
        tokenizer,
        rows,
        train_cfg,
        distributed=distributed,
        callbacks=callbacks,
        trainer_hook=trainer_hook,
        progress=progress,
    )
    out_dir = Path(out_dir)
    _save(out.trainer, tokenizer, cfg, src, out_dir, writer=rank == 0, pad_added=pad_added)
    if rank != 0:
        return []
    row = _row(
        cfg,
        hyper,
        train_cfg,
        src,
        data,
        out_dir,
        out,
        trainable_params(model),
        world_size,
        distributed,
        dropped=dropped,
        pad_added=pad_added,
    )
    (out_dir / "finetune.json").write_text(json.dumps(row, indent=2, default=str), "utf-8")
    return [row]


def trainer_config(
    cfg: FinetuneConfig, hyper: Hyper, distributed: dict | None, world_size: int = 1
) -> TrainConfig:
    """The recipe as the shared trainer plumbing's config, for ``world_size`` workers.

    bf16 ``auto`` is resolved here, and a preset's micro-batch shrinks to fit a smaller global
    batch over the workers (an explicit ``per_device_batch_size`` is taken as given).
    """
    import torch

    per_device = hyper.per_device_batch_size
    if cfg.per_device_batch_size is None:
        per_device = max(1, min(per_device, hyper.global_batch_size // world_size))
    use_gpu = bool((distributed or {}).get("use_gpu", torch.cuda.is_available()))
    bf16 = cfg.bf16 == "on" or (
        cfg.bf16 == "auto"
        and use_gpu
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    )
    return TrainConfig(
        epochs=hyper.epochs,
        max_steps=hyper.max_steps or -1,
        lr=hyper.learning_rate,
        weight_decay=hyper.weight_decay,
        lr_scheduler=hyper.lr_scheduler,
        warmup_ratio=hyper.warmup_ratio,
        total_batch_size=hyper.global_batch_size,
        per_device_batch_size=per_device,
        seed=cfg.seed,
        max_seq_len=hyper.max_length,
        bf16=bf16,
        gradient_checkpointing=hyper.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
    )


def _self_answered(
    cfg: FinetuneConfig, src: StepModel, model: Any, tokenizer: Any, rank: int
) -> UserData:
    """``mtbench_selfanswer``: the questions answered by this very model, greedily (cached).

    Under several workers rank 0 answers first and fills the cache; the others then read it.
    """
    from tasks.evals.generate import generate
    from tasks.models.zoo import model_identity

    def answer(records: list[dict[str, str]]) -> list[str]:
        prompts = [inference_prompt(tokenizer, r, cfg.prompt_format) for r in records]
        return generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=cfg.selfanswer_max_new_tokens,
            add_special_tokens=cfg.prompt_format == "alpaca",
        )

    key = f"{model_identity(src.path)}-{cfg.prompt_format}-{cfg.selfanswer_max_new_tokens}"
    import torch.distributed as dist

    shared = dist.is_available() and dist.is_initialized()
    data = load_user_data(cfg, answer_fn=answer, cache_key=key) if rank == 0 else None
    if shared:
        dist.barrier()
    return data or load_user_data(cfg, answer_fn=answer, cache_key=key)


def _encode(data: UserData, tokenizer: Any, cfg: FinetuneConfig, hyper: Hyper) -> tuple:
    """Tokenized rows with response-only labels; rows truncated to no response are dropped."""
    if cfg.prompt_format == "alpaca":
        rows = [encode_record(tokenizer, r, "alpaca", hyper.max_length) for r in data.records]
    else:  # IF_SFT's tokenizer path, so both steps label chat text the same way
        rows = [
            tokenize_chat(tokenizer, chat_messages(r), "chat_template", hyper.max_length)
            for r in data.records
        ]
        rows = [r if any(t != IGNORE_INDEX for t in r["labels"]) else None for r in rows]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise DataError(
            f"every row of {data.label} loses its response to max_length {hyper.max_length}",
            "raise max_length (--set max_length=N)",
        )
    return kept, len(rows) - len(kept)


def _wrap_lora(model: Any, cfg: FinetuneConfig, hyper: Hyper) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    targets = (
        lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    )
    if hyper.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        ),
    )


def _save(
    trainer: Any,
    tokenizer: Any,
    cfg: FinetuneConfig,
    src: StepModel,
    out: Path,
    *,
    writer: bool,
    pad_added: bool,
) -> None:
    """Write the user model (and the LoRA adapter) on the writing rank."""
    if cfg.method == "full":
        save_published(trainer, tokenizer, out, writer)
        return
    if writer or is_zero3(trainer):
        trainer.save_model(str(out / "adapter"))
    if writer:
        (out / "adapter" / "training_args.bin").unlink(missing_ok=True)  # a pickle
        merge_lora(src.path, out / "adapter", out, tokenizer if pad_added else None)
        tokenizer.save_pretrained(str(out))


def merge_lora(base: Path, adapter: Path, out: Path, resized_tokenizer: Any = None) -> None:
    """Load ``base`` fresh, apply the saved adapter, ``merge_and_unload`` and save to ``out``.

    ``resized_tokenizer``: the tokenizer when training added a pad token, so the fresh base
    gets the same (mean-initialised) extra row before the adapter is applied.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if resized_tokenizer is not None:
        ensure_pad_token(model, resized_tokenizer)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))


def _row(
    cfg: FinetuneConfig,
    hyper: Hyper,
    train_cfg: TrainConfig,
    src: StepModel,
    data: UserData,
    out_dir: Path,
    out: TrainOutcome,
    trainable: int,
    world_size: int,
    distributed: dict | None,
    *,
    dropped: int,
    pad_added: bool,
) -> dict:
    steps = int(out.trainer.state.global_step)
    extra = {
        "preset": cfg.preset,
        "prompt_format": cfg.prompt_format,
        "first_loss": out.losses[0] if out.losses else None,
        "mean_loss": sum(out.losses) / len(out.losses) if out.losses else None,
        "seconds_per_step": out.seconds / max(steps, 1),
        "dropped_rows": dropped,
        "hyper": asdict(hyper),
        "bf16": train_cfg.bf16,
        "grad_accum": train_cfg.grad_accum(world_size),
        "pad_token_added": pad_added,
        "per_device_batch_size": train_cfg.per_device_batch_size,
        "lora": cfg.lora.model_dump() if cfg.method == "lora" else None,
        "n_source_rows": data.n_source_rows,
        "model_step_id": cfg.model_step_id,
    }
    return train_run_row(
        purpose="finetune",
        method=cfg.method,
        model_ref=src.ref,
        fingerprint_id=src.fingerprint_id,
        artifact=str(out_dir),
        dataset=data.label,
        n_train_rows=len(data.records) - dropped,
        learning_rate=hyper.learning_rate,
        global_batch_size=hyper.global_batch_size,
        trainable_params=trainable,
        extra=extra,
        outcome=out,
        world_size=world_size,
        distributed=distributed,
    )
