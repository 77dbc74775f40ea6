"""The ``train_run`` row: one builder for fingerprinting, user fine-tuning and encoder training.

Every training step reports the same columns (what ran, on which data, how long, how much memory),
so a table of all training runs compares like with like; each caller adds its own ``extra`` JSON.
"""

from __future__ import annotations

import json
import resource
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def strategy_name(distributed: dict[str, Any] | None, world_size: int) -> str:
    """The ``strategy`` column: single | ddp | deepspeed_zero<stage>."""
    dist = distributed or {}
    if dist.get("strategy") == "deepspeed":
        stage = (dist.get("deepspeed_config") or {}).get("zero_optimization", {}).get("stage")
        return f"deepspeed_zero{stage}"
    return "ddp" if world_size > 1 else "single"


def train_run_row(
    *,
    purpose: str,
    method: str,
    model_ref: str | None,
    artifact: str,
    dataset: str,
    n_train_rows: int,
    learning_rate: float,
    global_batch_size: int,
    trainable_params: int,
    extra: dict[str, Any],
    outcome: Any = None,
    fingerprint_id: str | None = None,
    datasets: list[str] | None = None,
    world_size: int = 1,
    distributed: dict[str, Any] | None = None,
    **measured: Any,
) -> dict[str, Any]:
    """One ``train_run`` row.

    Args:
        outcome: A :class:`tasks.training.loop.TrainOutcome` (HF Trainer runs): epochs, steps,
            final loss and seconds come from it. Loops of their own pass ``epochs``, ``steps``,
            ``final_loss`` and ``train_seconds`` in ``measured`` instead.
        extra: Method-specific details, stored as sorted JSON.
        Other arguments are the columns of the same name (``runner.results.schemas``).
    """
    if outcome is not None:
        state = outcome.trainer.state
        measured = {
            "epochs": float(state.epoch or 0.0),
            "steps": int(state.global_step),
            "final_loss": outcome.final_loss,
            "train_seconds": outcome.seconds,
            **measured,
        }
    row = {
        "discriminator": "final",
        "purpose": purpose,
        "method": method,
        "model_ref": model_ref,
        "fingerprint_id": fingerprint_id,
        "artifact": artifact,
        "dataset": dataset,
        "n_train_rows": n_train_rows,
        "learning_rate": learning_rate,
        "global_batch_size": global_batch_size,
        "num_workers": world_size,
        "strategy": strategy_name(distributed, world_size),
        "peak_rss_mb": peak_rss_mb(),
        "trainable_params": trainable_params,
        "extra": json.dumps({**extra, **_resumed(outcome)}, sort_keys=True, default=str),
        **measured,
    }
    if datasets is not None:
        row["datasets"] = datasets
    return row


def fingerprint_row(
    cfg: Any,
    method: str,
    built: Any,
    rows: list[dict],
    fp_id: str,
    out_dir: Any,
    outcome: Any,
    trainable: int,
    extra: dict[str, Any],
    distributed: dict[str, Any] | None,
    world_size: int,
) -> dict[str, Any]:
    """The ``train_run`` row of a fingerprinting step (IF_SFT or IF_adapter, rank 0).

    ``cfg`` is the step config (``model``, ``train``), ``built`` its dataset (keys, counts,
    datasets), ``rows`` the tokenized training rows.
    """
    extra = {
        **extra,
        "first_loss": outcome.losses[0] if outcome.losses else None,
        "grad_accum": cfg.train.grad_accum(world_size),
        "longest_row_tokens": max(r["length"] for r in rows),
        "counts": built.counts,
    }
    return train_run_row(
        purpose="fingerprint",
        method=method,
        model_ref=cfg.model,
        fingerprint_id=fp_id,
        artifact=str(out_dir),
        dataset="; ".join(built.datasets),
        datasets=built.datasets,
        n_train_rows=len(rows),
        learning_rate=cfg.train.lr,
        global_batch_size=cfg.train.total_batch_size,
        trainable_params=trainable,
        extra=extra,
        outcome=outcome,
        world_size=world_size,
        distributed=distributed,
    )


def _resumed(outcome: Any) -> dict[str, int]:
    """``resumed_from_step`` when training continued from a checkpoint (a lost worker)."""
    step = getattr(outcome, "resumed_from_step", None)
    return {} if step is None else {"resumed_from_step": step}
