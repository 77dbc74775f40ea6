"""Session fixtures shared by all tests.

Tests never touch the user's fprun cache: ``FPRUN_CACHE`` points at a session temp folder for
the whole run, and tiny models are built there (a few seconds, once per session). The one
exception is the real SmolLM2, whose conversion takes ~25 s: ``smollm2_path`` resolves it in the
user's normal cache, read before the override, and only integration tests use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Captured at import, before the session fixture below redirects FPRUN_CACHE.
USER_CACHE = Path(os.environ.get("FPRUN_CACHE") or "~/.cache/fprun").expanduser()


@pytest.fixture(scope="session", autouse=True)
def fprun_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh fprun cache for the session (``$FPRUN_CACHE``), so tests cannot read stale or
    user-modified zoo entries and never write into ``~/.cache/fprun``."""
    path = tmp_path_factory.mktemp("fprun-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FPRUN_CACHE", str(path))
        yield path


def _tiny(ref: str) -> Path:
    from tasks.zoo import resolve_model

    return resolve_model(ref)


@pytest.fixture(scope="session")
def tiny_llama(fprun_cache: Path) -> Path:
    """Tiny Llama with GQA (4 query / 2 KV heads), seed 0: the usual "base" model."""
    return _tiny("tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_unrelated(fprun_cache: Path) -> Path:
    """Same architecture and tokenizer as ``tiny_llama``, another seed: a different lineage."""
    return _tiny("tiny-llama:seed=1")


@pytest.fixture(scope="session")
def tiny_neox(fprun_cache: Path) -> Path:
    """Tiny GPT-NeoX (Pythia architecture)."""
    return _tiny("tiny-neox")


@pytest.fixture(scope="session")
def tiny_gpt2(fprun_cache: Path) -> Path:
    """Tiny GPT-2."""
    return _tiny("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_qwen2(fprun_cache: Path) -> Path:
    """Tiny Qwen2 (GQA with qkv biases)."""
    return _tiny("tiny-qwen2")


@pytest.fixture(scope="session")
def user_fprun_cache() -> Path:
    """The user's real fprun cache, for integration tests of the slow real-model conversions."""
    return USER_CACHE


@pytest.fixture(scope="session")
def smollm2_path(user_fprun_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct (fp32 safetensors) from the user's cache.

    Only for ``@pytest.mark.integration`` tests: the first use converts the packaged GGUF
    (~25 s, ~1.6 GB peak RSS); later sessions reuse the cached folder.
    """
    from tasks.zoo import resolve_model

    return resolve_model("smollm2-135m-instruct", cache_dir=user_fprun_cache)
