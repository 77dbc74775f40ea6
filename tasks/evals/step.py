"""Utility evals: did fingerprinting, fine-tuning or merging hurt the model?

:func:`eval_step` runs one suite on one model and returns ``eval`` rows: ``perplexity`` on held-out
plain text; ``math``, accuracy with 95% intervals on seeded reasoning-gym tasks, an easy one the
base model can do (basic arithmetic, N=200; gsm_symbolic alone sits near zero on small models, so
it cannot show harm) and gsm_symbolic; ``refusal``, MergeGuard's refusal rate on harmful prompts;
``lm_eval``, the seed's 24 harmlessness tasks (optional). Each suite is a module of
:mod:`tasks.evals`. Generations and per-item results go to ``out_dir`` as JSONL for auditing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.config import validate
from tasks.evals.config import EvalConfig
from tasks.finetune.config import step_model
from tasks.verify.stats import proportion_ci

CODE_VERSION = "1"


def eval_step(
    config: dict[str, Any], *, inputs: dict[str, Path], out_dir: Path, **hooks: Any
) -> list[dict]:
    """Evaluate one model on one suite.

    Args:
        config: A :class:`tasks.evals.config.EvalConfig` as a dict.
        inputs: Optional ``{"model": folder}`` (a fingerprint folder means its ``published/``).
        out_dir: Where responses are saved (JSONL).

    Returns:
        ``eval`` rows: proportions carry ``value = k/n`` and a 95% interval.

    Raises:
        ConfigError, ModelRefError, DataError: bad input, before any generation.
    """
    cfg: EvalConfig = validate(EvalConfig, config, "eval step")
    src = step_model(inputs, cfg.model)
    from tasks.models.device import pick_device

    device = pick_device(cfg.device)
    if cfg.suite == "lm_eval":
        from tasks.evals.lm_eval import run_lm_eval

        rows = run_lm_eval(
            src.path, cfg.lm_eval, device=device, dtype=cfg.dtype, batch_size=cfg.batch_size
        )
    else:
        model, tokenizer = load_model(src.path, device, cfg.dtype)
        rows = _run_suite(cfg, model, tokenizer, out_dir)
    return [_finish(row, cfg, src.ref) for row in rows]


def load_model(path: Path, device: str, dtype: str) -> tuple[Any, Any]:
    """Model in eval mode on ``device`` and its tokenizer (EOS pads when there is no pad)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.to(device).eval(), tokenizer


def _run_suite(cfg: EvalConfig, model: Any, tokenizer: Any, out_dir: Path) -> list[dict]:
    if cfg.suite == "perplexity":
        from tasks.evals.perplexity import run_perplexity

        return run_perplexity(model, tokenizer, cfg.perplexity, batch_size=cfg.batch_size)
    if cfg.suite == "refusal":
        from tasks.evals.refusal import run_refusal

        return run_refusal(
            model, tokenizer, cfg.refusal, batch_size=cfg.batch_size, seed=cfg.seed, out_dir=out_dir
        )
    from tasks.evals.math_accuracy import make_problems, run_math

    for task in cfg.math.tasks:  # every task's data is checked before the first generation
        make_problems(task.model_copy(update={"n": 1}))
    return [
        run_math(model, tokenizer, task, batch_size=cfg.batch_size, seed=cfg.seed, out_dir=out_dir)
        for task in cfg.math.tasks
    ]


def _finish(row: dict, cfg: EvalConfig, model_ref: str) -> dict:
    """Add the common columns; turn ``k`` of ``n`` into a proportion with its interval."""
    out = dict(row)
    k = out.pop("k", None)
    if k is not None:
        out["value"] = k / out["n"]
        out["ci_low"], out["ci_high"] = proportion_ci(k, out["n"], cfg.ci_method)
        out["extra"] = {**out.get("extra", {}), "k": k, "ci_method": cfg.ci_method}
    out["extra"] = json.dumps(out.get("extra") or {}, sort_keys=True, default=str)
    out.update(suite=cfg.suite, model_ref=model_ref, model_step_id=cfg.model_step_id)
    return out
