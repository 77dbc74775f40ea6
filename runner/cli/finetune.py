"""``fprun finetune``: one user fine-tune as a one-step plan.

The step runs through :func:`runner.exec.driver.execute_plan` like any experiment, so its row gets
provenance, its artifact lives under ``ARTIFACTS/finetune/<step_id>/`` and a re-run is skipped;
``--out`` then receives the model folder as hard links (no extra disk) or, across filesystems,
a copy. Bad input (missing model, unknown or unreachable dataset, a file with missing fields or not
UTF-8, an occupied or unwritable ``--out``) is reported before any model is loaded, naming the
flag or ``--set`` typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    AllowPickle,
    Artifacts,
    Force,
    Local,
    Results,
    SetOpt,
    check_executor,
    check_out,
    config_from_flags,
    model_arg,
    place_out,
    run_single_step,
)


def finetune(
    model: Annotated[
        str,
        typer.Option(
            help="zoo name, model folder, fingerprint folder (its published model) or hub id"
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            help="alpaca | alpaca_gpt4 | dolly | sharegpt | ni (need "
            "the hub) | gsm_symbolic | reasoning_gym:<task> | "
            "mtbench_selfanswer | sharegpt_salvage | PATH.json(l)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="where the fine-tuned model folder goes (new)")],
    lora: Annotated[
        bool, typer.Option("--lora", help="LoRA (peft), merged into the model")
    ] = False,
    set_: SetOpt = None,
    allow_pickle: AllowPickle = False,
    force: Force = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Fine-tune a model on user data, as a user of a published model would."""
    # Over 60 lines on purpose: most lines are typer option declarations.
    import json

    from runner.plan import Step
    from tasks.data.user import check_data
    from tasks.finetune.config import FinetuneConfig, model_identity_of

    check_executor(local, address)
    flags = {"model": ("--model", model), "data": ("--data", data)}
    method = {"method": "lora" if lora else "full"}
    cfg = config_from_flags(FinetuneConfig, flags, set_, "fprun finetune", base=method)
    check_out(out, force=force)
    ref = model_arg(model, allow_pickle)
    cfg = cfg.model_copy(
        update={
            "model": ref,
            "model_identity": model_identity_of(ref),
            "data_hash": check_data(cfg),
        }
    )
    if cfg.data_hash:  # an absolute path: the step may run from another folder
        cfg = cfg.model_copy(update={"data": str(Path(cfg.data).expanduser().resolve())})
    step = Step(
        "finetune",
        "tasks.finetune.step:finetune_step",
        cfg.model_dump(mode="json", exclude_defaults=True),
        "train_run",
        executor="train",
        label=f"{cfg.method} {Path(data).name}",
    )
    folder = run_single_step(step, results, artifacts, local=local, address=address)
    place_out(folder, out)
    row = json.loads((folder / "finetune.json").read_text(encoding="utf-8"))
    extra = json.loads(row["extra"])
    typer.echo(
        f"{row['method']} fine-tune of {row['model_ref']} on {row['dataset']}: "
        f"{row['steps']} steps, loss first {extra['first_loss']:.4f} / last "
        f"{row['final_loss']:.4f} / mean {extra['mean_loss']:.4f}, "
        f"{row['train_seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB"
    )
    typer.echo(f"model: {out}  (step {step.step_id}; rows under {results})")
