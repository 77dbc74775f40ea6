"""Running one side of a benchmark in a fresh process, and printing ratios the same way.

Each side runs as ``python SCRIPT --child JSON`` so start-up, imports and peak memory are its own;
peak RSS is read from ``/proc/self/status`` after the kernel's high-water mark is reset, so it is
counted above the process's RSS right after its imports.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# glibc malloc reuses freed memory instead of faulting in fresh pages for each large tensor
# (docs/performance.md); both settings or neither. The environment overrides them.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def side_env(**extra: str) -> dict[str, str]:
    """A side's environment: 2 BLAS threads and the allocator settings, unless set already."""
    return {**ALLOCATOR_ENV, "OMP_NUM_THREADS": "2", **extra, **os.environ}


def run_child(script: str, spec: dict, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run ``script --child spec`` in a fresh interpreter; (its stdout, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env or side_env(),
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{spec.get('side', script)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout, wall


def proc_status() -> dict[str, int]:
    """This process's current and peak resident memory (``VmRSS``, ``VmHWM``) in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, val = line.split(":")
            out[key] = int(val.split()[0]) // 1024
    return out


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def median(runs: list[dict], key: str) -> float:
    """Median of ``key`` over repeated runs."""
    return statistics.median(r[key] for r in runs)


def ratio_line(name: str, ours: float, base: float, unit: str, who: str = "fprun") -> str:
    """``name: fprun X, baseline Y, ratio Y/X``: the one line format of every benchmark."""
    return f"{name}: {who} {ours:.3f}{unit}, baseline {base:.3f}{unit}, ratio {base / ours:.2f}"
