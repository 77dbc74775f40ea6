"""``fprun verify``: query one model with a fingerprint's probes; rows land in the result store.

A one-step plan run through the same driver as ``fprun run`` (in-process unless ``--address``),
so the rows carry the same provenance and a repeated call with the same model, fingerprint and
settings is skipped. Every input (model, fingerprint, adapter, condition, probe sets, ranges) is
checked before the step starts. External folders enter the step ID through their *content*
(``input_digest``), so a model retrained in place is verified again, not read from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli.common import (
    DEFAULT_ARTIFACTS,
    DEFAULT_RESULTS,
    Address,
    AllowPickle,
    Artifacts,
    Local,
    Results,
    SetOpt,
)
from tasks.errors import ConfigError, FingerprintError

VERIFY_FN = "tasks.verify.step:verify_step"
ADAPTER_CONDITIONS = ("publish_w_adapter", "tuned_w_adapter", "tuned_direct", "vanilla_w_adapter")
# Conditions without an adapter: a suspect (the default), or the IF_SFT protocol's own names.
PLAIN_CONDITIONS = ("suspect", "publish", "vanilla", "tuned_publish")


def verify(
    model: Annotated[str, typer.Option(help="suspect model: local folder, zoo name or hub id")],
    fingerprint: Annotated[Path, typer.Option(help="fingerprint folder (with private/)")],
    adapter: Annotated[Path | None, typer.Option(help="private F-Adapter (IF_adapter)")] = None,
    publisher: Annotated[str | None, typer.Option(help="publisher's model (IF_adapter)")] = None,
    samples: Annotated[int, typer.Option(help="seeded sampled runs, >= 0 (t-test, binomial)")] = 0,
    temperature: Annotated[float, typer.Option(help="temperature of sampled runs, > 0")] = 0.7,
    condition: Annotated[
        str,
        typer.Option(
            help=f"condition name on the rows: {', '.join(PLAIN_CONDITIONS)}; with --adapter, "
            "the assembly (default tuned_w_adapter)"
        ),
    ] = "suspect",
    set_: SetOpt = None,
    allow_pickle: AllowPickle = False,
    local: Local = False,
    address: Address = None,
    results: Results = DEFAULT_RESULTS,
    artifacts: Artifacts = DEFAULT_ARTIFACTS,
) -> None:
    """Verify MODEL against a fingerprint: FSR per probe set, CIs and p-values."""
    from runner.cli.common import check_executor, model_arg, run_single_step
    from runner.plan import Step
    from runner.results.store import ResultStore

    check_executor(local, address)
    model = model_arg(model, allow_pickle)
    opts = {"samples": samples, "temperature": temperature, "overrides": set_ or []}
    if adapter is not None or publisher is not None:
        step = adapter_step(model, fingerprint, adapter, publisher, condition=condition, **opts)
    else:
        if condition not in PLAIN_CONDITIONS:
            raise ConfigError(
                f"--condition {condition} is not a condition",
                f"use one of {', '.join(PLAIN_CONDITIONS)}, or pass --adapter for "
                f"{', '.join(ADAPTER_CONDITIONS)}",
            )
        cfg = build_config(model, fingerprint, condition=condition, **opts)
        step = Step("verify", VERIFY_FN, cfg, "verification", label=f"verify:{condition}")
    run_single_step(step, results, artifacts, local=local, address=address)
    typer.echo(format_rows(ResultStore(results).read("verification", [step.step_id]).to_pylist()))


def adapter_step(
    model: str,
    fingerprint: Path,
    adapter: Path | None,
    publisher: str | None,
    *,
    condition: str,
    **verify: Any,
) -> Any:
    """The ``verify_adapter`` step of one IF_adapter condition.

    MODEL is the suspect, wrapped as ``condition`` says (``tuned_w_adapter`` by default: the
    suspect's embedding, the publisher's other weights and the private adapter); for
    ``publish_w_adapter`` it is the published model. The adapter defaults to the fingerprint's
    ``private/adapter/``. Adapter and publisher enter the step ID through their content.
    """
    from runner.experiments.if_adapter import ADAPTER_VERIFY_FN
    from runner.plan import Step
    from tasks.fingerprint.adapter.config import AdapterVerifyConfig
    from tasks.fingerprint.adapter.module import load_adapter
    from tasks.fingerprint.adapter.verify import model_folder
    from tasks.fingerprint.artifacts import private_dir
    from tasks.models.zoo import model_identity

    cond = "tuned_w_adapter" if condition == "suspect" else condition
    if cond not in ADAPTER_CONDITIONS:
        raise ConfigError(
            f"--condition {condition} is not an adapter condition",
            f"use one of {', '.join(ADAPTER_CONDITIONS)} with --adapter",
        )
    if publisher is not None and cond not in ("tuned_w_adapter", "vanilla_w_adapter"):
        raise ConfigError(
            f"--publisher does not apply to {cond}",
            "pass it only with tuned_w_adapter or vanilla_w_adapter",
        )
    folder = (adapter or private_dir(fingerprint) / "adapter").expanduser().resolve()
    folder = folder.parent if folder.name == "adapter.safetensors" else folder
    load_adapter(folder)  # pickles, missing or corrupt files: one line before anything runs
    pub = (
        str(Path(publisher).expanduser().resolve())
        if publisher and Path(publisher).expanduser().exists()
        else publisher
    )
    extra = f"{_file_hash(folder / 'adapter.safetensors')}:" + (
        model_identity(model_folder(publisher)) if publisher else ""
    )
    cfg = build_config(
        model, fingerprint, condition=cond, use_adapter=True, extra_digest=extra, **verify
    )
    ac = AdapterVerifyConfig(
        condition=cond,
        verify=cfg,
        adapter=str(folder),
        publisher=pub,
        suspect=None if cond == "publish_w_adapter" else cfg["model"],
    )
    return Step(
        "verify_adapter", ADAPTER_VERIFY_FN, ac.model_dump(), "verification", label=f"verify:{cond}"
    )


def build_config(
    model: str,
    fingerprint: Path,
    *,
    samples: int,
    temperature: float,
    condition: str,
    overrides: list[str],
    use_adapter: bool = False,
    extra_digest: str = "",
) -> dict:
    """Check the inputs (exit 2 before any step runs) and build the step's VerifyConfig dict."""
    from runner.cli.common import flag_origins
    from runner.config import apply_overrides
    from tasks.config import validate
    from tasks.fingerprint.artifacts import private_dir, read_meta
    from tasks.models.zoo import model_identity, resolve_model
    from tasks.verify.config import VerifyConfig
    from tasks.verify.step import check_probe_sets

    fp = fingerprint.expanduser().resolve()
    if not private_dir(fp).is_dir():
        raise FingerprintError(
            f"{fingerprint} has no private/ folder, so it holds no keys or probes",
            "pass the folder written by 'fprun fingerprint'",
        )
    meta = read_meta(fp)
    probes = private_dir(fp) / "probes.jsonl"
    if not probes.is_file():
        raise FingerprintError(
            f"{fingerprint} holds no private/probes.jsonl",
            "pass the folder written by 'fprun fingerprint'",
        )
    model_dir = resolve_model(model)
    local = Path(model).expanduser()
    ref = str(local.resolve()) if local.exists() else model
    digest = f"{model_identity(model_dir)}:{meta.fingerprint_id}:{_file_hash(probes)}"
    data = {
        "condition": condition,
        "model": ref,
        "fingerprint": str(fp),
        "input_digest": digest + (f":{extra_digest}" if extra_digest else ""),
        "sampling": {"runs": samples, "temperature": temperature},
    }
    if use_adapter:
        data["use_adapter"] = True
    origins = flag_origins(
        {
            "sampling.runs": ("--samples", samples),
            "sampling.temperature": ("--temperature", temperature),
        }
    )
    cfg = validate(VerifyConfig, apply_overrides(data, overrides, origins), "fprun verify", origins)
    check_probe_sets(cfg)
    return cfg.model_dump(mode="json")


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def format_rows(rows: list[dict]) -> str:
    """A small table: probe set, hits/total, FSR with its 95% CI, and p-values where present."""
    header = ["condition", "probe_set", "run", "hits/total", "FSR %", "95% CI", "p-values"]
    out = [header]
    for r in sorted(rows, key=_order):
        run = "" if r["sample_idx"] is None else str(r["sample_idx"])
        fsr = f"{100 * r['fsr']:.1f}"
        if r.get("mean_fsr") is not None:
            fsr += f" (mean {100 * r['mean_fsr']:.1f})"
        ps = [
            f"{name}={r[key]:.2g}"
            for key, name in (
                ("p_ttest_one_sided", "t>"),
                ("p_ttest_two_sided", "t2"),
                ("p_binomial", "binom"),
            )
            if r.get(key) is not None
        ]
        out.append(
            [
                r["condition"],
                r["probe_set"],
                run,
                f"{r['n_hit']}/{r['n_total']}",
                fsr,
                f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]",
                " ".join(ps),
            ]
        )
    widths = [max(len(row[i]) for row in out) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in out
    )


def _order(r: dict) -> tuple:
    sets = ["fingerprint", "unseen_keys", "similar", "normal", "regularization"]
    base = r["probe_set"].split(":")[0]
    return (
        sets.index(base) if base in sets else len(sets),
        r["probe_set"],
        -1 if r["sample_idx"] is None else r["sample_idx"],
    )
