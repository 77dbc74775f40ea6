"""What a merge cell measures on one model: HuRef to the parents, fingerprint, utility.

Each function takes what is already there (an invariants folder, a loaded model) and returns row
columns, so the cell loads the merged model once for the plain verification, refusal and math.
The IF_adapter conditions are the assemblies ``tasks.fingerprint.adapter.verify`` builds (the
merged model as the suspect), each from its folder, exactly as an adapter verification does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.fingerprint.artifacts import FingerprintMeta, Probe
from tasks.merge.config import CellConfig
from tasks.verify.config import VerifyConfig
from tasks.verify.stats import proportion_ci

PLAIN = "tuned_publish"  # the merged model queried as it is
ADAPTER_CONDITIONS = ("tuned_direct", "tuned_w_adapter")  # IF_adapter: the paper's FSR_post
SUFFIX = {"fingerprinted": "a", "expert": "b", "base": "base"}  # row columns ics_a, pcs_base...


def huref_columns(
    cfg: CellConfig, model_dir: Path, scratch: Path, parents: dict[str, Path]
) -> dict[str, Any]:
    """ICS (and PCS) of ``model_dir`` to each parent; ``parents`` maps role -> (invariants folder,
    model folder). The model's invariants are extracted into ``scratch`` with the base's tokens."""
    from tasks.huref.config import ExtractConfig, TokenConfig
    from tasks.huref.extract import extract
    from tasks.huref.similarity import ics_matrix, pcs_matrix

    roles = [r for r in ("base", "fingerprinted", "expert") if r in parents]
    tokens = TokenConfig(strategy="file", file=str(parents["base"][0] / "huref.json"))
    ex = ExtractConfig(k=cfg.huref.k, n_layers=cfg.huref.n_layers, tokens=tokens, device="cpu")
    inv = scratch / "huref"
    extract(model_dir, inv, ex, model_ref="merged")
    ics, _ = ics_matrix([inv, *(parents[r][0] for r in roles)])
    out: dict[str, Any] = {f"ics_{SUFFIX[r]}": float(ics[0, i + 1]) for i, r in enumerate(roles)}
    if cfg.huref.pcs:
        pcs, _ = pcs_matrix([model_dir, *(parents[r][1] for r in roles)])
        out.update({f"pcs_{SUFFIX[r]}": _finite(pcs[0, i + 1]) for i, r in enumerate(roles)})
    return out


def _finite(x: float) -> float | None:
    return None if x != x else float(x)


def verify_config(cfg: CellConfig, condition: str) -> VerifyConfig:
    """The verification of one condition with the cell's options (greedy only)."""
    return VerifyConfig(
        condition=condition,
        use_adapter=condition in ADAPTER_CONDITIONS,
        **cfg.verify.model_dump(),
    )


def verify_loaded(
    cfg: CellConfig, meta: FingerprintMeta, probes: list[Probe], model: Any, tok: Any, ref: str
) -> tuple[list[dict], list[Any]]:
    """Greedy rows of the plain condition on the already-loaded model."""
    from tasks.verify.verifier import Verifier

    return Verifier(verify_config(cfg, PLAIN), meta, model, tok, ref).greedy(probes)


def verify_adapter(
    cfg: CellConfig, meta: FingerprintMeta, probes: list[Probe], model_dir: Path, fp_dir: Path
) -> tuple[list[dict], list[Any]]:
    """Greedy rows of the IF_adapter conditions with the merged model as the suspect."""
    from tasks.fingerprint.adapter.verify import load_adapter_model
    from tasks.verify.verifier import Verifier

    rows, records = [], []
    for condition in ADAPTER_CONDITIONS:
        vc = verify_config(cfg, condition)
        model, tok = load_adapter_model(
            model_dir, fingerprint_dir=fp_dir, condition=condition, dtype=vc.dtype, device=vc.device
        )
        more, recs = Verifier(vc, meta, model, tok, str(model_dir)).greedy(probes)
        rows, records = rows + more, records + recs
        del model
    return rows, records


def fsr_columns(rows: list[dict], primary: str) -> dict[str, Any]:
    """FSR of ``primary`` with its count and interval, false triggers on unseen keys and normal
    prompts, and every condition x probe set as JSON (hits, total)."""
    table: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        table.setdefault(r["condition"], {})[r["probe_set"]] = [r["n_hit"], r["n_total"]]
    out: dict[str, Any] = {"condition": primary, "verification": json.dumps(table, sort_keys=True)}
    for rate, prefix, probe_set in (
        ("fsr", "fsr", "fingerprint"),
        ("false_trigger_rate", "false_trigger", "unseen_keys"),
    ):
        hit, total = table.get(primary, {}).get(probe_set, (None, None))
        if total:
            low, high = proportion_ci(hit, total)
            out.update(
                {
                    rate: hit / total,
                    f"{prefix}_hits": hit,
                    f"{prefix}_total": total,
                    f"{prefix}_ci_low": low,
                    f"{prefix}_ci_high": high,
                }
            )
    normal = table.get(primary, {}).get("normal")
    if normal and normal[1]:
        out["normal_triggers"] = normal[0] / normal[1]
    return out


def utility_columns(cfg: CellConfig, model: Any, tok: Any, out_dir: Path) -> dict[str, Any]:
    """Refusal rate (and its straight-apostrophe variant) and math accuracy on the loaded model."""
    out: dict[str, Any] = {"datasets": []}
    if cfg.refusal is not None:
        from tasks.evals.refusal import run_refusal

        r = run_refusal(
            model,
            tok,
            cfg.refusal,
            batch_size=cfg.eval_batch_size,
            seed=cfg.eval_seed,
            out_dir=out_dir,
        )[0]
        low, high = proportion_ci(r["k"], r["n"])
        straight = r["extra"]["k_straight_apostrophes"]
        out.update(
            refusal_rate=r["k"] / r["n"],
            refusal_n=r["n"],
            refusal_ci_low=low,
            refusal_ci_high=high,
            refusal_rate_straight=straight / r["n"],
        )
        out["datasets"].append(r["dataset"])
    if cfg.math is not None:
        from tasks.evals.math_accuracy import run_math

        m = run_math(
            model,
            tok,
            cfg.math,
            batch_size=cfg.eval_batch_size,
            seed=cfg.eval_seed,
            out_dir=out_dir,
        )
        low, high = proportion_ci(m["k"], m["n"])
        out.update(
            math_task=m["task"],
            math_accuracy=m["k"] / m["n"],
            math_n=m["n"],
            math_ci_low=low,
            math_ci_high=high,
        )
        out["datasets"].append(m["dataset"])
    return out
