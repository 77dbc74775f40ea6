"""Configs of the HuRef CNN encoder and its training, torch-free.

Kept free of torch so that ``fprun validate`` and the ``huref_encoder`` experiment kind can check a
config instantly. The defaults are the seed's sizes (K = 4096, kernel 48, batch 10, 17 epochs): they
are **GPU defaults** (one 10x6x4096x4096 fp32 block is 4 GiB; the seed encoder has 341 M weights).
On a CPU override the sizes, e.g. ``configs/smoke/huref_encoder.yaml`` (K = 64, kernel 4, stride 2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config import Strict
from tasks.errors import ArchitectureError
from tasks.models.device import DeviceName


class CNNEncoderConfig(Strict):
    """Shape of the CNN encoder: conv -> ReLU -> BN (all but the last), last conv -> BN, then mean.

    The seed uses kernel 48, stride 4, padding (k - 4) / 2 = 22 and channels 6 -> 8 -> 64 -> 256 ->
    512, taking a 4096-wide map to 16 x 16 before the global average. Padding generalises to
    (kernel - stride) / 2 so that every conv divides the width by ``stride`` exactly.
    """

    in_channels: int = Field(6, ge=1, description="3 * n_layers invariant matrices per model")
    channels: list[int] = Field(
        default_factory=lambda: [8, 64, 256, 512],
        min_length=1,
        description="output channels of each conv; the last is the "
        "feature dimension (512 feeds the image generator)",
    )
    kernel: int = Field(48, ge=1, description="conv kernel size (seed: 48)")
    stride: int = Field(4, ge=1, description="conv stride (seed: 4)")

    @model_validator(mode="after")
    def _even_padding(self) -> CNNEncoderConfig:
        if self.kernel < self.stride or (self.kernel - self.stride) % 2:
            raise ValueError(
                f"kernel - stride must be even and >= 0 (got kernel {self.kernel}, "
                f"stride {self.stride}) so padding (kernel - stride) / 2 is whole"
            )
        return self

    @property
    def padding(self) -> int:
        """(kernel - stride) / 2: the seed's (k - 4) / 2 for stride 4."""
        return (self.kernel - self.stride) // 2

    @property
    def out_dim(self) -> int:
        """Dimension of the pooled feature vector."""
        return self.channels[-1]

    def spatial_sizes(self, k: int) -> list[int]:
        """Width of the map after each conv for a K x K input (the seed: 4096 -> ... -> 16).

        Raises:
            ArchitectureError: when a conv would get an empty map, i.e. K is too small for this
                kernel/stride (the fix is to lower ``stride`` or ``kernel``).
        """
        sizes, width = [k], k
        for _ in self.channels:
            width = (width + 2 * self.padding - self.kernel) // self.stride + 1
            if width < 1:
                raise ArchitectureError(
                    f"CNN encoder (kernel {self.kernel}, stride {self.stride}, "
                    f"{len(self.channels)} convs) shrinks a {k}x{k} input to nothing",
                    "use a smaller kernel/stride (e.g. encoder.kernel=4 encoder.stride=2) or "
                    "a larger K",
                )
            sizes.append(width)
        return sizes


class EncoderTrainConfig(Strict):
    """Contrastive + GAN-to-Gaussian training on synthetic triplets, as the seed's encoder_train."""

    tokens: int = Field(4096, ge=2, description="K: side of each synthetic invariant matrix")
    n_layers: int = Field(2, ge=1, description="last layers per model (3 matrices each)")
    inner_dim: int | None = Field(
        None,
        ge=1,
        description="inner size of the factors x, q, k "
        "(None: K, as the seed; a model's hidden size is more realistic)",
    )
    encoder: CNNEncoderConfig = CNNEncoderConfig()
    anchor: Literal["sandwich", "seed_independent_y"] = Field(
        "sandwich",
        description="sandwich: anchor = x q k x^T, the shape of real invariants "
        "(fprun's fix); seed_independent_y: the seed's x q k y with an independent y",
    )
    batch_size: int = Field(10, ge=2, description="triplets per step (BatchNorm needs >= 2)")
    steps_per_epoch: int = Field(10, ge=1, description="D-steps, then as many encoder steps")
    epochs: int = Field(17, ge=1)
    noise: float = Field(0.4, ge=0, description="x' = x + noise * eps for positives")
    qk_noise: float = Field(0.1, ge=0, description="q' = q + qk_noise * eps, likewise k'")
    positive_rate: float = Field(1.3, ge=0, le=2, description="r in r(1-cos_ap) + (2-r)|cos_an|")
    gan_weight: float = Field(0.5, ge=0, description="weight of the encoder's BCE term")
    disc_hidden: list[int] = Field(
        default_factory=lambda: [256, 128],
        min_length=1,
        description="discriminator MLP hidden sizes (512->256->128->1)",
    )
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (encoder and discriminator)")
    t_max: int = Field(1500, ge=1, description="CosineAnnealingLR T_max, stepped every step")
    eta_min: float = Field(5e-6, ge=0, description="CosineAnnealingLR eta_min")
    seed: int = Field(100, description="seeds weights and the training triplets")
    eval_triplets: int = Field(32, ge=2, description="held-out triplets scored before/after")
    eval_seed: int = Field(1_000_003, description="seed of the held-out triplets (never trained)")
    checkpoint_every: int = Field(
        0, ge=0, description="epochs between reported checkpoints (0: report metrics only)"
    )
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")

    @model_validator(mode="after")
    def _fits(self) -> EncoderTrainConfig:
        if self.encoder.in_channels != 3 * self.n_layers:
            raise ValueError(
                f"encoder.in_channels ({self.encoder.in_channels}) must be "
                f"3 * n_layers ({3 * self.n_layers})"
            )
        try:
            self.encoder.spatial_sizes(self.tokens)
        except ArchitectureError as exc:
            raise ValueError(exc.problem + "; " + exc.fix) from exc
        return self
