"""User fine-tuning: the attack a fingerprint must survive (METHODS.md section 2.6, step 2).

:func:`finetune_step` trains a model (a fingerprint's ``published/`` model, or any model) on user
data with the HF Trainer, full-parameter or LoRA through peft, and writes a plain model folder
that every other step loads like any model:

    out_dir/                 config.json, model.safetensors, tokenizer files (the user model)
    out_dir/adapter/         LoRA only: the peft adapter (adapter_config.json + safetensors)
    out_dir/finetune.json    resolved recipe, dataset label, losses (no keys, no secrets)

LoRA is merged with ``merge_and_unload`` into a freshly loaded base after training, from the
adapter as saved: the result is what a user who publishes "base + adapter, merged" ships, and
it works the same when the training ran sharded under DeepSpeed.

The same function runs in-process and on N Ray Train workers (``runner/train.py``): it takes the
HF Trainer ``callbacks``, a ``trainer_hook`` and the ``distributed`` settings, rank 0 writes the
artifacts and returns the row, other ranks return ``[]``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from tasks.finetune_config import (
    FinetuneConfig,
    Hyper,
    StepModel,
    parse_config,
    resolve_hyper,
    step_model,
)
from tasks.finetune_encode import encode_record, inference_prompt
from tasks.user_data import UserData, load_user_data

CODE_VERSION = "1"
TRAINER_DIR = ".trainer"  # HF Trainer's output_dir inside out_dir; removed after training


def finetune_step(config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path,
                  callbacks: list | None = None, trainer_hook: Any = None,
                  distributed: dict | None = None) -> list[dict]:
    """Fine-tune a model on user data; one ``train_run`` row (purpose ``finetune``).

    Args:
        config: A :class:`tasks.finetune_config.FinetuneConfig` as a dict.
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
    import torch
    from transformers import AutoModelForCausalLM

    cfg: FinetuneConfig = parse_config(FinetuneConfig, config, "finetune")
    hyper = resolve_hyper(cfg)
    src = step_model(inputs, cfg.model)
    selfanswer = cfg.data == "mtbench_selfanswer"
    data = None if selfanswer else load_user_data(cfg)  # bad data fails before the model loads
    tokenizer = load_tokenizer(src.path)
    model = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32)
    args = training_args(cfg, hyper, out_dir, distributed or {})
    if data is None:
        with args.main_process_first(desc="self-answers"):  # rank 0 fills the cache first
            data = _self_answered(cfg, src, model, tokenizer)
    train_set, dropped = _encode(data, tokenizer, cfg, hyper)
    if cfg.method == "lora":
        model = _wrap_lora(model, cfg, hyper)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = _trainer(model, tokenizer, args, train_set, callbacks)
    if trainer_hook is not None:
        trainer = trainer_hook(trainer)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    _save(trainer, tokenizer, cfg, src, out_dir)
    if not trainer.is_world_process_zero():
        return []
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    row = _row(cfg, hyper, src, data, args, out_dir, result, seconds, trainable, losses, dropped)
    (out_dir / "finetune.json").write_text(json.dumps(row, indent=2, default=str), "utf-8")
    return [row]


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer, with EOS standing in as padding when it defines no pad token.

    The seed's train.py adds a ``[PAD]`` token and resizes the embedding instead; fprun keeps
    the vocabulary as published, so the user model's shapes (which HuRef and verification
    compare) are the base model's.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_args(cfg: FinetuneConfig, hyper: Hyper, out_dir: Path, dist: dict) -> Any:
    """``TrainingArguments`` for the recipe: batch layout over the workers, precision, DeepSpeed."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available() and (dist.get("use_gpu", True))
    bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device, accum, _ = hyper.batch_layout(world)
    return TrainingArguments(
        output_dir=str(out_dir / TRAINER_DIR),
        num_train_epochs=hyper.epochs,
        max_steps=hyper.max_steps or -1,
        learning_rate=hyper.learning_rate,
        weight_decay=hyper.weight_decay,
        warmup_steps=hyper.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type=hyper.lr_scheduler,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        activation_checkpointing=hyper.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=bf16,
        tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        use_cpu=not cuda,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",  # the final model is saved below; a failed step re-runs whole
        report_to=[],
        disable_tqdm=True,
        deepspeed=dist.get("deepspeed_config"),
        dataloader_num_workers=0,
    )


def _self_answered(cfg: FinetuneConfig, src: StepModel, model: Any, tokenizer: Any) -> UserData:
    """``mtbench_selfanswer``: the questions answered by this very model, greedily (cached)."""
    from tasks.evals_generate import generate
    from tasks.zoo import model_identity

    def answer(records: list[dict[str, str]]) -> list[str]:
        prompts = [inference_prompt(tokenizer, r, cfg.prompt_format) for r in records]
        return generate(model, tokenizer, prompts, max_new_tokens=cfg.selfanswer_max_new_tokens,
                        add_special_tokens=cfg.prompt_format == "alpaca")

    key = f"{model_identity(src.path)}-{cfg.prompt_format}-{cfg.selfanswer_max_new_tokens}"
    return load_user_data(cfg, answer_fn=answer, cache_key=key)


def _encode(data: UserData, tokenizer: Any, cfg: FinetuneConfig, hyper: Hyper) -> tuple:
    """Tokenized rows with response-only labels; rows truncated to no response are dropped."""
    from datasets import Dataset

    from tasks.errors import DataError

    rows = [encode_record(tokenizer, r, cfg.prompt_format, hyper.max_length) for r in data.records]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise DataError(f"every row of {data.label} loses its response to max_length "
                        f"{hyper.max_length}", "raise max_length (--set max_length=N)")
    return Dataset.from_list(kept), len(rows) - len(kept)


def _wrap_lora(model: Any, cfg: FinetuneConfig, hyper: Hyper) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(
        lora.target_modules)
    if hyper.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha,
                                            lora_dropout=lora.dropout, target_modules=targets,
                                            task_type="CAUSAL_LM"))


def _trainer(model: Any, tokenizer: Any, args: Any, train_set: Any, callbacks: list | None):
    from transformers import DataCollatorForSeq2Seq, Trainer

    from tasks.finetune_encode import IGNORE_INDEX

    tokenizer.padding_side = "right"
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    return Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator,
                   processing_class=tokenizer, callbacks=list(callbacks or []))


def _save(trainer: Any, tokenizer: Any, cfg: FinetuneConfig, src: StepModel, out: Path) -> None:
    """Write the user model (and the LoRA adapter) on the main process; drop trainer scratch."""
    if cfg.method == "full":
        trainer.save_model(str(out))  # gathers ZeRO-3 shards; writes on the main process only
    else:
        trainer.save_model(str(out / "adapter"))
    if trainer.is_world_process_zero():
        if cfg.method == "lora":
            merge_lora(src.path, out / "adapter", out)
        tokenizer.save_pretrained(str(out))
        for scratch in (out / TRAINER_DIR, out / "training_args.bin",
                        out / "adapter" / "training_args.bin"):
            if scratch.is_dir():
                shutil.rmtree(scratch)
            elif scratch.exists():
                scratch.unlink()  # a pickle: model folders stay safetensors-only


def merge_lora(base: Path, adapter: Path, out: Path) -> None:
    """Load ``base`` fresh, apply the saved adapter, ``merge_and_unload`` and save to ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))


def _row(cfg: FinetuneConfig, hyper: Hyper, src: StepModel, data: UserData, args: Any,
         out: Path, result: Any, seconds: float, trainable: int, losses: list[float],
         dropped: int) -> dict:
    world = args.world_size
    strategy = "single" if world == 1 else (
        "ddp" if not args.deepspeed else f"deepspeed_zero{_zero_stage(args.deepspeed)}")
    steps = int(result.global_step)
    extra = {"preset": cfg.preset, "prompt_format": cfg.prompt_format,
             "first_loss": losses[0] if losses else None, "train_loss_mean": result.training_loss,
             "seconds_per_step": seconds / max(steps, 1), "dropped_rows": dropped,
             "hyper": hyper.__dict__, "bf16": bool(args.bf16),
             "lora": cfg.lora.model_dump() if cfg.method == "lora" else None,
             "n_source_rows": data.n_source_rows, "model_step_id": cfg.model_step_id}
    return {
        "discriminator": "final", "purpose": "finetune", "method": cfg.method,
        "model_ref": src.ref, "fingerprint_id": src.fingerprint_id, "artifact": str(out),
        "dataset": data.label, "n_train_rows": len(data.records) - dropped,
        "epochs": float(result.metrics.get("epoch", 0.0) or 0.0), "steps": steps,
        "learning_rate": hyper.learning_rate,
        "global_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps * world,
        "num_workers": world, "strategy": strategy,
        "final_loss": losses[-1] if losses else None, "train_seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": trainable, "extra": json.dumps(extra, default=str),
    }


def _zero_stage(ds: Any) -> int:
    cfg = ds if isinstance(ds, dict) else json.loads(Path(ds).read_text())
    return int(cfg.get("zero_optimization", {}).get("stage", 0))
