"""Synthetic invariant-like matrices for training the HuRef CNN encoder (no LLM weights needed).

A model's invariants look like X W X^T, so the seed draws Gaussian factors and multiplies them: a
*positive* is the anchor's factors plus noise (an offspring), a *negative* has fresh factors. The
seed's anchor is x q k y with an independent y, sharing no entrywise correlation with its positive
x' q' k' x'^T; fprun's default ``anchor="sandwich"`` uses x q k x^T, the form of real invariants,
and ``anchor="seed_independent_y"`` reproduces the seed (docs/seed_fixes.md). Every matrix is
z-scored on its own, as the encoder's input always is.
"""

from __future__ import annotations

import torch

from tasks.huref.encoder.config import EncoderTrainConfig
from tasks.huref.encoder.model import standardise_per_matrix


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=gen.device)


def _sandwich(
    x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, y: torch.Tensor | None = None
) -> torch.Tensor:
    """x q k y per matrix ([C, K, D] @ [C, D, D] @ [C, D, D] @ [C, D, K]); y defaults to x^T."""
    right = x.transpose(-1, -2) if y is None else y
    return x @ q @ k @ right


def _one_triplet(
    cfg: EncoderTrainConfig, gen: torch.Generator, anchor: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c, kk = 3 * cfg.n_layers, cfg.tokens
    d = cfg.inner_dim or kk
    x, q, k = _randn(gen, c, kk, d), _randn(gen, c, d, d), _randn(gen, c, d, d)
    y = _randn(gen, c, d, kk) if anchor == "seed_independent_y" else None
    a = _sandwich(x, q, k, y)
    xp = x + cfg.noise * _randn(gen, c, kk, d)
    qp = q + cfg.qk_noise * _randn(gen, c, d, d)
    kp = k + cfg.qk_noise * _randn(gen, c, d, d)
    p = _sandwich(xp, qp, kp)
    n = _sandwich(_randn(gen, c, kk, d), _randn(gen, c, d, d), _randn(gen, c, d, d))
    return a, p, n


def make_triplets(
    cfg: EncoderTrainConfig, batch: int, gen: torch.Generator, anchor: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` (anchor, positive, negative) stacks of shape ``[batch, 3 * n_layers, K, K]``.

    Built one sample at a time so that the transient factors (4 GiB per 10-sample block at the
    seed's K = 4096) never exist for the whole batch at once.

    Args:
        cfg: Sizes and noise levels.
        batch: Number of triplets.
        gen: Generator on the target device; fixes the draw.
        anchor: ``sandwich`` or ``seed_independent_y`` (default: ``cfg.anchor``).
    """
    mode = anchor or cfg.anchor
    parts = [_one_triplet(cfg, gen, mode) for _ in range(batch)]
    return tuple(standardise_per_matrix(torch.stack(group)) for group in zip(*parts, strict=True))


def make_disc_batch(cfg: EncoderTrainConfig, batch: int, gen: torch.Generator) -> torch.Tensor:
    """The discriminator's fake-sample inputs: x q k x^T, z-scored per matrix (as in the seed)."""
    c, kk = 3 * cfg.n_layers, cfg.tokens
    d = cfg.inner_dim or kk
    mats = [
        _sandwich(_randn(gen, c, kk, d), _randn(gen, c, d, d), _randn(gen, c, d, d))
        for _ in range(batch)
    ]
    return standardise_per_matrix(torch.stack(mats))
