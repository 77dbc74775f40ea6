"""``fprun finetune``: one user fine-tune as a one-step plan (METHODS.md section 2.6, step 2).

The step runs through :func:`runner.execute.execute_plan` like any experiment, so its row gets
provenance, its artifact lives under ``ARTIFACTS/finetune/<step_id>/`` and a re-run is skipped;
``--out`` then receives the model folder as hard links (no extra disk) or, across filesystems,
a copy. Bad input (missing model, unknown or unreachable dataset, a file with missing fields, an
occupied ``--out``) is reported before any model is loaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli import app
from runner.cli.options import DEFAULT_ARTIFACTS, DEFAULT_RESULTS, Artifacts, Results, SetOpt


def run_single_step(step: Any, results: str, artifacts: str) -> Path:
    """Execute a one-step plan locally; return the step's artifact folder (exit 1 on failure)."""
    from runner.execute import LocalBackend, artifact_dir, execute_plan
    from runner.plan import Plan
    from runner.results import ResultStore

    summary = execute_plan(Plan([step]), ResultStore(results), artifacts, LocalBackend(),
                           log=lambda line: typer.echo(line, err=True))
    if not summary.ok:
        typer.echo(f"step {step.step_id} failed: {summary.failed.get(step.step_id, 'blocked')}",
                   err=True)
        raise typer.Exit(1)
    return artifact_dir(artifacts, step)


def check_out(out: Path) -> None:
    """``--out`` must be new (or an empty folder), so nothing of the user's is overwritten."""
    from tasks.errors import StoreError

    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise StoreError(f"--out {out} already exists and is not empty", "pass a new folder")


def link_tree(src: Path, out: Path) -> None:
    """Hard-link ``src`` into ``out`` (a copy where links cannot cross filesystems)."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if out.exists():
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link_or_copy)
    os.rename(tmp, out)


@app.command()
def finetune(
    model: Annotated[str, typer.Option(help="zoo name, model folder, fingerprint folder (its "
                                       "published model) or hub id")],
    data: Annotated[str, typer.Option(help="alpaca | alpaca_gpt4 | dolly | sharegpt | ni (need "
                                      "the hub) | gsm_symbolic | reasoning_gym:<task> | "
                                      "mtbench_selfanswer | sharegpt_salvage | PATH.json(l)")],
    out: Annotated[Path, typer.Option(help="where the fine-tuned model folder goes (new)")],
    lora: Annotated[bool, typer.Option("--lora", help="LoRA (peft), merged into the model")]
    = False,
    set_: SetOpt = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Fine-tune a model on user data, as a user of a published model would."""
    import json

    from runner.config import apply_overrides, validate_as
    from runner.plan import Step
    from tasks.finetune_config import FinetuneConfig, model_identity_of
    from tasks.user_data import check_data

    check_out(out)
    raw = apply_overrides({"model": model, "data": data, "method": "lora" if lora else "full"},
                          set_ or [])
    cfg = validate_as(FinetuneConfig, raw, "fprun finetune")
    cfg = cfg.model_copy(update={"model_identity": model_identity_of(model),
                                 "data_hash": check_data(cfg)})
    if cfg.data_hash:  # an absolute path: the step may run from another folder
        cfg = cfg.model_copy(update={"data": str(Path(cfg.data).expanduser().resolve())})
    step = Step("finetune", "tasks.finetune:finetune_step",
                cfg.model_dump(mode="json", exclude_defaults=True), "train_run",
                executor="train", label=f"{cfg.method} {Path(data).name}")
    folder = run_single_step(step, results, artifacts)
    link_tree(folder, out)
    row = json.loads((folder / "finetune.json").read_text(encoding="utf-8"))
    extra = json.loads(row["extra"])
    typer.echo(f"{row['method']} fine-tune of {row['model_ref']} on {row['dataset']}: "
               f"{row['steps']} steps, loss first {extra['first_loss']:.4f} / last "
               f"{row['final_loss']:.4f} / mean {extra['mean_loss']:.4f}, "
               f"{row['train_seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB")
    typer.echo(f"model: {out}  (step {step.step_id}; rows under {results})")
