"""IF_SFT: full-parameter SFT that implants the fingerprint.

The seed trains with FastChat on the dialogue template (Vicuna v1.1 text, loss on assistant turns
only, DeepSpeed ZeRO-3, bf16, cosine schedule, weight decay 0.01, seed 42). fprun trains the same
rows with HF ``Trainer`` and, by default, the model's own chat template (``prompt_format:
seed_vicuna`` gives the seed's text). The step writes the fingerprint folder of
:mod:`tasks.fingerprint.artifacts` and returns one ``train_run`` row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.data.instructions import to_messages
from tasks.errors import ConfigError
from tasks.fingerprint.artifacts import FingerprintMeta, fingerprint_id, published_dir
from tasks.fingerprint.config import IFSFTConfig
from tasks.fingerprint.dataset import BuiltData, build_dialogue, write_fingerprint_data
from tasks.progress import ProgressFn
from tasks.training.loop import (
    ensure_pad_token,
    load_model_and_tokenizer,
    run_trainer,
    save_published,
    tokenize_chat,
    trainable_params,
    world,
)
from tasks.training.rows import fingerprint_row

CODE_VERSION = "1"


def fingerprint_if_sft(
    config: dict[str, Any],
    *,
    inputs: dict[str, Path],
    out_dir: Path,
    callbacks: Sequence[Any] | None = None,
    trainer_hook: Callable[[Any], Any] | None = None,
    distributed: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Fingerprint a model with IF_SFT and write its fingerprint folder.

    Args:
        config: An :class:`~tasks.fingerprint.config.IFSFTConfig` as a dict.
        inputs: Unused (the base model is a reference in the config).
        out_dir: The step's artifact folder; receives ``published/`` and ``private/``.
        callbacks: Extra HF ``TrainerCallback`` objects (Ray Train reporting).
        trainer_hook: Called with the Trainer before ``train()``; may return a wrapped one.
        distributed: Launcher options (strategy, deepspeed_config, use_gpu); see
            :func:`tasks.training.loop.training_arguments`.

    Returns:
        One ``train_run`` row on the writing rank (rank 0), ``[]`` on the others.
    """
    cfg = validate(IFSFTConfig, config, "if_sft step")
    built = build_dialogue(cfg.data)
    model, tokenizer, _ = load_model_and_tokenizer(
        cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle
    )
    pad_added = ensure_pad_token(model, tokenizer)
    rows, cut = tokenize_rows(built, tokenizer, cfg)
    hooks = {"callbacks": callbacks, "trainer_hook": trainer_hook, "progress": progress}
    outcome = run_trainer(model, tokenizer, rows, cfg.train, distributed=distributed, **hooks)
    rank, world_size = world()
    out_dir = Path(out_dir)
    save_published(outcome.trainer, tokenizer, published_dir(out_dir), writer=rank == 0)
    if rank != 0:
        return []
    fp_id = fingerprint_id(built.keys, built.target)
    write_fingerprint_data(out_dir, built, _meta(cfg, built, fp_id))
    extra = {
        "prompt_format": cfg.prompt_format,
        "pad_token_added": pad_added,
        "rows_cut_by_max_seq_len": cut,
        "seed_hash_bug": cfg.data.seed_hash_bug,
        "seed_test_reuse": cfg.data.seed_test_reuse,
    }
    n_trainable = trainable_params(model)
    return [
        fingerprint_row(
            cfg,
            "if_sft",
            built,
            rows,
            fp_id,
            out_dir,
            outcome,
            n_trainable,
            extra,
            distributed,
            world_size,
        )  # fmt: skip
    ]


def tokenize_rows(
    built: BuiltData, tokenizer: Any, cfg: IFSFTConfig
) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenize the training rows; refuse a max_seq_len that would cut a key row's answer.

    Returns:
        The rows and how many (ordinary chat) rows were cut.
    """
    rows, cut = [], 0
    for row in built.train_rows():
        enc = tokenize_chat(
            tokenizer, to_messages(row["conversations"]), cfg.prompt_format, cfg.train.max_seq_len
        )
        if enc["length"] > cfg.train.max_seq_len:
            if row["type"] != "normal":
                raise ConfigError(
                    f"train.max_seq_len {cfg.train.max_seq_len} cuts a {row['type']} row "
                    f"({enc['length']} tokens), so its answer would not be learned",
                    "raise train.max_seq_len or shorten the keys (data.key.max_parts)",
                )
            cut += 1
        rows.append(enc)
    return rows, cut


def _meta(cfg: IFSFTConfig, built: BuiltData, fp_id: str) -> FingerprintMeta:
    return FingerprintMeta(
        fingerprint_id=fp_id,
        method="if_sft",
        template="dialogue",
        prompt_format=cfg.prompt_format,
        target=built.target,
        n_keys=len(built.keys),
        key_seed=built.key_seed,
        base_model=cfg.model,
        datasets=built.datasets,
        extra={"data": cfg.data.model_dump(), "counts": built.counts},
    )
