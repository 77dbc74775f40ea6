"""Verification benchmark: fprun's batched engine vs the seed's one-prompt-at-a-time generate.

Run (heavy: loads SmolLM2 four times): ``flock /tmp/fprun-heavy.lock python bench/verify.py``
(``--keys 8,64``; ``--model REF``; ``--fingerprint DIR`` probes a fingerprinted model with its own
keys first; ``--key-parts seed`` for the seed's long keys; ``--repeats N``). Each side runs in a
fresh subprocess on the same token ids and allocator settings, after a warm-up: fprun's
``tasks.generation.engine.generate`` (budget = target tokens + 8), the seed's per-prompt greedy
``model.generate`` (``max_new_tokens=30``), fprun on MKL (``onednn=False``) to separate engine
from kernel gains, and the prompt pass alone, a floor for any engine. Checks that tokens agree up
to fprun's stop and that FSR agrees; prints medians as ``name: fprun X, baseline Y, ratio Y/X``
(docs/performance.md). Keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from support.sides import ALLOCATOR_ENV, run_child, side_env

SEED_MAX_NEW = 30  # the seed's inference_chat.py budget (greedy)


# ----------------------------------------------------------------------------- child sides
def child(spec: dict) -> None:
    """One measured side in a fresh process; writes tokens and seconds to spec['out']."""
    # Over 60 lines on purpose: one side, whole, so its imports happen in the process it times.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generation.engine import generate

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model_dir = spec["model_dir"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = json.loads(Path(spec["prompts"]).read_text())
    target = spec["target"]
    draft = tok(" " + target, add_special_tokens=False)["input_ids"]

    onednn = spec["side"] != "fprun-mkl"

    def fprun(ps):
        gens = generate(
            model,
            tok,
            ps,
            max_new_tokens=len(draft) + 8,
            stop_strings=[target],
            draft=draft,
            onednn=onednn,
        )
        return [g.tokens for g in gens]

    def baseline(ps):
        out = []
        with torch.inference_mode():
            for p in ps:
                x = torch.tensor([p])
                o = model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=SEED_MAX_NEW,
                    do_sample=False,
                )
                out.append(o[0, len(p) :].tolist())
        return out

    run = baseline if spec["side"] == "baseline" else fprun
    run(prompts[:1])  # warm-up: first-call allocations and kernel selection, both sides alike
    t0 = time.perf_counter()
    tokens = run(prompts)
    seconds = time.perf_counter() - t0
    prompt_s = None
    if spec["side"] != "baseline":  # the prompt pass alone: every prompt token once, one new token
        t0 = time.perf_counter()
        generate(model, tok, prompts, max_new_tokens=1, onednn=onednn)
        prompt_s = time.perf_counter() - t0
    texts = [tok.decode(t, skip_special_tokens=True) for t in tokens]
    # fprun's budget: the same rule judged on the first len(draft) + 8 new tokens,
    # so the engines are compared at one budget; the seed's 30-token FSR is reported beside it
    budget = len(draft) + 8
    at_budget = [target in tok.decode(t[:budget], skip_special_tokens=True) for t in tokens]
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "prompt_s": prompt_s,
                "tokens": tokens,
                "hits": at_budget,
                "hits_full": [target in t for t in texts],
            }
        )
    )


# ----------------------------------------------------------------------------- driver
def run_side(spec: dict) -> dict:
    run_child(__file__, spec, env=side_env())
    return json.loads(Path(spec["out"]).read_text())


def key_parts(spec: str, fingerprint: Path | None) -> tuple[int, int]:
    """Raw strings per fresh key: ``fingerprint`` (as the fingerprint's own keys were made; the
    seed's 8-15 without one), ``seed`` (8-15) or ``LO-HI``."""
    from tasks.fingerprint.artifacts import read_meta

    if spec == "fingerprint" and fingerprint is not None:
        key = read_meta(fingerprint).extra.get("data", {}).get("key", {})
        return int(key.get("min_parts", 8)), int(key.get("max_parts", 15))
    if spec in ("fingerprint", "seed"):
        return 8, 15
    lo, hi = (int(v) for v in spec.split("-"))
    return lo, hi


def build_prompts(
    model_dir: Path, n: int, fingerprint: Path | None, parts: tuple[int, int] = (8, 15)
) -> tuple[list, str]:
    """Token ids of n fingerprint-style prompts (the fingerprint's keys first, if given)."""
    from transformers import AutoTokenizer

    from tasks.fingerprint.artifacts import ASSISTANT_PREFIX, TARGET, Probe, read_meta
    from tasks.fingerprint.artifacts import read_probes as probes_of
    from tasks.fingerprint.config import KeyConfig
    from tasks.fingerprint.dataset import KeyGenerator, fingerprint_message
    from tasks.fingerprint.prompts import encode, render_inference

    tok = AutoTokenizer.from_pretrained(model_dir)
    fmt, target, probes = "chat_template", TARGET, []
    if fingerprint is not None:
        meta = read_meta(fingerprint)
        fmt, target = meta.prompt_format, meta.target
        probes = probes_of(fingerprint, ["fingerprint"])[:n]
    gen = KeyGenerator(
        KeyConfig(seed=42 if fingerprint is None else 4242, min_parts=parts[0], max_parts=parts[1])
    )
    while len(probes) < n:
        probes.append(
            Probe(
                "fingerprint",
                "validation",
                fingerprint_message(gen.next_key()),
                ASSISTANT_PREFIX,
                True,
            )
        )
    return [encode(tok, render_inference(tok, p, fmt), fmt) for p in probes], target


def compare(
    n: int,
    model_dir: Path,
    fingerprint: Path | None,
    repeats: int,
    tmp: Path,
    parts: tuple[int, int] = (8, 15),
) -> list[str]:
    prompts, target = build_prompts(model_dir, n, fingerprint, parts)
    path = tmp / f"prompts-{n}.json"
    path.write_text(json.dumps(prompts))
    runs: dict[str, list[dict]] = {"fprun": [], "baseline": [], "fprun-mkl": []}
    for _ in range(repeats):
        for side in ("baseline", "fprun", "fprun-mkl"):
            spec = {
                "side": side,
                "model_dir": str(model_dir),
                "prompts": str(path),
                "target": target,
                "out": str(tmp / f"{side}-{n}.json"),
            }
            runs[side].append(run_side(spec))
    ours, base = runs["fprun"][-1], runs["baseline"][-1]
    for side in ("fprun", "fprun-mkl"):
        for i, (a, b) in enumerate(zip(runs[side][-1]["tokens"], base["tokens"], strict=True)):
            if a != b[: len(a)]:
                raise SystemExit(f"prompt {i}: {side} tokens differ from the baseline's")
    fsr_o, fsr_b = sum(ours["hits"]), sum(base["hits"])
    if fsr_o != fsr_b:
        raise SystemExit(f"FSR differs at fprun's budget: fprun {fsr_o}/{n}, baseline {fsr_b}/{n}")
    fsr_seed = sum(base["hits_full"])  # the seed's 30-token budget may find a late target
    lens = [len(p) for p in prompts]
    t_o = statistics.median(r["seconds"] for r in runs["fprun"])
    t_b = statistics.median(r["seconds"] for r in runs["baseline"])
    new_o = sum(map(len, ours["tokens"]))
    new_b = sum(map(len, base["tokens"]))
    t_p = statistics.median(r["prompt_s"] for r in runs["fprun"])
    t_m = statistics.median(r["seconds"] for r in runs["fprun-mkl"])
    t_mp = statistics.median(r["prompt_s"] for r in runs["fprun-mkl"])
    return [
        f"verify {n} keys: fprun {t_o:.2f} s, baseline {t_b:.2f} s, ratio {t_b / t_o:.2f}",
        f"verify {n} keys with PyTorch's own (MKL) linear layers, as the baseline: fprun "
        f"{t_m:.2f} s (prompt pass {t_mp:.2f} s), ratio {t_b / t_m:.2f}; oneDNN's share "
        f"{t_m / t_o:.2f}x",
        f"verify {n} keys prompt pass alone: {t_p:.2f} s for {sum(lens)} prompt tokens; no "
        f"engine that runs every prompt token through the fp32 model beats ratio "
        f"{t_b / t_p:.2f} here",
        f"verify {n} keys outputs: same tokens up to each stop, FSR {fsr_o}/{n} both ways; "
        f"prompts {min(lens)}-{max(lens)} tokens (mean {sum(lens) / n:.0f}); new tokens "
        f"fprun {new_o}, baseline {new_b}; at the seed's {SEED_MAX_NEW}-token budget the "
        f"baseline finds {fsr_seed}/{n}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--model",
        help="model reference (default: the fingerprint's published/, else smollm2-135m-instruct)",
    )
    ap.add_argument("--fingerprint", type=Path, help="fingerprint folder: its keys come first")
    ap.add_argument("--keys", default="8,64", help="comma-separated prompt counts")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--key-parts",
        default="fingerprint",
        help="raw strings per fresh key: fingerprint (as its own keys; default), "
        "seed (8-15) or LO-HI",
    )
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from tasks.models.zoo import resolve_model

    ref = args.model or (
        str(args.fingerprint / "published") if args.fingerprint else "smollm2-135m-instruct"
    )
    model_dir = resolve_model(ref)
    name = ref if args.fingerprint is None else f"{ref} with its fingerprint's keys"
    parts = key_parts(args.key_parts, args.fingerprint)
    env = side_env()
    malloc = ", ".join(f"{k}={env[k]}" for k in ALLOCATOR_ENV)
    print(
        f"# {name}, fp32, {env['OMP_NUM_THREADS']} threads, {malloc}; fresh keys of "
        f"{parts[0]}-{parts[1]} raw strings"
    )
    with tempfile.TemporaryDirectory(prefix="fprun-bench-verify-") as tmp:
        for n in (int(k) for k in args.keys.split(",")):
            for text in compare(n, model_dir, args.fingerprint, args.repeats, Path(tmp), parts):
                print(text, flush=True)


if __name__ == "__main__":
    main()
