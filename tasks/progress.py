"""Progress inside long steps: a plain callback the runner renders, and quiet third-party bars.

A step function that accepts ``progress`` gets a callable ``progress(what, done, total)`` (e.g.
``("training steps", 40, 160)``) and calls it as work advances: training steps through an HF
``TrainerCallback``, generation per decoded batch, HuRef per layer. ``runner/`` decides how it is
shown (a rich bar, plain lines, a file a Ray driver polls), so ``tasks/`` never imports it.
Third-party bars (transformers' loading bars, datasets' map/save bars, hub downloads) are turned
off, because they interleave with fprun's own display and flood Ray job logs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

ProgressFn = Callable[[str, int, "int | None"], None]

# Read by datasets, huggingface_hub and tqdm at import (tqdm reads TQDM_* as defaults).
QUIET_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TQDM_DISABLE": "1",
}


def no_progress(what: str, done: int, total: int | None) -> None:
    """The progress callback of a step run without a display."""


def progress_of(hooks: Mapping[str, Any]) -> ProgressFn:
    """The ``progress`` hook among a step's hooks, or a no-op."""
    return hooks.get("progress") or no_progress


def quiet_third_party() -> None:
    """Silence third-party progress bars in this process (env for later imports, and the
    libraries' switches for those already imported)."""
    from tasks.models.device import nvidia_present

    # torchao (imported by transformers whenever it is installed) warns about the CUDA kernels a
    # CPU build cannot load; nothing fprun uses needs them
    logging.getLogger("torchao").setLevel(logging.ERROR)
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if not nvidia_present():  # DeepSpeed's own choice then, minus its warning on stdout
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def trainer_callback(progress: ProgressFn, what: str = "training steps") -> Any:
    """An HF ``TrainerCallback`` reporting optimizer steps done of ``max_steps``."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            progress(what, 0, state.max_steps or None)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            progress(what, state.global_step, state.max_steps or None)

    return _Progress()
