"""Human-readable HuRef fingerprints: a 512-vector -> a picture.

The seed feeds the vector to NVIDIA's StyleGAN2 AFHQ-dog generator, a 350 MB pickle not available
offline. fprun's built-in generator is a fixed-seed coordinate network (CPPN): each pixel's colour
is a small MLP of its coordinates and of a 32-dim code projected from the z-scored vector, with
weights from numpy's version-stable ``RandomState``, so a vector always gives the same picture.
The map is Lipschitz (:meth:`CoordinateNet.lipschitz_bound`, docs/huref_images.md), so similar
vectors give similar pictures, and unrelated vectors unrelated ones. The optional
:class:`StyleGAN2Generator` loads a user-supplied pickle only with ``allow_pickle`` (untested).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tasks.errors import CheckpointError, DataError
from tasks.files import atomic_path

GENERATOR_SEED = 20231208  # HuRef's arXiv date; any fixed value works, it must never change
DEFAULT_SIZE = 256
Vector = Sequence[float] | np.ndarray


def _zscore(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    std = v.std(ddof=1) if v.size > 1 else 0.0
    if not np.isfinite(std) or std == 0:
        raise DataError(
            "fingerprint vector is constant or not finite",
            "check the invariants or the encoder output",
        )
    return (v - v.mean()) / std


class CoordinateNet:
    """A fixed random CPPN: (|x|, y, r, code) -> a 4-colour picture, the same weights every call.

    Four sin layers turn the coordinates (shifted per layer by the code) into four region scores;
    a softmax with ``sharpness`` paints each pixel mostly in one of four palette colours, which
    the code also picks. Sin never saturates, so every vector gets shapes, not a flat colour.

    Args:
        latent_dim: Length of the fingerprint vectors (512).
        code_dim: The vector is projected to this many numbers (each ~N(0, 1) for z-scored input).
        width: Hidden units per layer.
        depth: Hidden sin layers.
        colours: Palette size.
        seed: Weight seed; changing it changes every picture.
    """

    sharpness = 3.0  # softmax gain: crisp regions that still move continuously

    def __init__(
        self,
        latent_dim: int = 512,
        code_dim: int = 32,
        width: int = 32,
        depth: int = 4,
        colours: int = 4,
        seed: int = GENERATOR_SEED,
    ) -> None:
        rs = np.random.RandomState(seed)
        self.latent_dim = latent_dim
        self.proj = rs.standard_normal((latent_dim, code_dim)) / np.sqrt(latent_dim)
        self.w_in = rs.standard_normal((3, width)) * 3.0  # spatial frequency: a few lobes
        self.hidden = [
            rs.standard_normal((width, width)) * (1.8 / np.sqrt(width)) for _ in range(depth - 1)
        ]
        self.latent = [
            rs.standard_normal((code_dim, width)) * (0.9 / np.sqrt(code_dim)) for _ in range(depth)
        ]
        self.w_out = rs.standard_normal((width, colours)) * (3.0 / np.sqrt(width))
        self.palette = rs.standard_normal((code_dim, colours * 3)) * (2.0 / np.sqrt(code_dim))

    def code(self, vector: Vector) -> np.ndarray:
        """The 32-dim code of a vector (z-scored first, so scale and offset do not matter)."""
        z = _zscore(vector)
        if z.size != self.latent_dim:
            raise DataError(
                f"fingerprint vector has {z.size} values, the generator takes {self.latent_dim}",
                "pool or encode to the generator's dimension",
            )
        return z @ self.proj

    def __call__(self, vector: Vector, size: int = DEFAULT_SIZE) -> np.ndarray:
        """Render ``vector`` as a ``[size, size, 3]`` uint8 RGB image."""
        return np.round(self.render_float(self.code(vector), size) * 255).astype(np.uint8)

    def render_float(self, code: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
        """The picture of a code as floats in [0, 1] (before rounding to uint8)."""
        axis = np.linspace(-1.0, 1.0, size)
        y, x = np.meshgrid(axis, axis, indexing="ij")
        # |x|: mirror symmetry, because people read symmetric blots as faces and creatures.
        coords = np.stack([np.abs(x), y, np.sqrt(x * x + y * y)], axis=-1).reshape(-1, 3)
        h = np.sin(coords @ self.w_in + code @ self.latent[0])
        for w, lat in zip(self.hidden, self.latent[1:], strict=True):
            h = np.sin(h @ w + code @ lat)
        logits = self.sharpness * (h @ self.w_out)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        palette = (1.0 / (1.0 + np.exp(-(code @ self.palette)))).reshape(-1, 3)
        return (weights @ palette).reshape(size, size, 3)

    def lipschitz_bound(self) -> float:
        """L with max_pixel |img(z1) - img(z2)| <= L ||z1 - z2|| for z-scored z (colours in [0,1]).

        Chain rule over the layers with spectral norms: sin is 1-Lipschitz, the softmax's
        Jacobian has norm <= 1/2, the palette's sigmoid is 1/4-Lipschitz, and a pixel mixes at most
        ``colours`` palette entries with weights summing to 1. Loose, but it proves continuity.
        """
        p = _spectral_norm(self.proj)
        h = _spectral_norm(self.latent[0]) * p
        for w, lat in zip(self.hidden, self.latent[1:], strict=True):
            h = _spectral_norm(w) * h + _spectral_norm(lat) * p
        n_colours = self.w_out.shape[1]
        mix = np.sqrt(n_colours) * 0.5 * self.sharpness * _spectral_norm(self.w_out) * h
        return float(mix + 0.25 * _spectral_norm(self.palette) * p)


def _spectral_norm(m: np.ndarray) -> float:
    return float(np.linalg.norm(m, 2))


def image_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference in [0, 1] (0: identical, ~0.3: unrelated pictures)."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 RGB array as PNG (temp name, then rename, so no half-written file)."""
    import matplotlib.image as mpimg

    out = Path(path)
    with atomic_path(out, suffix=".png") as tmp:
        mpimg.imsave(tmp, image)
    return out


def contact_sheet(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    heading: str = "",
    ncols: int = 4,
) -> Path:
    """A grid of the pictures with a title under each, as one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
    if heading:
        fig.suptitle(heading, fontsize=11)
    fig.tight_layout(h_pad=1.5)
    out = Path(path)
    try:
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out


class StyleGAN2Generator:
    """The seed's picture: NVIDIA StyleGAN2-ADA ``G_ema`` with truncation 0.5 (cutoff 8), seed 100.

    UNTESTED against a real generator (none is available offline); only the plumbing is tested,
    with a stand-in object. Loading needs NVIDIA's ``dnnlib`` and ``torch_utils`` on PYTHONPATH.
    """

    def __init__(self, g_ema: object, device: str = "cpu") -> None:
        self.g, self.device = g_ema, device

    @classmethod
    def from_pickle(
        cls, path: str | os.PathLike, *, allow_pickle: bool = False, device: str = "cpu"
    ) -> StyleGAN2Generator:
        """Unpickle ``G_ema`` from an NVIDIA network pickle such as ``afhqdog.pkl``.

        Raises:
            CheckpointError: without ``allow_pickle``, for a missing file, a pickle that needs
                ``dnnlib``/``torch_utils`` when they are not importable, or one without ``G_ema``.
        """
        p = Path(path)
        if not allow_pickle:
            raise CheckpointError(
                f"StyleGAN2 generator {p} is a pickle, which can run arbitrary code when loaded",
                "pass --allow-pickle if you trust the file",
            )
        if not p.is_file():
            raise CheckpointError(f"StyleGAN2 generator {p} does not exist", "check the path")
        return cls(_unpickle_g_ema(p), device)

    def __call__(self, vector: Vector, size: int | None = None) -> np.ndarray:
        """Render like the seed; ``size`` is ignored (the generator fixes the resolution)."""
        import torch

        torch.manual_seed(100)
        g = self.g.to(self.device) if hasattr(self.g, "to") else self.g
        z = torch.as_tensor(np.asarray(vector, dtype=np.float32)).reshape(1, -1).to(self.device)
        with torch.no_grad():
            w = g.mapping(z, None, truncation_psi=0.5, truncation_cutoff=8)
            img = g.synthesis(w)
        # The seed's conversion, including its x256 (not x255) scale before the clip.
        arr = ((img[0].permute(1, 2, 0).float().cpu() + 1) / 2 * 256).clamp(0, 255)
        return arr.to(torch.uint8).numpy()


def _unpickle_g_ema(p: Path) -> object:
    import pickle

    try:
        with open(p, "rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - opted in with allow_pickle
    except ModuleNotFoundError as exc:
        raise CheckpointError(
            f"{p} needs module {exc.name!r} (NVIDIA's dnnlib/torch_utils) to unpickle",
            "clone NVlabs/stylegan2-ada-pytorch and add it to PYTHONPATH",
        ) from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"{p} is not a readable pickle ({type(exc).__name__})", "check the file"
        ) from exc
    g = data.get("G_ema") if isinstance(data, dict) else None
    if g is None or not (hasattr(g, "mapping") and hasattr(g, "synthesis")):
        raise CheckpointError(
            f"{p} holds no StyleGAN2 'G_ema' generator",
            "pass an NVIDIA stylegan2-ada-pytorch network pickle",
        )
    return g


Renderer = Callable[..., np.ndarray]
