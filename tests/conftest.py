"""Session fixtures shared by all tests.

Tests never touch the user's fprun cache: ``FPRUN_CACHE`` points at a session temp folder for
the whole run, and tiny models are built there (a few seconds, once per session). The one
exception is the real SmolLM2, whose conversion takes ~25 s: ``smollm2_path`` resolves it in the
user's normal cache, read before the override, and only integration tests use it.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY_HINT = "this test starts Ray: mark it @pytest.mark.ray (make test-fast deselects Ray tests)"

# Captured at import, before the session fixture below redirects FPRUN_CACHE.
USER_CACHE = Path(os.environ.get("FPRUN_CACHE") or "~/.cache/fprun").expanduser()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the shared Ray instance is a ``ray`` test, whether marked or not."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


class _NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(RAY_HINT)
        return None


def _refuse(*_args, **_kwargs):
    raise RuntimeError(RAY_HINT)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When Ray tests are deselected (``-m "not ray"``), a test that still starts Ray fails with
    a message that says how to mark it, so the fast tier stays free of Ray."""
    if not re.search(r"\bnot ray\b", session.config.getoption("markexpr") or ""):
        return
    if "ray" in sys.modules:  # imported during collection by a module that only needs its names
        sys.modules["ray"].init = _refuse
    else:
        sys.meta_path.insert(0, _NoRay())


@pytest.fixture(scope="session", autouse=True)
def fprun_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh fprun cache for the session (``$FPRUN_CACHE``), so tests cannot read stale or
    user-modified zoo entries and never write into ``~/.cache/fprun``."""
    path = tmp_path_factory.mktemp("fprun-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FPRUN_CACHE", str(path))
        yield path


def _tiny(ref: str) -> Path:
    from tasks.models.zoo import resolve_model

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
    from tasks.models.zoo import resolve_model

    return resolve_model("smollm2-135m-instruct", cache_dir=user_fprun_cache)


class CliResult:
    """What a CLI call gave: exit code, stdout, stderr, and both together (``output``)."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr
        self.output = stdout + stderr

    @property
    def error(self) -> str:
        """The one ``error:`` line on stderr (a resumed run logs its skipped steps before it)."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and self.stderr.rstrip().endswith(lines[0]), self.stderr
        return lines[0]


@pytest.fixture(scope="session")
def cli():
    """Call the ``fprun`` app in-process exactly as ``runner.cli.main`` does (``run_app``: a
    :class:`tasks.errors.FprunError` or usage error becomes exit code 2 and one ``error:`` line
    on stderr), capturing stdout and stderr."""
    import contextlib
    import io

    from runner.cli import app
    from runner.cli.common import run_app

    def invoke(args) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_app(app, [str(a) for a in args])
        return CliResult(code, out.getvalue(), err.getvalue())

    return invoke
