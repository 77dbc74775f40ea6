"""IF_adapter: implant the fingerprint through the F-Adapter alone.

As the seed's ``run_clm.py --freeze_instruction_nonembedding --train_on_output_only`` on the
simple template: every non-embedding weight frozen, the loss on output tokens only, here with the
HF ``Trainer`` (:mod:`tasks.training.loop`). Training then *unwraps*: T's trained rows are merged
into the embedding and the plain model saved as ``published/``; A, B and T's rows go to
``private/adapter/`` (safetensors + JSON). T is every token of the train split's instructions, of
its ``input`` (which the seed meant to add but dropped) and of the rendered training prompts;
``adapter.seed_token_set_bug`` restores the seed's set (docs/seed_fixes.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.errors import ConfigError
from tasks.fingerprint.adapter.config import IFAdapterConfig
from tasks.fingerprint.adapter.module import (
    InstructionFingerprint,
    inject_adapter,
    input_embedding,
    save_adapter,
    unwrap_adapter,
)
from tasks.fingerprint.artifacts import (
    FingerprintMeta,
    fingerprint_id,
    private_dir,
    published_dir,
)
from tasks.fingerprint.dataset import BuiltData, build_simple, write_fingerprint_data
from tasks.fingerprint.prompts import simple_prompt
from tasks.progress import ProgressFn
from tasks.training.loop import (
    IGNORE_INDEX,
    ensure_pad_token,
    load_model_and_tokenizer,
    run_trainer,
    save_published,
    trainable_params,
    world,
)
from tasks.training.rows import fingerprint_row

CODE_VERSION = "1"
ADAPTER_SUBDIR = "adapter"  # private/adapter/


def fingerprint_if_adapter(
    config: dict[str, Any],
    *,
    inputs: dict[str, Path],
    out_dir: Path,
    callbacks: Sequence[Any] | None = None,
    trainer_hook: Callable[[Any], Any] | None = None,
    distributed: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """Fingerprint a model with IF_adapter and write its fingerprint folder.

    Args:
        config: A :class:`tasks.fingerprint.adapter.config.IFAdapterConfig` as a dict.
        inputs: Unused (the base model comes from ``config["model"]``).
        out_dir: The fingerprint folder: ``published/`` (the merged model) and ``private/``
            (keys, probes, dataset, ``adapter/``).
        callbacks: Extra HF ``TrainerCallback`` objects (Ray Train reporting).
        trainer_hook: Called with the Trainer before ``train()``; may return a wrapped one.
        distributed: Launcher options (strategy, deepspeed_config, use_gpu).

    Returns:
        One ``train_run`` row on rank 0, ``[]`` on the other ranks.

    Raises:
        ConfigError: Bad config, ZeRO-3, or a max_seq_len that cuts a fingerprint row.
    """
    cfg: IFAdapterConfig = validate(IFAdapterConfig, config, "if_adapter step")
    refuse_zero3(distributed)
    built = build_simple(cfg.data)
    model, tokenizer, base_path = load_model_and_tokenizer(
        cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle
    )
    pad_added = ensure_pad_token(model, tokenizer)
    rows, cut = tokenize_rows(built, tokenizer, cfg.train.max_seq_len)
    token_ids = token_set(tokenizer, built, seed_bug=cfg.adapter.seed_token_set_bug)
    a = cfg.adapter
    f_adapter = InstructionFingerprint(
        input_embedding(model), token_ids, a.dim, init=a.init, residual=a.residual,
        init_seed=a.init_seed,
    )  # fmt: skip
    adapter = inject_adapter(model, f_adapter)
    hooks = {"callbacks": callbacks, "trainer_hook": trainer_hook, "progress": progress}
    outcome = run_trainer(model, tokenizer, rows, cfg.train, distributed=distributed, **hooks)
    stats = adapter_stats(adapter)
    n_trainable = trainable_params(model)
    _, adapter, info = unwrap_adapter(model)
    rank, world_size = world()
    out_dir = Path(out_dir)
    save_published(outcome.trainer, tokenizer, published_dir(out_dir), writer=rank == 0)
    if rank != 0:
        return []
    from tasks.models.zoo import model_identity

    save_adapter(
        adapter,
        private_dir(out_dir) / ADAPTER_SUBDIR,
        tokenizer=tokenizer,
        base_model=cfg.model,
        base_identity=model_identity(base_path),
    )
    fp_id = fingerprint_id(built.keys, built.target)
    write_fingerprint_data(out_dir, built, _meta(cfg, built, fp_id, len(token_ids)))
    extra = {
        **stats,
        "adapter": a.model_dump(),
        "residual": a.residual,
        "n_tokens_T": len(token_ids),
        "token_set": "seed_instruction_only" if a.seed_token_set_bug else "fprun",
        "fingerprint_prompt_coverage": coverage(tokenizer, built, token_ids),
        "published_rows_changed": info.rows_changed,
        "lm_head_untied": info.untied,
        "pad_token_added": pad_added,
        "rows_cut_by_max_seq_len": cut,
    }
    return [
        fingerprint_row(
            cfg,
            "if_adapter",
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


def refuse_zero3(distributed: dict[str, Any] | None) -> None:
    """ZeRO-3 would partition the embedding that the merge rewrites; the adapter's few
    parameters gain nothing from it, so it is refused rather than gathered."""
    dist = distributed or {}
    stage = (dist.get("deepspeed_config") or {}).get("zero_optimization", {}).get("stage")
    if dist.get("strategy") == "deepspeed" and stage == 3:
        raise ConfigError(
            "IF_adapter does not run under DeepSpeed ZeRO-3 (it trains only the "
            "adapter, and the merge needs the whole embedding)",
            "use train.strategy: ddp or deepspeed_zero2",
        )


def tokenize_simple(
    tokenizer: Any, instruction: str, input_: str, output: str, max_len: int
) -> dict[str, Any]:
    """One simple-template row the way the seed's ``run_clm --train_on_output_only`` does it.

    Text = prompt + output, EOS appended when missing; the prompt is tokenized on its own and
    that many leading tokens get label -100, so the loss falls on the output (and EOS) only.
    """
    prompt = simple_prompt(instruction, input_)
    ids = list(tokenizer(prompt + output)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    n_prompt = len(tokenizer(prompt)["input_ids"])
    labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
    return {"input_ids": ids[:max_len], "labels": labels[:max_len], "length": len(ids)}


def tokenize_rows(
    built: BuiltData, tokenizer: Any, max_len: int
) -> tuple[list[dict[str, Any]], int]:
    """Every train row tokenized; a cut fingerprint row is an error, cut others are counted."""
    cols = built.splits["train"]
    rows, cut = [], 0
    for i, (ins, inp, out) in enumerate(
        zip(cols["instruction"], cols["input"], cols["output"], strict=True)
    ):
        enc = tokenize_simple(tokenizer, ins, inp, out, max_len)
        if enc["length"] > max_len:
            if i < built.counts["fingerprint"]:
                raise ConfigError(
                    f"train.max_seq_len {max_len} cuts a fingerprint row ({enc['length']} "
                    "tokens), so its answer would not be learned",
                    "raise train.max_seq_len or shorten the keys (data.key.max_parts)",
                )
            cut += 1
        rows.append(enc)
    return rows, cut


def token_set(tokenizer: Any, built: BuiltData, *, seed_bug: bool = False) -> list[int]:
    """The token set T (sorted ids); see the module docstring for what fprun adds."""
    cols = built.splits["train"]
    ids: set[int] = set()
    for text in cols["instruction"]:  # the seed: each instruction tokenized on its own
        ids.update(tokenizer(text)["input_ids"])
    if not seed_bug:
        for ins, inp in zip(cols["instruction"], cols["input"], strict=True):
            if inp:
                ids.update(tokenizer(inp)["input_ids"])
            ids.update(tokenizer(simple_prompt(ins, inp))["input_ids"])
    return sorted(ids)


def coverage(tokenizer: Any, built: BuiltData, token_ids: Sequence[int]) -> float:
    """Share of the fingerprint prompts' tokens that lie in T (1.0 unless the seed's bug)."""
    cols, t = built.splits["train"], set(token_ids)
    n = built.counts["fingerprint"]
    toks = [
        tok
        for ins, inp in zip(cols["instruction"][:n], cols["input"][:n], strict=True)
        for tok in tokenizer(simple_prompt(ins, inp))["input_ids"]
    ]
    return sum(tok in t for tok in toks) / max(len(toks), 1)


def adapter_stats(adapter: InstructionFingerprint) -> dict[str, float]:
    """How far each part of the adapter moved from its init (before the merge)."""
    import torch

    with torch.no_grad():
        drift = (adapter.trainable_emb.weight - adapter.orig_emb.weight[adapter.token_ids]).abs()
        return {
            "max_row_drift": float(drift.max()),
            "mean_row_drift": float(drift.mean()),
            "norm_A": float(adapter.A.weight.norm()),
            "norm_B": float(adapter.B.weight.norm()),
            "norm_bias_A": float(adapter.A.bias.norm()),
            "norm_bias_B": float(adapter.B.bias.norm()),
        }


def _meta(cfg: IFAdapterConfig, built: BuiltData, fp_id: str, n_tokens: int) -> FingerprintMeta:
    return FingerprintMeta(
        fingerprint_id=fp_id,
        method="if_adapter",
        template="simple",
        prompt_format="simple",
        target=built.target,
        n_keys=len(built.keys),
        key_seed=built.key_seed,
        base_model=cfg.model,
        datasets=built.datasets,
        extra={
            "data": cfg.data.model_dump(),
            "counts": built.counts,
            "adapter": cfg.adapter.model_dump(),
            "residual": cfg.adapter.residual,
            "n_tokens_T": n_tokens,
            "adapter_dir": f"private/{ADAPTER_SUBDIR}",
        },
    )
