"""Quantize round trip and pruning of a model's linear layers (torchao, torch.nn.utils.prune).

Both load the owner's model with transformers in float32, change the weight of every linear layer
of the transformer blocks (``nn.Linear``, and GPT-2's ``Conv1D``, which stores the matrix
transposed) and save float32 safetensors beside the source's tokenizer files. Embeddings and the
output head are kept: in a tied model (SmolLM2) the head is the embedding, and keeping an untied
head too gives every architecture one rule (GPTQ/AWQ-style recipes keep it in full precision).
Quantization is weight-only and symmetric, per output channel or per group of inputs, then
dequantized: the saved weights are exactly what an int8/int4 deployment multiplies with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.models.cache import save_model_on_any_rank
from tasks.provenance.transforms import (
    TransformSpec,
    UnsupportedTransform,
    copy_tokenizer_files,
    transform_label,
)


def transform(src: Path, out: Path, spec: TransformSpec, *, device: str = "cpu") -> dict:
    """Quantize or prune the linear layers of the model in ``src``; write it to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval().to(device)
    layers = linear_layers(model)
    with torch.no_grad():
        meta = quantize(layers, spec) if spec.family == "quantize" else prune(layers, spec)
    _save(model.to("cpu"), src, out, spec)
    return {**meta, "dtype": "float32", "layers": len(layers), "head": head_note(model)}


def linear_layers(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer except the output head, in module order."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | Conv1D) and m is not head
    ]


def head_note(model: Any) -> str:
    """What happened to the output head, for the metadata."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        return "none"
    return "kept (tied to the embedding)" if head.weight is emb.weight else "kept (untied)"


def ao_config(spec: TransformSpec) -> Any:
    """torchao's config for ``spec``: IntxWeightOnlyConfig for both widths.

    Checked with torchao 0.18.0 and torch 2.13.0 on CPU: ``Int4WeightOnlyConfig`` needs the
    ``mslk`` GPU kernels (ImportError), and ``Int8WeightOnlyConfig`` has no per-channel
    ``PerAxis`` (its PerRow gives the same numbers as this). One class keeps 8 and 4 bits the same
    scheme: symmetric, scale = absmax / (2^(bits-1) - 0.5), zero point 0.
    """
    import torch

    _torchao()
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    granularity = PerGroup(spec.group_size) if spec.group_size else PerAxis(0)
    return IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{spec.bits}"), granularity=granularity
    )


def quantize(layers: list[tuple[str, Any]], spec: TransformSpec) -> dict[str, Any]:
    """Replace each layer's weight by its quantize-dequantize round trip."""
    torchao = _torchao()
    cfg = ao_config(spec)
    for name, module in layers:
        w = _matrix(module)
        if spec.group_size and w.shape[1] % spec.group_size:
            raise UnsupportedTransform(
                f"{transform_label(spec)}: {name} has {w.shape[1]} inputs, not a multiple of "
                f"the group size {spec.group_size}"
            )
        _set_matrix(module, roundtrip(w, cfg))
    return {"library": f"torchao {torchao.__version__}", "config": repr(cfg)}


def roundtrip(w: Any, cfg: Any) -> Any:
    """Quantize a (out, in) matrix with torchao and dequantize it back to its dtype."""
    import torch
    from torchao.quantization import quantize_

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    try:
        with torch.no_grad():
            lin.weight.copy_(w)
            quantize_(lin, cfg)
            return lin.weight.dequantize().to(w.dtype)
    except (AssertionError, NotImplementedError, RuntimeError, ImportError, ValueError) as exc:
        raise UnsupportedTransform(
            f"torchao {cfg} on {w.device}/{w.dtype}: {type(exc).__name__}: {exc}"
        ) from exc


def prune(layers: list[tuple[str, Any]], spec: TransformSpec) -> dict[str, Any]:
    """Unstructured pruning made permanent; random masks follow ``torch.manual_seed(seed)``
    (on the device the model is on, so a GPU mask differs from a CPU one)."""
    import torch
    from torch.nn.utils import prune as tprune

    method = tprune.l1_unstructured if spec.method == "magnitude" else tprune.random_unstructured
    torch.manual_seed(spec.seed)
    zeros = total = 0
    for _, module in layers:
        method(module, "weight", amount=spec.sparsity)
        tprune.remove(module, "weight")
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return {"library": f"torch {torch.__version__}", "zero_share": zeros / max(total, 1)}


def _matrix(module: Any) -> Any:
    """The weight as (out, in): Conv1D stores (in, out)."""
    return module.weight.T if type(module).__name__ == "Conv1D" else module.weight


def _set_matrix(module: Any, w: Any) -> None:
    import torch

    w = w.T if type(module).__name__ == "Conv1D" else w
    module.weight = torch.nn.Parameter(w.contiguous(), requires_grad=False)


def _torchao() -> Any:
    """Import torchao quietly: 0.18's wheel warns that its CUDA/py3.10 extensions do not load,
    which is expected on CPU (the round trip uses plain torch ops)."""
    import logging

    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torchao
    except ImportError as exc:
        raise UnsupportedTransform(f"quantize needs torchao (pip install torchao): {exc}") from exc
    finally:
        log.setLevel(level)
    return torchao


def _save(model: Any, src: Path, out: Path, spec: TransformSpec) -> None:
    """save_pretrained, the source's tokenizer files, and the recipe in config.json."""
    save_model_on_any_rank(model, out)
    copy_tokenizer_files(src, out)
    config = json.loads((out / "config.json").read_text())
    config["fprun_transform"] = {"base": str(src), **spec.model_dump()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
