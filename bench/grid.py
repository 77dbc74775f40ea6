"""Merge-grid benchmark: fprun's actor-pool cells against the seed's way, on the same cells.

``python bench/grid.py`` takes the IF_SFT fingerprint and the arithmetic expert that ``fprun demo``
(``configs/demo_merge.yaml``) left in ``--results``/``--artifacts`` (default ``./fprun-*``), or
``--fingerprint ARTIFACTS/if_sft/<id> --expert ARTIFACTS/finetune/<id>``; without them it says so
and exits 0, so ``make bench`` runs on a fresh clone. fprun: a
one-actor pool runs ``tasks.merge.cell`` per cell (in-process merge into scratch, one load,
batched greedy evals, weights deleted). The seed's way, cell after cell: ``mergekit-yaml`` writes
the merge, a fresh process loads it and generates one prompt at a time, the folder is deleted.
Same prompts, seeds, budgets; counts asserted equal; prints ``name: fprun X, baseline Y, ratio
Y/X``, cells per minute and peak scratch per side (sampled every 0.2 s). No HuRef on either side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from support.sides import ratio_line, run_child, side_env

REFUSAL = {"prompts": "strongreject_small", "n": 16, "max_new_tokens": 24, "sampling": "greedy"}
MATH = {"task": "basic_arithmetic", "n": 16, "max_new_tokens": 16}
VERIFY = {"probe_sets": ["fingerprint", "unseen_keys"], "batch_size": 32}
CELLS = [  # (method, fingerprinted weight, density, seed)
    ("task_arithmetic", 0.3, None, None),
    ("task_arithmetic", 0.5, None, None),
    ("task_arithmetic", 0.7, None, None),
    ("ties", 0.5, 0.4, None),
    ("dare_ties", 0.5, 0.4, 0),
    ("dare_ties", 0.5, 0.4, 1),
    ("linear", 0.5, None, None),
    ("slerp", 0.5, None, None),
]


class DiskPeak:
    """Samples the bytes under a folder in a thread; ``peak`` is the largest seen."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            size = 0
            for f in list(self.folder.rglob("*")) if self.folder.exists() else []:
                try:
                    size += f.stat().st_size if f.is_file() else 0
                except OSError:
                    pass
            self.peak = max(self.peak, size)
            self._stop.wait(0.2)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cells() -> list[dict]:
    from tasks.merge.config import CellSpec, canonical_cell

    out = []
    for method, w, d, seed in CELLS[: ARGS.cells]:
        spec = CellSpec(
            method=method,
            weights=(w, round(1 - w, 6)),
            densities=(d, d) if d else None,
            seed=seed,
        )
        out.append(canonical_cell(spec))
    return out


def cell_config(cell: dict | None, base: str) -> dict:
    """The merge cell step's config for the bench: no HuRef, greedy evals."""
    return {
        "cell": cell,
        "base": base,
        "verify": VERIFY,
        "refusal": REFUSAL,
        "math": MATH,
        "eval_batch_size": 16,
    }


def fprun_side(spec: dict) -> dict:
    """All cells on a one-actor pool; seconds, counts per cell, peak scratch bytes."""
    import os

    import ray

    from runner.exec.actors import ActorPool
    from runner.exec.driver import StepSpec

    scratch = Path(spec["scratch"])
    os.environ["FPRUN_SCRATCH"] = str(scratch)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = ActorPool(1, num_cpus=2)
    inputs = {"fingerprint": spec["fingerprint"], "expert": spec["expert"]}
    specs = [
        StepSpec(
            f"c{i}",
            "merge_cell",
            "tasks.merge.cell:merge_cell_step",
            cell_config(c, spec["base"]),
            inputs,
            str(Path(spec["out"]) / f"c{i}"),
        )
        for i, c in enumerate(spec["cells"])
    ]
    with DiskPeak(scratch) as disk:
        outs = pool.map(specs)
    pool.close()
    ray.shutdown()
    return {
        "seconds": time.perf_counter() - t0,
        "peak": disk.peak,
        "counts": [counts(o.rows[0]) for o in outs],
    }


def counts(row: dict) -> list:
    """What both sides must agree on, per cell."""
    refusal = round(row["refusal_rate"] * row["refusal_n"])
    math = round(row["math_accuracy"] * row["math_n"])
    return [row["fsr_hits"], row["false_trigger_hits"], refusal, math]


def eval_side(spec: dict) -> dict:
    """The seed's evaluation in a fresh process: load, one prompt at a time, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.evals.config import MathTask, RefusalOptions
    from tasks.evals.math_accuracy import is_correct, make_problems
    from tasks.evals.refusal import is_refusal, load_prompts
    from tasks.fingerprint.artifacts import read_meta, read_probes
    from tasks.merge.config import CellConfig
    from tasks.merge.measure import PLAIN, verify_config
    from tasks.verify import fsr
    from tasks.verify.verifier import Verifier

    model_dir, fp = spec["model"], Path(spec["fingerprint"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def gen(ids: list[int], budget: int) -> str:
        x = torch.tensor([ids])
        with torch.inference_mode():
            o = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=budget, do_sample=False
            )
        return tok.decode(o[0, len(ids) :], skip_special_tokens=True)

    cfg = CellConfig.model_validate(cell_config(None, spec["base"]))
    v = Verifier(verify_config(cfg, PLAIN), read_meta(fp), model, tok, "merged")
    hits = {"fingerprint": 0, "unseen_keys": 0}
    for p in read_probes(fp):
        if p.probe_set in hits:
            hits[p.probe_set] += fsr.is_hit(gen(v.prompt_ids(p), v.max_new), v.targets)
    chat = lambda q: tok.apply_chat_template(  # noqa: E731
        [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
    )
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    ref = RefusalOptions(**REFUSAL)
    prompts, _ = load_prompts(ref.prompts, ref.n)
    refusals = sum(is_refusal(gen(ids(chat(q)), ref.max_new_tokens)) for q in prompts)
    task = MathTask(**MATH)
    right = sum(
        is_correct(gen(ids(chat(q)), task.max_new_tokens), gold, task.rule)
        for q, gold in make_problems(task)
    )
    return {"counts": [hits["fingerprint"], hits["unseen_keys"], refusals, right]}


def baseline_side(spec: dict) -> dict:
    """mergekit-yaml CLI, then a fresh evaluating process, cell after cell."""
    import yaml

    from tasks.merge.config import mergekit_config

    scratch = Path(spec["scratch"])
    exe = Path(sys.executable).with_name("mergekit-yaml")
    paths = {
        "fingerprinted": str(Path(spec["fingerprint"]) / "published"),
        "expert": spec["expert"],
        "base": spec["base_dir"],
    }
    out = []
    t0 = time.perf_counter()
    with DiskPeak(scratch) as disk:
        for i, cell in enumerate(spec["cells"]):
            yml = scratch.parent / f"cell{i}.yml"
            yml.write_text(yaml.safe_dump(mergekit_config(cell, paths)))
            merged = scratch / f"cell{i}"
            subprocess.run(
                [
                    str(exe),
                    str(yml),
                    str(merged),
                    "--random-seed",
                    str(cell["seed"] or 0),
                    "--device",
                    "cpu",
                ],
                check=True,
                capture_output=True,
            )
            res, _ = run_child(__file__, {**spec, "side": "eval", "model": str(merged)})
            out.append(json.loads(res.strip().splitlines()[-1])["counts"])
            shutil.rmtree(merged)
    return {"seconds": time.perf_counter() - t0, "peak": disk.peak, "counts": out}


def child(spec: dict) -> None:
    sides = {"fprun": fprun_side, "baseline": baseline_side, "eval": eval_side}
    print(json.dumps(sides[spec["side"]](spec)))


def demo_parents(results: str, artifacts: str) -> tuple[Path, Path] | None:
    """The fingerprint and expert folders of configs/demo_merge.yaml's plan, if both are done."""
    from runner.config import load_experiment
    from runner.exec.driver import artifact_dir
    from runner.experiments import mergeguard
    from runner.plan import PlanContext
    from runner.results.store import ResultStore

    config = Path(__file__).resolve().parents[1] / "configs" / "demo_merge.yaml"
    plan = mergeguard.plan(load_experiment(config), PlanContext(config, results, artifacts))
    store = ResultStore(results)
    ups = {s.kind: s for c in plan for s in c.inputs.values() if s.kind in ("if_sft", "finetune")}
    if len(ups) < 2 or not all(store.done(s.result_kind, s.step_id) for s in ups.values()):
        return None
    return artifact_dir(artifacts, ups["if_sft"]), artifact_dir(artifacts, ups["finetune"])


def main() -> None:
    from tasks.models.zoo import resolve_model

    work = Path(tempfile.mkdtemp(prefix="fprun-bench-grid-"))
    common = {
        "fingerprint": str(ARGS.fingerprint.resolve()),
        "expert": str(ARGS.expert.resolve()),
        "base": ARGS.base,
        "base_dir": str(resolve_model(ARGS.base)),
        "cells": cells(),
    }
    results = {}
    for side in ("fprun", "baseline"):
        spec = {
            **common,
            "side": side,
            "scratch": str(work / side / "scratch"),
            "out": str(work / side / "out"),
        }
        Path(spec["scratch"]).mkdir(parents=True)
        text, _ = run_child(__file__, spec, env=side_env())
        results[side] = json.loads(text.strip().splitlines()[-1])
    ours, base = results["fprun"], results["baseline"]
    assert ours["counts"] == base["counts"], (
        f"the sides disagree: {ours['counts']} vs {base['counts']}"
    )
    n = len(common["cells"])
    print(
        f"cells: {n}; counts per cell (keys hit, unseen keys hit, refusals, math right) equal: "
        f"{ours['counts']}"
    )
    print(
        ratio_line(
            f"grid of {n} cells, seconds per cell", ours["seconds"] / n, base["seconds"] / n, " s"
        )
    )
    print(
        f"cells per minute: fprun {60 * n / ours['seconds']:.2f}, "
        f"baseline {60 * n / base['seconds']:.2f}"
    )
    print(
        f"peak scratch: fprun {ours['peak'] / 1e9:.3f} GB (1 actor), "
        f"baseline {base['peak'] / 1e9:.3f} GB"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fingerprint", type=Path, help="IF_SFT fingerprint folder")
    parser.add_argument("--expert", type=Path, help="the other expert's model folder")
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--results", default="fprun-results", help="where fprun demo wrote rows")
    parser.add_argument("--artifacts", default="fprun-artifacts", help="and its artifacts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    if ARGS.child:
        child(json.loads(ARGS.child))
    else:
        if ARGS.fingerprint is None or ARGS.expert is None:
            found = demo_parents(ARGS.results, ARGS.artifacts)
            if found is None:
                print("skip: no fingerprint and expert yet; run `make demo` (or pass --fingerprint")
                print("      and --expert) and then this benchmark")
                sys.exit(0)
            ARGS.fingerprint, ARGS.expert = found
        main()
