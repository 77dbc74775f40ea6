"""Synthetic invariant-like matrices for training the HuRef CNN encoder (METHODS.md section 3.7).

Training uses no LLM weights: a model's invariants look like X W X^T (token embeddings sandwiching a
product of weight matrices), so the seed draws Gaussian factors and multiplies them. A *positive* is
the anchor's factors plus noise (an offspring model), a *negative* has fresh factors (unrelated).

The seed builds its training anchor as x q k y with an **independent** y, while its positives are
x' q' k' x'^T: the anchor and its positive then share no entrywise correlation at all (they differ
in the whole right factor), so the encoder is pushed to match matrices that have nothing in common
but their left factor. fprun's default ``anchor="sandwich"`` uses x q k x^T, the form of real
invariants and of the seed's own discriminator batch; ``anchor="seed_independent_y"`` reproduces the
seed (docs/seed_fixes.md). Every matrix is z-scored on its own, as the encoder's input always is.
"""

from __future__ import annotations

import torch

from tasks.huref.encoder import standardise_per_matrix
from tasks.huref.encoder_config import EncoderTrainConfig


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=gen.device)


def _sandwich(x: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
              y: torch.Tensor | None = None) -> torch.Tensor:
    """x q k y per matrix ([C, K, D] @ [C, D, D] @ [C, D, D] @ [C, D, K]); y defaults to x^T."""
    right = x.transpose(-1, -2) if y is None else y
    return x @ q @ k @ right


def _one_triplet(cfg: EncoderTrainConfig, gen: torch.Generator,
                 anchor: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def make_triplets(cfg: EncoderTrainConfig, batch: int, gen: torch.Generator,
                  anchor: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    mats = [_sandwich(_randn(gen, c, kk, d), _randn(gen, c, d, d), _randn(gen, c, d, d))
            for _ in range(batch)]
    return standardise_per_matrix(torch.stack(mats))
