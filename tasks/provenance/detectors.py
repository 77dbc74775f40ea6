"""The detectors of a provenance pair, each run on one suspect model folder.

Black-box: the owner's IF fingerprint queried greedily (FSR on the keys, false triggers on unseen
keys) and in seeded sampled runs (mean FSR and the exact binomial p-value). An IF_adapter owner
queries the suspect's embedding through its private adapter (``tuned_w_adapter``), as its
verification does. White-box: HuRef ICS to the owner's invariants (the owner's token set, or the
suspect's own when its vocabulary lacks those tokens) and PCS where the architectures match. A
detector that cannot run on a suspect (no chat template, another architecture, a vocabulary
smaller than K) returns its reason instead of a score, so the pair is kept, never dropped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from tasks.errors import FprunError
from tasks.fingerprint.artifacts import FingerprintMeta, Probe
from tasks.provenance.config import PairConfig
from tasks.verify.config import VerifyConfig

PROBES = ["fingerprint", "unseen_keys"]
P_FLOOR = 1e-300  # -log10 of a p-value that underflows stays finite


def huref_scores(
    cfg: PairConfig, model_dir: Path, owner_inv: Path, owner_model: Path, scratch: Path
) -> dict[str, Any]:
    """ICS (x100) and PCS (x100) of ``model_dir`` to the owner, with ``na`` reasons."""
    from tasks.huref.config import ExtractConfig, TokenConfig
    from tasks.huref.extract import extract
    from tasks.huref.similarity import ics_matrix, pcs_matrix

    out: dict[str, Any] = {"na": {}}
    t0 = time.perf_counter()
    own = TokenConfig(strategy="file", file=str(owner_inv / "huref.json"))
    inv = scratch / "huref"
    ex = ExtractConfig(k=cfg.huref.k, n_layers=cfg.huref.n_layers, tokens=own, device=cfg.device)
    try:
        try:
            extract(model_dir, inv, ex, model_ref=cfg.suspect.label)
            out["tokens_match"] = True
        except FprunError:  # the owner's tokens are not all in this vocabulary: use its own
            ex = ex.model_copy(update={"tokens": TokenConfig(strategy="vocab_rank")})
            extract(model_dir, inv, ex, model_ref=cfg.suspect.label)
            out["tokens_match"] = False
        ics, _ = ics_matrix([inv, owner_inv], mixed_tokens=not out["tokens_match"])
        out["ics"] = float(ics[0, 1])
    except Exception as exc:  # noqa: BLE001 - a detector that cannot run is a reason, not a crash
        out["na"]["huref_ics"] = _reason(exc)
    if cfg.huref.pcs:
        try:
            pcs, _ = pcs_matrix([model_dir, owner_model])
            value = float(pcs[0, 1])
            if math.isnan(value):
                out["na"]["huref_pcs"] = "another architecture: parameter shapes differ"
            else:
                out["pcs"] = value
        except Exception as exc:  # noqa: BLE001
            out["na"]["huref_pcs"] = _reason(exc)
    else:
        out["na"]["huref_pcs"] = "huref.pcs is off"
    out["huref_seconds"] = time.perf_counter() - t0
    return out


def if_scores(
    cfg: PairConfig, model_dir: Path, fp_dir: Path, meta: FingerprintMeta, probes: list[Probe]
) -> tuple[dict[str, Any], list[Any]]:
    """Greedy FSR and false triggers, sampled mean FSR and p-value; the generation records."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"na": {}}
    try:
        model, tok, condition = _load(cfg, model_dir, fp_dir, meta)
        from tasks.verify.verifier import Verifier

        vc = VerifyConfig(
            **{**cfg.verify.model_dump(), "probe_sets": PROBES},
            condition=condition,
            sampling=cfg.sampling,
        )
        verifier = Verifier(vc, meta, model, tok, cfg.suspect.label)
        rows, records = verifier.greedy(probes)
        if cfg.sampling.runs:
            more, recs = verifier.sampled(probes, rows)
            rows, records = rows + more, records + recs
        del model
    except Exception as exc:  # noqa: BLE001 - e.g. no chat template, a model transformers lacks
        why = _reason(exc)
        out["na"] = {"if_fsr": why, "if_sampled": why}
        out["verify_seconds"] = time.perf_counter() - t0
        return out, []
    out.update(_if_columns(rows, cfg.sampling.runs))
    if not cfg.sampling.runs:
        out["na"]["if_sampled"] = "sampling.runs is 0"
    out["condition"] = condition
    out["verify_seconds"] = time.perf_counter() - t0
    return out, records


def _load(cfg: PairConfig, model_dir: Path, fp_dir: Path, meta: FingerprintMeta):
    if meta.method == "if_adapter":
        from tasks.fingerprint.adapter.verify import load_adapter_model

        model, tok = load_adapter_model(
            model_dir,
            fingerprint_dir=fp_dir,
            condition="tuned_w_adapter",
            dtype=cfg.verify.dtype,
            device=cfg.device,
        )
        return model, tok, "tuned_w_adapter"
    from tasks.verify.step import load_model_for_verification

    model, tok = load_model_for_verification(
        model_dir, fingerprint_dir=fp_dir, dtype=cfg.verify.dtype, device=cfg.device
    )
    return model, tok, "tuned_publish"


def _if_columns(rows: list[dict], runs: int) -> dict[str, Any]:
    by_set = {r["probe_set"]: r for r in rows if r.get("sample_idx") is None}
    out: dict[str, Any] = {}
    if "fingerprint" in by_set:
        r = by_set["fingerprint"]
        out.update(if_fsr=r["fsr"], if_fsr_hits=r["n_hit"], if_fsr_total=r["n_total"])
    if "unseen_keys" in by_set:
        r = by_set["unseen_keys"]
        out.update(
            false_trigger_rate=r["fsr"],
            false_trigger_hits=r["n_hit"],
            false_trigger_total=r["n_total"],
        )
    out["datasets"] = sorted({r["dataset"] for r in rows if r.get("dataset")})
    agg = by_set.get("fingerprint:sampled")
    if runs and agg is not None:
        p = agg.get("p_binomial")
        out.update(
            if_sampled_fsr=agg.get("mean_fsr"),
            if_p_binomial=p,
            if_sampled=None if p is None else max(0.0, -math.log10(max(p, P_FLOOR))),
        )
    unseen = by_set.get("unseen_keys:sampled")
    if runs and unseen is not None:
        out["sampled_false_trigger_rate"] = unseen["fsr"]
    return out


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


__all__ = ["huref_scores", "if_scores"]
