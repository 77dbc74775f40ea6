"""HuRef benchmarks: streaming extraction vs the seed's full load, and the N-model ICS matrix.

Run: ``python bench/huref.py`` (``--only smollm2,bf16,1b,matrix``; ``--repeats N``). Each side runs
in a fresh subprocess on the same inputs: fprun's extraction (selective safetensors reads, streamed
invariants) against ``from_pretrained`` + whole-tensor formulas (invariants must match bit for
bit), a full-load variant that copies every weight into memory, and a plain safetensors read;
fprun's ``ics_matrix`` against reloading both files of every pair. Prints wall time, time without
imports, load time and peak RSS above the post-import level, medians over ``--repeats``, as
``name: fprun X, baseline Y, ratio Y/X``; docs/huref.md explains how imports are counted. The 1B
synthetic Llama (random fp32, two shards) is generated once into ``$FPRUN_CACHE/bench/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from support.sides import median, proc_status, ratio_line, reset_peak, run_child, side_env
from support.synthetic import synthetic_1b

K_EXTRACT = 1024


# ----------------------------------------------------------------------------- child sides
def child(args: dict) -> None:
    """One measured side, in a fresh process; prints a JSON line of its figures."""
    # Over 60 lines on purpose: one side, whole, so its imports happen in the process it times.
    t0 = time.perf_counter()
    side = args["side"]
    if side in ("baseline", "baseline_full"):
        import importlib

        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM

        mt = json.loads((Path(args["model"]) / "config.json").read_text())["model_type"]
        t_mod = time.perf_counter()  # from_pretrained would import this itself, lazily
        importlib.import_module(f"transformers.models.{mt}.modeling_{mt}")
        lazy_import_s = time.perf_counter() - t_mod
    if side == "plain":  # the issue's reference: whole tensors through safetensors' own reader
        import torch  # noqa: F401
        from safetensors import safe_open
    if side.startswith("matrix"):
        import numpy as np  # noqa: F401

        if side == "matrix_baseline":
            import torch  # noqa: F401
            from safetensors.torch import load_file
    from tasks.huref import arch as archs
    from tasks.huref.invariants import StateDictSource, compute_invariants
    from tasks.huref.safetensors_io import CheckpointReader
    from tasks.huref.similarity import ics_matrix
    from tasks.huref.store import InvariantsWriter

    t_imp = time.perf_counter()
    rss0 = proc_status()["VmRSS"]
    reset = reset_peak()
    result, load_s = None, None
    if side == "plain":
        folder = Path(args["model"])
        ids = json.loads(Path(args["ids"]).read_text())
        t_load = time.perf_counter()
        source = StateDictSource(_plain_read(folder, safe_open), folder)
        load_s = time.perf_counter() - t_load
        result = compute_invariants(source, archs.detect(folder, source), ids)
    elif side in ("fprun", "baseline", "baseline_full"):
        folder = Path(args["model"])
        ids = json.loads(Path(args["ids"]).read_text())
        if side == "fprun":  # as extract() runs it: each matrix streamed to the tensor file
            reader = CheckpointReader(folder)
            arch = archs.detect(folder, reader)
            with InvariantsWriter(args["out"], len(ids), 2) as writer:
                compute_invariants(reader, arch, ids, sink=writer.write)
                writer.finish(
                    {
                        "model_ref": str(folder),
                        "arch": arch.describe(),
                        "k": len(ids),
                        "n_layers": 2,
                        "token_strategy": "bench",
                        "token_set_hash": "-",
                        "dtype": "float32",
                        "hidden_size": arch.hidden_size,
                    }
                )
            load_s = reader.read_seconds
        else:
            t_load = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            if side == "baseline_full":  # every weight copied into the process, as the seed's
                for t in [*model.parameters(), *model.buffers()]:  # transformers 4.x did
                    t.data = t.data.clone()
            source = StateDictSource(model.state_dict(), folder)
            load_s = time.perf_counter() - t_load
            result = compute_invariants(source, archs.detect(folder, source), ids)
    elif side == "matrix_fprun":
        result, _ = ics_matrix(args["paths"], chunk_mb=args["chunk_mb"])
    elif side == "matrix_baseline":
        result = _pairwise_reload(args["paths"], load_file)
    t_end = time.perf_counter()
    st = proc_status()
    if result is not None:
        __import__("numpy").save(args["out"], result)
    print(
        json.dumps(
            {
                "imports_s": t_imp - t0,
                "work_s": t_end - t_imp,
                "load_s": load_s,
                "lazy_import_s": locals().get("lazy_import_s", 0.0),
                "rss_after_imports": rss0,
                "peak_above": st["VmHWM"] - rss0 if reset else None,
                "peak_total": st["VmHWM"],
            }
        )
    )


def _plain_read(folder: Path, safe_open) -> dict:
    """A plain streaming read: the embedding and the last two layers' tensors, whole, per shard."""
    files = sorted(folder.glob("*.safetensors"))
    keys = []
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            keys += fh.keys()
    n = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("model.layers."))
    wanted = ("model.embed_tokens.", f"model.layers.{n - 2}.", f"model.layers.{n - 1}.")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith(wanted)})
    return out


def _pairwise_reload(paths: list[str], load_file) -> object:
    """The seed's Invariant_terms_Cos_Sim.py: every pair loads both tensors and standardises."""
    import numpy as np
    import torch

    n = len(paths)
    out = np.eye(n) * 100.0
    for i in range(n):
        for j in range(i + 1, n):
            a = load_file(os.path.join(paths[i], "invariants.safetensors"))["invariants"]
            b = load_file(os.path.join(paths[j], "invariants.safetensors"))["invariants"]
            za = torch.cat([((m - m.mean()) / m.std()).flatten() for m in a.double()])
            zb = torch.cat([((m - m.mean()) / m.std()).flatten() for m in b.double()])
            out[i, j] = out[j, i] = float(100 * torch.dot(za, zb) / (za.norm() * zb.norm()))
            del a, b, za, zb
    return out


# ----------------------------------------------------------------------------- driver
def run_side(args: dict) -> dict:
    stdout, wall = run_child(__file__, args, env=side_env())
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_s": wall}


def compare_sides(
    name: str,
    make_args,
    repeats: int,
    check,
    baselines: tuple[str, ...] = ("baseline",),
    reference: str | None = None,
) -> list[str]:
    """Alternate fprun, each baseline and the reference ``repeats`` times; check; format lines.

    ``reference`` (the plain read) is the approach the issue measured its targets against; its
    lines against the seed's way show which way of counting reproduces the issue's figures.
    """
    # Over 60 lines on purpose: prints every figure of one comparison in a fixed order.
    sides = (*baselines, *([reference] if reference else []), "fprun")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    outs = {}
    for _ in range(repeats):
        for side in sides:
            args = make_args(side)
            runs[side].append(run_side(args))
            outs[side] = args["out"]
    lines = []
    for who in ("fprun", *([reference] if reference else [])):
        ours = runs[who]
        peak_o = max(r["peak_above"] or r["peak_total"] for r in ours)
        for b in baselines if who == "fprun" else baselines[:1]:
            note = check(outs[who], outs[b])
            base = runs[b]
            label = (name if b == "baseline" else f"{name} vs full load") + (
                "" if who == "fprun" else f" [{who} read, the issue's reference]"
            )
            peak_b = max(r["peak_above"] or r["peak_total"] for r in base)
            lines += [
                ratio_line(
                    f"{label} wall per fresh process",
                    median(ours, "wall_s"),
                    median(base, "wall_s"),
                    " s",
                    who,
                ),
                ratio_line(
                    f"{label} time excluding imports",
                    median(ours, "work_s"),
                    median(base, "work_s"),
                    " s",
                    who,
                ),
                *(
                    [
                        ratio_line(
                            f"{label} time excluding top-level imports (from_pretrained's own "
                            "import of the modeling code counted as load)",
                            median(ours, "work_s"),
                            statistics.median(r["work_s"] + r["lazy_import_s"] for r in base),
                            " s",
                            who,
                        ),
                        ratio_line(
                            f"{label} read/load phase only",
                            median(ours, "load_s"),
                            median(base, "load_s"),
                            " s",
                            who,
                        ),
                    ]
                    if ours[0]["load_s"] is not None
                    else []
                ),
                ratio_line(f"{label} peak RSS above imports", peak_o, peak_b, " MiB", who)
                + f"  ({who} = {100 * peak_o / peak_b:.1f}% of baseline)",
                f"{label} outputs: {note}",
            ]
    return lines


def _load(path: str):
    """A side's invariants: an .npy array, or fprun's invariants folder (read as fprun reads it)."""
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path)
    from tasks.huref.store import load_invariants

    return load_invariants(path)[0].numpy()


def _bitwise(a: str, b: str) -> str:
    import numpy as np

    x, y = _load(a), _load(b)
    if x.shape != y.shape or not np.array_equal(x, y):
        raise SystemExit(f"invariants differ: max |diff| {np.abs(x - y).max()}")
    return f"bitwise identical, shape {x.shape}"


def bench_extract(name: str, model: Path, repeats: int, tmp: Path) -> list[str]:
    from tasks.huref.config import TokenConfig
    from tasks.huref.tokens import select_tokens

    ids = tmp / f"{name}-ids.json"
    ids.write_text(json.dumps(list(select_tokens(model, TokenConfig(), K_EXTRACT).ids)))
    for f in model.glob("*.safetensors"):  # warm the page cache for both sides alike
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass

    def make(side: str) -> dict:
        return {
            "side": side,
            "model": str(model),
            "ids": str(ids),
            "out": str(tmp / f"{name}-{side}" if side == "fprun" else tmp / f"{name}-{side}.npy"),
        }

    return compare_sides(
        f"{name} K={K_EXTRACT}",
        make,
        repeats,
        _bitwise,
        baselines=("baseline", "baseline_full"),
        reference="plain",
    )


def bench_matrix(repeats: int, tmp: Path, n_models: int = 8, k: int = 4096) -> list[str]:
    """N synthetic invariant files (a base, noisy offspring, unrelated) at the seed's K."""
    import numpy as np

    from tasks.huref.store import save_invariants

    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, k, k), dtype=np.float32)
    paths = []
    for j in range(n_models):
        fresh = rng.standard_normal((6, k, k), dtype=np.float32)
        t = base + (0.1 * j) * fresh if j < n_models - 2 else fresh  # last two: unrelated
        meta = {
            "model_ref": f"m{j}",
            "arch": "synthetic",
            "k": k,
            "n_layers": 2,
            "token_strategy": "vocab_rank",
            "token_set_hash": "synthetic",
            "dtype": "float32",
            "hidden_size": 0,
        }
        paths.append(str(save_invariants(tmp / f"inv{j}", t, meta)))
        del t
    del base

    def make(side: str) -> dict:
        return {
            "side": f"matrix_{side}",
            "paths": paths,
            "chunk_mb": 256,
            "out": str(tmp / f"matrix-{side}.npy"),
        }

    def check(a: str, b: str) -> str:
        x, y = np.load(a), np.load(b)
        diff = float(np.abs(x - y).max())
        if diff > 1e-6:
            raise SystemExit(f"ICS matrices differ by {diff}")
        return (
            f"max |ICS difference| {diff:.1e} (float64 sums in another order), {n_models}x"
            f"{n_models} at K={k}"
        )

    return compare_sides(f"ICS matrix N={n_models}", make, repeats, check)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="smollm2,bf16,1b,matrix")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from tasks.models.cache import cache_root
    from tasks.models.zoo import resolve_model

    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="fprun-bench-huref-") as t:
        tmp = Path(t)
        jobs = {
            "smollm2": lambda: bench_extract(
                "smollm2 fp32", resolve_model("smollm2-135m-instruct"), args.repeats, tmp
            ),
            "bf16": lambda: bench_extract(
                "smollm2 bf16", resolve_model("smollm2-135m-instruct@bf16"), args.repeats, tmp
            ),
            "1b": lambda: bench_extract(
                "llama-1b synthetic fp32", synthetic_1b(cache_root()), max(1, args.repeats - 1), tmp
            ),
            "matrix": lambda: bench_matrix(max(1, args.repeats - 1), tmp),
        }
        for name, job in jobs.items():
            if name in only:
                print("\n".join(job()), flush=True)


if __name__ == "__main__":
    main()
