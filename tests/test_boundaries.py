"""The architecture's one rule (docs/architecture.md) and the instant-CLI promise, enforced.

Both checks run in a fresh interpreter so modules imported by other tests cannot hide a violation.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def __init__(self, names): self.names = names
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"blocked import of {name}")
            return None
    """
)


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_tasks_never_import_ray_or_runner():
    code = BLOCKER + textwrap.dedent(
        """
        sys.meta_path.insert(0, Block({"ray", "runner"}))
        import pkgutil, importlib, tasks
        mods = [m.name for m in pkgutil.walk_packages(tasks.__path__, "tasks.")]
        for name in mods:
            importlib.import_module(name)
        print(len(mods))
        """
    )
    out = run_py(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 3


def test_cli_help_and_validate_import_no_torch_or_ray():
    code = BLOCKER + textwrap.dedent(
        """
        sys.meta_path.insert(0, Block({"torch", "ray", "transformers"}))
        import runner.cli, runner.config, runner.experiments, importlib
        for mod in runner.experiments.KINDS.values():
            importlib.import_module(mod)
        print("ok")
        """
    )
    out = run_py(code)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_every_config_validates():
    from runner.config import load_experiment

    paths = sorted((ROOT / "configs").rglob("*.yaml"))
    experiment_paths = [p for p in paths if "kind" in (yaml.safe_load(p.read_text()) or {})]
    for p in experiment_paths:
        load_experiment(p)
    assert all(p.read_text().startswith("#") for p in paths), "each YAML opens with a comment"


def _private_uses(path: Path) -> list[str]:
    """``from first_party import _name`` and ``module._name`` on an imported first-party module."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            first_party = node.module.split(".")[0] in ("tasks", "runner")
            for a in node.names:
                if first_party and a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}: from {node.module} import {a.name}")
                if first_party:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("tasks", "runner"):
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    """A private name is private to its module: shared helpers are made public where they live."""
    paths = [p for d in ("tasks", "runner", "bench") for p in (ROOT / d).rglob("*.py")]
    bad = [line for p in paths for line in _private_uses(p)]
    assert not bad, "\n".join(bad)
