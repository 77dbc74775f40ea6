"""Derived models for the provenance benchmark: what a thief might do to a published model.

:func:`apply_transform` reads the owner's safetensors folder and writes a complete derived folder
(quantize-dequantize, pruning, relative noise, a function-preserving permutation and rotation, or
a plain copy) that transformers loads, so detectors run on it like on any suspect. Quantize and
prune live in :mod:`tasks.provenance.linear`; noise and permute+rotate reuse the HuRef controls
(:func:`tasks.huref.controls.derive`), so the benchmark and HuRef's own controls are one recipe.
A transform the library cannot do here (a group size that does not divide a layer, an
architecture the rotation does not preserve) raises :class:`UnsupportedTransform`: a failed row.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from tasks.config import Strict
from tasks.errors import ArchitectureError
from tasks.files import atomic_copytree, atomic_path, check_out
from tasks.huref.safetensors_io import CheckpointReader, read_header
from tasks.models.local import check_model_folder

Family = Literal["quantize", "prune", "noise", "permute_rotate", "none"]
# The knobs each family takes; any other knob set is refused (seed is accepted everywhere).
KNOBS: dict[str, tuple[str, ...]] = {
    "quantize": ("bits", "group_size"),
    "prune": ("method", "sparsity"),
    "noise": ("scale",),
    "permute_rotate": (),
    "none": (),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "quantize": ("bits",),
    "prune": ("method", "sparsity"),
    "noise": ("scale",),
}
# Files copied beside rewritten weights (tokenizer, chat template); config files are rewritten.
TOKENIZER_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken")
_REWRITTEN = {"config.json", "generation_config.json", "model.safetensors.index.json"}


class UnsupportedTransform(Exception):
    """The library cannot do this transform on this model, device or dtype (not bad input:
    the caller records a failed row with ``str(exc)`` as the reason)."""


class TransformSpec(Strict):
    """One transform of the owner's model: a family and that family's knobs."""

    family: Family = Field(description="what is done to the owner's model")
    bits: int | None = Field(None, description="quantize: weight bits, 8 or 4")
    group_size: int | None = Field(
        None, ge=1, description="quantize: None = per output channel, else per group of inputs"
    )
    method: Literal["magnitude", "random"] | None = Field(
        None, description="prune: magnitude (L1, smallest first) or random entries"
    )
    sparsity: float | None = Field(
        None, gt=0, lt=1, description="prune: share of each linear weight set to zero"
    )
    scale: float | None = Field(
        None, gt=0, description="noise: Gaussian std relative to each tensor's std"
    )
    seed: int = Field(0, description="RNG seed (random prune, noise, permute_rotate)")

    @model_validator(mode="after")
    def _knobs_fit_family(self) -> TransformSpec:
        allowed = KNOBS[self.family]
        extra = [
            k for k in ("bits", "group_size", "method", "sparsity", "scale") if k not in allowed
        ]
        given = [k for k in extra if getattr(self, k) is not None]
        if given:
            takes = ", ".join(allowed) if allowed else "no knobs"
            raise ValueError(f"family {self.family} takes {takes}, not {', '.join(given)}")
        missing = [k for k in REQUIRED.get(self.family, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"family {self.family} needs {', '.join(missing)}")
        if self.family == "quantize" and self.bits not in (8, 4):
            raise ValueError(f"quantize bits must be 8 or 4, not {self.bits}")
        return self


def strength(spec: TransformSpec) -> float | None:
    """The family's strength knob for plots: bits, sparsity or noise scale; None otherwise."""
    value = {"quantize": spec.bits, "prune": spec.sparsity, "noise": spec.scale}.get(spec.family)
    return None if value is None else float(value)


def transform_label(spec: TransformSpec) -> str:
    """A short name for tables and plots, e.g. ``int4 g32``, ``prune magnitude 0.5``.

    Seeded families name a seed other than 0 (``noise 0.01 s3``); permute+rotate always does.
    """
    seed = f" s{spec.seed}" if spec.seed else ""
    if spec.family == "quantize":
        return f"int{spec.bits} " + (f"g{spec.group_size}" if spec.group_size else "per-channel")
    if spec.family == "prune":
        return f"prune {spec.method} {spec.sparsity:g}" + (seed if spec.method == "random" else "")
    if spec.family == "noise":
        return f"noise {spec.scale:g}{seed}"
    if spec.family == "permute_rotate":
        return f"permute+rotate s{spec.seed}"
    return "none"


def apply_transform(src: Path, out: Path, spec: TransformSpec, *, device: str = "cpu") -> dict:
    """Write the model ``spec`` derives from ``src`` into ``out`` (new or empty), atomically.

    Args:
        src: The owner's model folder (config.json, safetensors, tokenizer files).
        out: Destination; it appears only when complete.
        spec: The transform.
        device: Where quantize and prune compute (``cpu``, ``cuda``); the others run on CPU.

    Returns:
        Metadata: ``library``, ``seconds`` (the transform, not the comparison after it),
        ``tensors_changed``, ``tensors_missing``, ``rel_change`` (relative Frobenius norm of
        the change over all tensors), ``dtype`` (``float32``, or ``source`` for none), ``label``
        and the family's own entries (torchao ``config``, ``head``, ``layers``, ``zero_share``).

    Raises:
        UnsupportedTransform: The transform cannot be done on this model/device/dtype.
        CheckpointError, ModelRefError, StoreError: ``src`` or ``out`` is bad input.
    """
    src, out = Path(src), Path(out)
    check_model_folder(src, allow_pickle=False, cache=None)
    check_out(out, flag="transform output")
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        meta = _write(src, tmp, spec, device)
    meta["seconds"] = round(time.perf_counter() - start, 3)
    same = {"tensors_changed": 0, "tensors_missing": 0, "rel_change": 0.0}
    meta.update(same if spec.family == "none" else compare(src, out))
    meta["label"] = transform_label(spec)
    return meta


def _write(src: Path, tmp: Path, spec: TransformSpec, device: str) -> dict[str, Any]:
    if spec.family in ("quantize", "prune"):
        from tasks.provenance import linear

        return linear.transform(src, tmp, spec, device=device)
    if spec.family == "none":
        atomic_copytree(src, tmp, hardlink=True)
        return {"library": "copy (hard links)", "dtype": "source"}
    return _derive(src, tmp, spec)


def _derive(src: Path, tmp: Path, spec: TransformSpec) -> dict[str, Any]:
    """noise and permute_rotate through HuRef's control builder (numpy, float32 output).

    noise: every stored tensor (embeddings, norms and biases too) becomes
    ``W + scale * std(W) * N(0, 1)``, std over the whole tensor, one numpy generator seeded with
    ``seed`` drawn in checkpoint order; a constant tensor (fresh all-ones norms) is unchanged and
    a tied head gets its embedding's noise (only one tensor is stored).
    """
    from tasks.huref.config import DeriveConfig
    from tasks.huref.controls import derive

    if spec.family == "permute_rotate":
        _check_rotatable(src)
    mode = "noise" if spec.family == "noise" else "permute_rotate"
    cfg = DeriveConfig(base=str(src), mode=mode, noise=spec.scale or 0.0, seed=spec.seed)
    try:
        derive(src, tmp, cfg)
    except ArchitectureError as exc:
        raise UnsupportedTransform(f"{transform_label(spec)}: {exc.problem}") from exc
    return {"library": f"numpy {np.__version__} (tasks.huref.controls)", "dtype": "float32"}


def _check_rotatable(src: Path) -> None:
    """Per-head rotations preserve the function only if q/k norms scale all dims alike."""
    reader = CheckpointReader(src)
    for key in reader.keys():
        if key.endswith(("q_norm.weight", "k_norm.weight")) and np.ptp(reader.read(key)) > 0:
            raise UnsupportedTransform(
                f"permute+rotate: {key} is not constant, so rotating the heads would change "
                "the model's function (q/k norms of a trained Gemma-3 or Qwen3)"
            )


def compare(src: Path, out: Path) -> dict[str, Any]:
    """How many stored tensors of ``src`` differ in ``out`` (or are missing there), and the
    relative Frobenius norm of the change over the tensors both hold (memory-mapped, torch:
    about 10x faster than numpy reads on a 135M model, and bfloat16 is native)."""
    import torch

    a, b = tensor_files(src), tensor_files(out)
    changed, missing, diff2, norm2 = 0, 0, 0.0, 0.0
    for key, file in a.items():
        if key not in b:
            missing += 1
            continue
        x, y = _tensor(file, key).float(), _tensor(b[key], key).float()
        if x.shape != y.shape:
            changed += 1
            continue
        changed += int(not torch.equal(x, y))
        diff2 += float(torch.linalg.vector_norm(y - x)) ** 2
        norm2 += float(torch.linalg.vector_norm(x)) ** 2
    rel = (diff2 / norm2) ** 0.5 if norm2 else 0.0
    return {"tensors_changed": changed, "tensors_missing": missing, "rel_change": rel}


def tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors shard holding it (headers only)."""
    return {k: f for f in sorted(Path(folder).glob("*.safetensors")) for k in read_header(f)}


def _tensor(file: Path, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        return fh.get_tensor(key)


def copy_tokenizer_files(src: Path, out: Path) -> None:
    """Copy ``src``'s tokenizer files into ``out`` (a model folder whose weights and config were
    written anew), never overwriting and skipping fprun's own manifests."""
    for f in sorted(Path(src).iterdir()):
        wanted = f.is_file() and f.name.endswith(TOKENIZER_SUFFIXES) and f.name not in _REWRITTEN
        if wanted and not f.name.startswith("fprun-") and not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
