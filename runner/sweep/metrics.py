"""What a sweep trial reports to Tune, computed from the rows of the steps it has finished.

Pure functions of step records, so the trial, the tests and a re-computation agree. IF_adapter
(:func:`trial_metrics`): ``fsr_pre`` / ``fsr_post`` (keys on ``publish_w_adapter`` /
``tuned_w_adapter``), ``false_trigger_pre`` / ``_post`` (the same on unseen random keys),
``utility_delta`` (> 0 is worse: ppl_pub / ppl_van - 1, or the accuracy drop), ``acc_delta``,
``fsr`` / ``utility`` tables, ``fp_*`` / ``ft_*`` training figures. IF_SFT
(:func:`sft_trial_metrics`, the key-capacity sweep): ``fsr`` and ``false_trigger`` of
``publish``, the same utility, ``n_keys``, training and verification seconds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from statistics import fmean
from typing import Any


def metrics_for(kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A trial's metrics: the kind's own ``sweep_metrics`` when it has one (e.g. mergeguard's
    means over merged cells), else the IF protocol's (:func:`trial_metrics`)."""
    from runner.experiments import get_kind

    own = getattr(get_kind(kind), "sweep_metrics", None)
    if own is None:
        return trial_metrics(records)
    return {**own(records), "datasets_json": datasets_json(records)}


def datasets_json(records: list[dict[str, Any]]) -> str:
    """Every dataset the records' rows name, as a JSON string (Tune's TensorBoard logger warns
    on list-valued metrics)."""
    return json.dumps(
        sorted(
            {
                d
                for rec in records
                for r in rec["rows"]
                for d in (r.get("datasets") or [r.get("dataset")])
                if d
            }
        )
    )


def trial_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """All metrics the finished steps allow (later phases add FSR_post)."""
    out: dict[str, Any] = {}
    fsr = _fsr_table(_rows(records, "verification"))
    out["fsr"] = {c: {p: fmean(v) for p, v in sets.items()} for c, sets in fsr.items()}
    for name, cond, probe in (
        ("fsr_pre", "publish_w_adapter", "fingerprint"),
        ("false_trigger_pre", "publish_w_adapter", "unseen_keys"),
        ("fsr_post", "tuned_w_adapter", "fingerprint"),
        ("false_trigger_post", "tuned_w_adapter", "unseen_keys"),
    ):
        if fsr.get(cond, {}).get(probe):
            out[name] = fmean(fsr[cond][probe])
    out.update(_training(records))
    out.update(_utility(records))
    out["datasets_json"] = datasets_json(records)
    return out


def sft_trial_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """An IF_SFT trial's metrics (the key-capacity sweep): ``fsr`` / ``false_trigger`` (keys /
    unseen keys on ``publish``), ``fsr_post`` / ``false_trigger_post`` (``tuned_publish``),
    ``utility_delta``, ``n_keys``, ``n_negative_keys``, ``fp_seconds`` (the trainer's wall time),
    ``fp_epochs`` (passes over the rows) and ``verify_seconds`` (the ``publish`` verification
    step's wall time: model load and every probe set through the batched engine)."""
    fsr = _fsr_table(_rows(records, "verification"))
    out: dict[str, Any] = {
        "fsr_table": {c: {p: fmean(v) for p, v in sets.items()} for c, sets in fsr.items()}
    }
    for name, cond, probe in (
        ("fsr", "publish", "fingerprint"),
        ("false_trigger", "publish", "unseen_keys"),
        ("fsr_post", "tuned_publish", "fingerprint"),
        ("false_trigger_post", "tuned_publish", "unseen_keys"),
    ):
        if fsr.get(cond, {}).get(probe):
            out[name] = fmean(fsr[cond][probe])
    out.update(_training(records))
    out.update(_utility(records))
    fp = [r for r in _rows(records, "train_run") if r.get("purpose") == "fingerprint"]
    if fp:
        counts = json.loads(fp[0].get("extra") or "{}").get("counts", {})
        out["n_keys"] = counts.get("fingerprint")
        out["n_negative_keys"] = counts.get("negative_keys", 0)
        out["fp_seconds"] = out.pop("fp_train_seconds", None)
        out["fp_epochs"] = fp[0].get("epochs")
    seconds = [step_seconds(r) for r in records if _is_condition(r, "publish")]
    if seconds:
        out["verify_seconds"] = sum(seconds)
    return {k: v for k, v in out.items() if v is not None}


def step_seconds(record: dict[str, Any]) -> float:
    """A step record's wall time (``finished_at - started_at``: provenance, never an ID)."""
    from datetime import datetime

    start, end = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def _is_condition(record: dict[str, Any], condition: str) -> bool:
    return record["result_kind"] == "verification" and any(
        r.get("condition") == condition for r in record["rows"]
    )


def _rows(records: list[dict[str, Any]], result_kind: str) -> list[dict[str, Any]]:
    return [r for rec in records if rec["result_kind"] == result_kind for r in rec["rows"]]


def _fsr_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Greedy FSRs by condition and probe set (several per condition after several fine-tunes)."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("sample_idx") is None and r.get("fsr") is not None and ":" not in r["probe_set"]:
            table[r["condition"]][r["probe_set"]].append(float(r["fsr"]))
    return table


def _training(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, purpose in (("fp", "fingerprint"), ("ft", "finetune")):
        rows = [r for r in _rows(records, "train_run") if r.get("purpose") == purpose]
        if not rows:
            continue
        out[f"{prefix}_final_loss"] = (
            fmean(r["final_loss"] for r in rows if r.get("final_loss") is not None)
            if any(r.get("final_loss") is not None for r in rows)
            else None
        )
        out[f"{prefix}_steps"] = sum(int(r.get("steps") or 0) for r in rows)
        out[f"{prefix}_train_seconds"] = sum(float(r.get("train_seconds") or 0) for r in rows)
        if purpose == "fingerprint":
            extra = json.loads(rows[0].get("extra") or "{}")
            out["fp_first_loss"] = extra.get("first_loss")
            out["fingerprint_id"] = rows[0].get("fingerprint_id")
    return {k: v for k, v in out.items() if v is not None}


def _utility(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Published vs vanilla on each eval metric (vanilla rows have no ``model_step_id``)."""
    by: dict[str, dict[str, float]] = defaultdict(dict)
    for r in _rows(records, "eval"):
        if r.get("value") is None:
            continue
        which = "publish" if r.get("model_step_id") else "vanilla"
        by[f"{r['task']}/{r['metric']}"][which] = float(r["value"])
    utility = {k: {**v, "delta": v["publish"] - v["vanilla"]} for k, v in by.items() if len(v) == 2}
    out: dict[str, Any] = {"utility": utility} if utility else {}
    ppl = next((v for k, v in sorted(utility.items()) if k.endswith("/perplexity")), None)
    acc = next((v for k, v in sorted(utility.items()) if k.endswith("/accuracy")), None)
    if acc is not None:
        out["acc_delta"] = acc["delta"]
    if ppl is not None and ppl["vanilla"] > 0:
        out["utility_delta"] = ppl["publish"] / ppl["vanilla"] - 1.0
    elif acc is not None:
        out["utility_delta"] = -acc["delta"]
    return out
