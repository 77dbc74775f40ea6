"""HuRef feature extraction: invariants -> a 512-dim Gaussian-like vector, two encoders as the seed.

* :func:`mean_pool` (the default for real models): the raw invariants cut into 512 contiguous
  chunks, each averaged, then z-scored; exactly the seed's ``reshape(512, -1).mean(1)`` for its
  6 x 4096 x 4096 tensor, near-equal contiguous chunks for any other K or layer count.
* :class:`CNNEncoder`: per-matrix standardised invariants through strided convs, globally averaged,
  z-scored. It is stored as safetensors + JSON config (:func:`save_encoder`), never as the seed's
  pickled module; :func:`load_encoder` refuses pickles unless ``allow_pickle`` is passed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.errors import ArchitectureError, CheckpointError, DataError
from tasks.files import atomic_path, atomic_write_json
from tasks.huref.encoder.config import CNNEncoderConfig

FEATURE_DIM = 512
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
ENCODER_FORMAT = 1
PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".bin", ".ckpt")


def zscore(v: torch.Tensor) -> torch.Tensor:
    """(v - mean) / std over the last dim, torch's unbiased std as in the seed.

    Raises:
        DataError: for a constant vector, whose z-score is undefined (e.g. all-zero invariants).
    """
    std = v.std(dim=-1, keepdim=True)
    if bool((std == 0).any()) or not bool(torch.isfinite(std).all()):
        raise DataError(
            "feature vector is constant or not finite, so it cannot be z-scored",
            "check the invariants (all-zero or NaN matrices?) and re-extract",
        )
    return (v - v.mean(dim=-1, keepdim=True)) / std


def standardise_per_matrix(t: torch.Tensor) -> torch.Tensor:
    """Standardise each K x K matrix of ``[..., M, K, K]`` alone (as ICS and the seed's CNN)."""
    flat = t.flatten(-2)
    mean = flat.mean(dim=-1, keepdim=True)
    std = flat.std(dim=-1, keepdim=True)
    return ((flat - mean) / std).view_as(t)


def mean_pool(invariants: torch.Tensor, dim: int = FEATURE_DIM) -> torch.Tensor:
    """Mean of ``dim`` contiguous chunks of the raw invariants, then z-scored.

    Args:
        invariants: Raw (un-standardised) ``[3 * n_layers, K, K]`` tensor, any float dtype.
        dim: Feature dimension (512 feeds the image generator).

    Returns:
        A float32 vector of length ``dim`` with mean 0 and unbiased std 1.
    """
    flat = invariants.detach().to(torch.float32).reshape(-1)
    n = flat.numel()
    if n < dim:
        raise DataError(
            f"invariants have {n} values, fewer than the {dim} pooled features",
            "extract with a larger K",
        )
    if n % dim == 0:
        # The seed's exact computation (6*4096*4096 / 512 = 196,608 values = 48 rows per chunk).
        pooled = flat.reshape(dim, -1).mean(dim=1)
    else:
        # Near-equal contiguous chunks (sizes differ by at most one) for any K / layer count.
        pooled = torch.stack([c.mean() for c in torch.tensor_split(flat, dim)])
    return zscore(pooled)


class CNNEncoder(nn.Module):
    """The seed's CNN: [conv -> ReLU -> BN] x (n - 1), conv -> BN, global average pooling."""

    def __init__(self, config: CNNEncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        widths = [config.in_channels, *config.channels]
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, config.kernel, config.stride, config.padding))
            if i < len(config.channels) - 1:
                layers.append(nn.ReLU())  # the seed's order: conv -> ReLU -> BN
            layers.append(nn.BatchNorm2d(cout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, K, K]`` standardised invariants -> ``[B, out_dim]`` raw features."""
        return self.net(x).mean(dim=(-2, -1))


@torch.no_grad()
def encode_cnn(encoder: CNNEncoder, invariants: torch.Tensor) -> torch.Tensor:
    """The seed's CNN feature: standardise each matrix, encode in eval mode, z-score.

    Raises:
        ArchitectureError: when the invariants' matrix count differs from the encoder's input
            channels, or K is too small for its kernel/stride.
    """
    cfg = encoder.config
    if invariants.dim() != 3 or invariants.shape[0] != cfg.in_channels:
        raise ArchitectureError(
            f"invariants of shape {tuple(invariants.shape)} do not fit an encoder trained on "
            f"{cfg.in_channels} matrices",
            "extract with the encoder's n_layers, or use mean pooling",
        )
    cfg.spatial_sizes(int(invariants.shape[-1]))
    device = next(encoder.parameters()).device
    x = standardise_per_matrix(invariants.to(device, torch.float32)).unsqueeze(0)
    encoder.eval()
    return zscore(encoder(x)[0]).cpu()


def save_encoder(
    encoder: CNNEncoder, out_dir: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``encoder.safetensors`` (weights + BN buffers) and ``encoder.json`` (shape + meta).

    The JSON is written last via a temporary name, so a folder with ``encoder.json`` is complete.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "fprun-huref-encoder"})
    doc = {"format": ENCODER_FORMAT, "encoder": encoder.config.model_dump(), **(meta or {})}
    atomic_write_json(out / CONFIG_FILE, doc)
    return out


def load_encoder(
    path: str | os.PathLike, *, allow_pickle: bool = False, device: str = "cpu"
) -> CNNEncoder:
    """Load an encoder folder written by :func:`save_encoder` (or, opted in, a seed pickle).

    Args:
        path: The folder, or its ``encoder.safetensors`` / ``encoder.json``; a ``.pth``-style
            file is a pickle and needs ``allow_pickle``.
        allow_pickle: Unpickle ``.pth`` files (can run arbitrary code: only for files you trust).
        device: Where to put the weights.

    Raises:
        CheckpointError: missing, corrupt or pickled (without ``allow_pickle``) encoders.
    """
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        return _load_pickled(p, allow_pickle, device)
    folder = p.parent if p.name in (WEIGHTS_FILE, CONFIG_FILE) else p
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{folder} holds no fprun encoder ({CONFIG_FILE} + {WEIGHTS_FILE})",
            "train one with 'fprun huref train-encoder --out DIR'",
        )
    try:
        doc = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        cfg = CNNEncoderConfig.model_validate(doc["encoder"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} is not a valid encoder config ({exc})",
            "re-train or re-save the encoder",
        ) from exc
    encoder = CNNEncoder(cfg)
    _load_state(encoder, folder / WEIGHTS_FILE)
    return encoder.to(device).eval()


def _load_state(encoder: CNNEncoder, file: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({exc})", "re-train or re-save the encoder"
        ) from exc
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{file} does not match its {CONFIG_FILE} ({first})", "re-train or re-save the encoder"
        ) from exc


def _load_pickled(p: Path, allow_pickle: bool, device: str) -> CNNEncoder:
    """The seed's format: ``torch.load`` of a full pickled module (or a state dict)."""
    if not allow_pickle:
        raise CheckpointError(
            f"{p} is a pickle, which can run arbitrary code when loaded",
            "pass --allow-pickle if you trust the file, or use an fprun "
            "encoder folder (safetensors)",
        )
    if not p.is_file():
        raise CheckpointError(f"encoder file {p} does not exist", "check the path")
    try:
        obj = torch.load(str(p), map_location=device, weights_only=False)
    except (AttributeError, ModuleNotFoundError) as exc:
        # A seed .pth pickles its CNNEncoder class by module path; that class must be importable.
        raise CheckpointError(
            f"{p} needs a class that is not importable ({exc})",
            "put the seed's encoder module on PYTHONPATH",
        ) from exc
    except Exception as exc:  # any other unpickling failure means a corrupt or foreign file
        raise CheckpointError(
            f"{p} could not be unpickled ({type(exc).__name__})", "check the file"
        ) from exc
    if isinstance(obj, nn.Module):
        obj.config = getattr(obj, "config", CNNEncoderConfig())
        return obj.to(device).eval()
    if isinstance(obj, dict):
        encoder = CNNEncoder(CNNEncoderConfig())
        try:
            encoder.load_state_dict(obj, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{p} holds a state dict that does not fit the seed-shaped CNN encoder",
                "convert it to an fprun encoder folder",
            ) from exc
        return encoder.to(device).eval()
    raise CheckpointError(f"{p} holds a {type(obj).__name__}, not an encoder", "check the file")
