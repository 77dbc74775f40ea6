"""Time and disk estimates of a plan's steps for ``--dry-run``, each saying how it was made.

Sources, first that applies (docs/cli.md):

1. ``Step.estimate``, set by the experiment that planned the step (e.g. merge cells);
2. a step already in ``--results``: what it took (its rows' timestamps) and what it keeps (its
   artifact folder's size);
3. time: the median duration of up to 5 earlier steps of the same kind in ``--results``
   (a different model or size in that history makes it rough, which the ``how`` column says);
   disk: the output's known size: a model-writing step keeps about its input model's weights,
   HuRef invariants are ``3 x layers x K x K`` float32; else the median size earlier steps kept;
4. nothing: ``-``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from runner.plan import Estimate, Plan, Step
from runner.results.store import ResultStore

MODEL_WRITERS = {"if_sft", "if_adapter", "finetune", "huref_derive"}
HISTORY = 5
GB = 1e9


def estimate_plan(plan: Plan, store: ResultStore, artifacts: str) -> dict[str, Estimate]:
    """Step ID -> its :class:`Estimate` (fields None where nothing is known)."""
    root = Path(artifacts).expanduser()
    history: dict[str, tuple[list[float], list[float]]] = {}
    out: dict[str, Estimate] = {}
    for step in plan:  # dependency order: an input's estimate is known before its users'
        if step.estimate is not None:
            out[step.step_id] = step.estimate
        elif store.done(step.result_kind, step.step_id):
            out[step.step_id] = _actual(step, store, root)
        else:
            if step.kind not in history:
                history[step.kind] = _history(step, store, root)
            out[step.step_id] = _guess(step, history[step.kind], out)
    return out


def _actual(step: Step, store: ResultStore, root: Path) -> Estimate:
    seconds = _seconds(store, step.result_kind, step.step_id)
    kept = _size_gb(root / step.kind / step.step_id)
    return Estimate(seconds=seconds, disk_gb=kept, kept_gb=kept, how="done: as it ran")


def _guess(
    step: Step, hist: tuple[list[float], list[float]], known: dict[str, Estimate]
) -> Estimate:
    times, sizes = hist
    seconds = statistics.median(times) if times else None
    disk, disk_how = _disk(step, known)
    if disk is None and sizes:
        disk, disk_how = statistics.median(sizes), "disk as earlier ones"
    how = [f"time: median of {len(times)} earlier {step.kind}"] if times else []
    how += [disk_how] if disk_how else []
    return Estimate(seconds=seconds, disk_gb=disk, kept_gb=disk, how="; ".join(how))


def _disk(step: Step, known: dict[str, Estimate]) -> tuple[float | None, str]:
    """The output size where the step kind's output is known from its inputs."""
    cfg = step.config
    if step.kind == "huref_extract":
        k, layers = int(cfg.get("k", 4096)), int(cfg.get("n_layers", 2))
        return 3 * layers * k * k * 4 / GB, "disk: 3 x layers x K^2 x 4 B"
    if step.kind not in MODEL_WRITERS:
        return None, ""
    upstream = step.inputs.get("model")
    if upstream is not None:
        est = known.get(upstream.step_id)
        size = est.kept_gb if est is not None else None
    else:
        ref = cfg.get("model") or cfg.get("base")
        size = _weights_gb(str(ref)) if ref else None
    return (size, "disk: the input model's weights") if size is not None else (None, "")


def _weights_gb(ref: str) -> float | None:
    from tasks.models.zoo import cached_folder

    folder = cached_folder(ref)
    if folder is None:
        return None
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / GB


def _history(step: Step, store: ResultStore, root: Path) -> tuple[list[float], list[float]]:
    """Durations and kept sizes of the latest earlier steps of ``step.kind`` that finished."""
    folder = root / step.kind
    if not folder.is_dir():
        return [], []
    done = [
        d
        for d in folder.iterdir()
        if d.is_dir() and d.name != step.step_id and store.done(step.result_kind, d.name)
    ]
    done = sorted(done, key=lambda d: d.stat().st_mtime)[-HISTORY:]
    times = [t for d in done if (t := _seconds(store, step.result_kind, d.name)) is not None]
    return times, [_size_gb(d) for d in done]


def _seconds(store: ResultStore, kind: str, step_id: str) -> float | None:
    table = store.read(kind, [step_id])
    if not table.num_rows:
        return None
    start, end = table.column("started_at").to_pylist(), table.column("finished_at").to_pylist()
    return (max(end) - min(start)).total_seconds()


def _size_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / GB
