"""Which torch device a step runs on: one rule for every step (``auto``, ``cpu``, ``cuda[:N]``).

``auto`` looks for the NVIDIA driver before importing torch, so a CPU-only process that never
needed torch (HuRef extraction in numpy) does not pay its import to learn there is no GPU.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from tasks.errors import ConfigError

DEVICES = "auto, cpu, cuda or cuda:N"


def check_device_name(spec: str) -> str:
    """A config's device name, checked when the config is read (not when the step runs)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise ValueError(f"unknown device {spec!r}; use {DEVICES}")
    return spec


DeviceName = Annotated[str, AfterValidator(check_device_name)]


def nvidia_present() -> bool:
    """Whether an NVIDIA driver is visible (checked without importing torch)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidiactl").exists()


def pick_device(spec: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cpu``/``cuda[:N]`` checked.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for where none is usable.
    """
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        if not nvidia_present():
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cuda(:\d+)?", spec):
        raise ConfigError(f"device {spec!r} is unknown", f"use {DEVICES}")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r} was asked for but CUDA is not available here",
            "use device auto or cpu",
        )
    return spec
