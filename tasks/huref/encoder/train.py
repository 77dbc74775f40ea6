"""Training the HuRef CNN encoder: contrastive + GAN-to-Gaussian, as the seed's encoder_train.py.

Each epoch runs ``steps_per_epoch`` discriminator steps (encoder frozen), then as many encoder
steps: D tells N(0, I) samples from z-scored features, and the encoder minimises the contrastive
loss plus ``gan_weight`` x BCE(D(features), real), so its features keep lineage and look Gaussian.
Hand-written because HF Trainer drives one model and optimiser, and this alternates two.
:func:`train_encoder` is a step function with fprun's training hook, ``on_report(metrics,
checkpoint_dir)`` once per epoch (``on_report=`` or ``callbacks=[...]``), so ``runner/`` can plug
Ray Train's reporting in without ``tasks`` importing Ray.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from torch import nn

from tasks.huref.encoder.config import EncoderTrainConfig
from tasks.huref.encoder.data import make_disc_batch, make_triplets
from tasks.huref.encoder.model import CNNEncoder, mean_pool, save_encoder
from tasks.models.device import pick_device
from tasks.progress import progress_of
from tasks.training.rows import train_run_row

CODE_VERSION = "1"
LOG_FILE = "train_log.jsonl"


class Discriminator(nn.Module):
    """The seed's MLP 512 -> 256 -> ReLU -> 128 -> ReLU -> 1 -> Sigmoid."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in zip([in_dim, *hidden[:-1]], hidden, strict=True):
            layers += [nn.Linear(cin, cout), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden[-1], 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _standardise(v: torch.Tensor) -> torch.Tensor:
    # Training-time z-score: a degenerate batch must not abort a run, so no constant check here.
    return (v - v.mean(dim=-1, keepdim=True)) / v.std(dim=-1, keepdim=True).clamp_min(1e-12)


def contrastive_loss(
    ea: torch.Tensor, ep: torch.Tensor, en: torch.Tensor, positive_rate: float
) -> torch.Tensor:
    """mean_b[ r (1 - cos(a, p)) + (2 - r) |cos(a, n)| ], the seed's L_C."""
    cos = nn.functional.cosine_similarity
    r = positive_rate
    return (r * (1 - cos(ea, ep, dim=-1)) + (2 - r) * cos(ea, en, dim=-1).abs()).mean()


def resolve_device(spec: str) -> torch.device:
    """:func:`tasks.models.device.pick_device` as a ``torch.device``."""
    return torch.device(pick_device(spec))


@torch.no_grad()
def held_out_scores(
    encoder: CNNEncoder, cfg: EncoderTrainConfig, device: torch.device
) -> dict[str, float]:
    """Cosines of z-scored features on triplets never trained on (fixed ``eval_seed``).

    Held-out triplets always use the sandwich anchor (the shape of real invariants), whatever
    the training anchor, so the seed's quirk and the fix are scored on the same question: does
    an offspring land closer to its base than an unrelated model does? Mean pooling of the same
    triplets is the baseline.
    """
    gen = torch.Generator(device=device).manual_seed(cfg.eval_seed)
    was_training = encoder.training
    encoder.eval()
    cos = nn.functional.cosine_similarity
    ap, an, mp_ap, mp_an = [], [], [], []
    left = cfg.eval_triplets
    while left > 0:
        a, p, n = make_triplets(cfg, min(left, cfg.batch_size), gen, anchor="sandwich")
        fa, fp, fn = (_standardise(encoder(t)) for t in (a, p, n))
        ap.append(cos(fa, fp, dim=-1))
        an.append(cos(fa, fn, dim=-1))
        for i in range(a.shape[0]):
            va, vp, vn = (mean_pool(t[i]) for t in (a, p, n))
            mp_ap.append(cos(va, vp, dim=0))
            mp_an.append(cos(va, vn, dim=0))
        left -= a.shape[0]
    encoder.train(was_training)
    ap_t, an_t = torch.cat(ap), torch.cat(an)
    r = cfg.positive_rate
    return {
        "cos_ap": float(ap_t.mean()),
        "cos_an": float(an_t.mean()),
        "abs_cos_an": float(an_t.abs().mean()),
        "loss_contrastive": float((r * (1 - ap_t) + (2 - r) * an_t.abs()).mean()),
        "frac_ap_gt_an": float((ap_t > an_t).float().mean()),
        "meanpool_cos_ap": float(torch.stack(mp_ap).mean()),
        "meanpool_cos_an": float(torch.stack(mp_an).mean()),
    }


@torch.no_grad()
def calibrated_control(cfg: EncoderTrainConfig, device: torch.device) -> dict[str, float]:
    """Held-out scores of the *untrained* encoder after re-estimating its BatchNorm statistics.

    The fair baseline for "did training help": a freshly initialised encoder's BN running stats
    (mean 0, var 1) do not match its conv outputs, so its raw "before" scores look bad for a
    reason that ``steps_per_epoch`` forward passes fix without any gradient step.
    """
    torch.manual_seed(cfg.seed)  # the same initial weights as the trainer's encoder
    encoder = CNNEncoder(cfg.encoder).to(device)
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    gen = torch.Generator(device=device).manual_seed(cfg.eval_seed + 1)
    encoder.train()
    for _ in range(cfg.steps_per_epoch):
        for t in make_triplets(cfg, cfg.batch_size, gen):
            encoder(t)
    return held_out_scores(encoder, cfg, device)


def _reporters(callbacks: Sequence[Any] | None, on_report: Callable | None) -> list[Callable]:
    out = [getattr(cb, "on_report", cb) for cb in (callbacks or [])]
    out += [on_report] if on_report is not None else []
    bad = [type(cb).__name__ for cb in out if not callable(cb)]
    if bad:  # e.g. an HF TrainerCallback: this hand-written loop has no Trainer to attach it to
        raise TypeError(f"callbacks must be callables or have on_report(metrics, dir): {bad}")
    return out


class _Trainer:
    """Models, optimisers and schedules of one run; one method per phase of an epoch."""

    def __init__(self, cfg: EncoderTrainConfig, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.encoder = CNNEncoder(cfg.encoder).to(device)
        self.disc = Discriminator(cfg.encoder.out_dim, cfg.disc_hidden).to(device)
        self.opt_e = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr)
        self.sched = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=cfg.t_max, eta_min=cfg.eta_min)
            for o in (self.opt_e, self.opt_d)
        ]
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.bce = nn.BCELoss()

    def disc_step(self) -> float:
        cfg, b = self.cfg, self.cfg.batch_size
        self.encoder.eval()
        with torch.no_grad():
            fake = _standardise(self.encoder(make_disc_batch(cfg, b, self.gen)))
        real = torch.randn(b, cfg.encoder.out_dim, generator=self.gen, device=self.device)
        ones, zeros = torch.ones(b, 1, device=self.device), torch.zeros(b, 1, device=self.device)
        loss = self.bce(self.disc(real), ones) + self.bce(self.disc(fake), zeros)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.sched[1].step()
        return loss.item()

    def encoder_step(self) -> tuple[float, float, float]:
        cfg = self.cfg
        self.encoder.train()
        a, p, n = make_triplets(cfg, cfg.batch_size, self.gen)
        ea, ep, en = self.encoder(a), self.encoder(p), self.encoder(n)
        lc = contrastive_loss(ea, ep, en, cfg.positive_rate)
        lg = self.bce(self.disc(_standardise(ea)), torch.ones(ea.shape[0], 1, device=self.device))
        loss = lc + cfg.gan_weight * lg
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_e.step()
        self.sched[0].step()
        return loss.item(), lc.item(), lg.item()

    def epoch(self, index: int) -> dict[str, float]:
        steps = self.cfg.steps_per_epoch
        d = [self.disc_step() for _ in range(steps)]
        e = [self.encoder_step() for _ in range(steps)]
        return {
            "epoch": index + 1,
            "loss_d": fmean(d),
            "loss_e": fmean(x[0] for x in e),
            "loss_contrastive": fmean(x[1] for x in e),
            "loss_gan": fmean(x[2] for x in e),
            "last_loss_e": e[-1][0],
            "lr": self.sched[0].get_last_lr()[0],
        }


def train_encoder(
    config: dict,
    *,
    inputs: dict[str, Path],
    out_dir: Path,
    callbacks: Sequence[Any] | None = None,
    on_report: Callable[[dict, Path | None], None] | None = None,
    **_hooks: Any,
) -> list[dict]:
    """Train the CNN encoder on synthetic triplets and save it as safetensors + JSON.

    Args:
        config: An :class:`EncoderTrainConfig` as a dict.
        inputs: Unused (training needs no upstream artifact).
        out_dir: Receives ``encoder.safetensors``, ``encoder.json`` and ``train_log.jsonl``.
        callbacks: Per-epoch reporters ``cb(metrics, checkpoint_dir)`` or objects with
            ``on_report``; ``checkpoint_dir`` is a saved encoder every ``checkpoint_every`` epochs.
        on_report: One more reporter, the hook name runner/exec/train.py passes.
        _hooks: ``progress`` (tasks.progress) hears of every epoch; others are ignored.

    Returns:
        One ``train_run`` row (purpose ``encoder``, method ``huref_cnn``).
    """
    cfg = EncoderTrainConfig.model_validate(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reporters = _reporters(callbacks, on_report)
    progress = progress_of(_hooks)
    trainer = _Trainer(cfg, resolve_device(cfg.device))
    before = held_out_scores(trainer.encoder, cfg, trainer.device)
    started, history = time.perf_counter(), []
    with open(out / LOG_FILE, "w", encoding="utf-8") as log:
        for i in range(cfg.epochs):
            metrics = trainer.epoch(i)
            history.append(metrics)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            ckpt = None
            if cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0:
                ckpt = save_encoder(trainer.encoder, out / "checkpoint", {"epoch": i + 1})
            for report in reporters:
                report(dict(metrics), ckpt)
            progress("epochs", i + 1, cfg.epochs)
    seconds = time.perf_counter() - started
    after = held_out_scores(trainer.encoder, cfg, trainer.device)
    control = calibrated_control(cfg, trainer.device)
    summary = {
        "held_out_before": before,
        "held_out_control": control,
        "held_out_after": after,
        "loss_first_epoch": history[0],
        "loss_last_epoch": history[-1],
    }
    save_encoder(
        trainer.encoder,
        out,
        {"trained": cfg.model_dump(), "summary": summary, "code_version": CODE_VERSION},
    )
    return [_row(cfg, out, trainer, history, summary, seconds)]


def _row(
    cfg: EncoderTrainConfig,
    out: Path,
    trainer: _Trainer,
    history: list[dict],
    summary: dict,
    seconds: float,
) -> dict:
    steps = cfg.epochs * cfg.steps_per_epoch
    return train_run_row(
        purpose="encoder",
        method="huref_cnn",
        model_ref=None,
        artifact=str(out),
        dataset=f"synthetic:huref_triplets(K={cfg.tokens},anchor={cfg.anchor})",
        n_train_rows=steps * cfg.batch_size,
        learning_rate=cfg.lr,
        global_batch_size=cfg.batch_size,
        trainable_params=sum(p.numel() for p in trainer.encoder.parameters()),
        extra={
            "anchor": cfg.anchor,
            "k": cfg.tokens,
            "n_layers": cfg.n_layers,
            "encoder": cfg.encoder.model_dump(),
            **summary,
        },
        epochs=float(cfg.epochs),
        steps=steps,
        final_loss=history[-1]["last_loss_e"],
        train_seconds=seconds,
    )
