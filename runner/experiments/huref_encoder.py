"""``kind: huref_encoder``: train HuRef's CNN encoder on synthetic triplets.

One step, ``tasks.huref.encoder.train:train_encoder``, writing one ``train_run`` row (purpose
``encoder``, method ``huref_cnn``) and the encoder as safetensors + JSON. The training keys sit at
the top level of the YAML (``tokens``, ``encoder.kernel``, ``epochs`` ...), so
``fprun huref train-encoder --set epochs=3`` and ``fprun run`` read the same keys. Torch-free.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from runner.plan import Resources, Step
from tasks.huref.encoder.config import EncoderTrainConfig

RESULT_KINDS = ("train_run",)
STEP_KIND = "huref_encoder"
STEP_FN = "tasks.huref.encoder.train:train_encoder"


class Config(EncoderTrainConfig):
    """The training config plus the experiment's kind and scheduling (not part of the step ID)."""

    kind: Literal["huref_encoder"]
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved for the training step")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved (set 1 with device=auto/cuda)")


def step_config(cfg: Config) -> dict:
    """The step's config: the training keys only (scheduling must not change the step ID)."""
    return cfg.model_dump(mode="json", exclude={"kind", "num_cpus", "num_gpus"})


def plan(cfg: Config, ctx) -> list[Step]:
    res = Resources(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, use_gpu=cfg.num_gpus > 0)
    return [
        Step(
            STEP_KIND,
            STEP_FN,
            step_config(cfg),
            "train_run",
            resources=res,
            label=f"huref encoder K={cfg.tokens}",
        )
    ]


def summarize(cfg: Config, store, ctx) -> str:
    """Held-out cosines before training, of the BN-calibrated control, and after training."""
    step = plan(cfg, ctx)[0]
    table = store.read("train_run", [step.step_id])
    if table.num_rows == 0:
        return "huref encoder: no result row"
    row = table.to_pylist()[0]
    extra = json.loads(row["extra"] or "{}")
    lines = [
        f"huref encoder  K={cfg.tokens}  anchor={cfg.anchor}  steps={row['steps']}  "
        f"final loss {row['final_loss']:.4f}  artifact {row['artifact']}"
    ]
    for tag in ("held_out_before", "held_out_control", "held_out_after"):
        s = extra.get(tag) or {}
        if s:
            lines.append(
                f"  {tag[9:]:<7} cos(anchor,pos) {s['cos_ap']:.3f}  "
                f"cos(anchor,neg) {s['cos_an']:+.3f}  |cos(anchor,neg)| "
                f"{s['abs_cos_an']:.3f}  pos>neg {s['frac_ap_gt_an']:.0%}"
            )
    return "\n".join(lines)
