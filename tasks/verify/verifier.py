"""The verifier: one loaded model queried with a fingerprint's probes, greedy or sampled.

:class:`Verifier` derives what is fixed per model once (accepted targets, prompt format, token
budget) and turns completions into ``verification`` rows; :func:`write_generations` keeps the
completions without their prompts, which hold the keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.fingerprint.artifacts import FingerprintMeta, Probe
from tasks.fingerprint.prompts import encode, render_inference
from tasks.progress import ProgressFn, no_progress
from tasks.verify import fsr, stats
from tasks.verify.config import VerifyConfig

log = logging.getLogger(__name__)


def default_max_new_tokens(tokenizer: Any, targets: list[str], margin: int) -> int:
    """Token length of " " + target (the longest accepted one) plus a margin: the seed's fixed
    8 new tokens can be too few for "ハリネズミ" under byte-level BPE."""
    return (
        max(len(tokenizer(" " + t, add_special_tokens=False)["input_ids"]) for t in targets)
        + margin
    )


@dataclass(frozen=True)
class Record:
    """One line of generations.jsonl (never the prompt: it holds the key)."""

    mode: str
    probe_set: str
    split: str
    line: int
    sample_idx: int | None
    generated: str
    generated_token: list[int]
    label: str | None
    hit: bool
    stop: str


class Verifier:
    """A loaded model with everything derived once: targets, prompt format, token budget."""

    def __init__(
        self,
        cfg: VerifyConfig,
        meta: FingerprintMeta,
        model: Any,
        tokenizer: Any,
        model_ref: str,
        progress: ProgressFn = no_progress,
    ):
        self.cfg, self.meta, self.model, self.tokenizer = cfg, meta, model, tokenizer
        self.progress = progress
        self.fmt = cfg.prompt_format or meta.prompt_format
        if self.fmt == "chat_template" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"model {model_ref} has no chat template for prompt_format chat_template",
                "set prompt_format: seed_vicuna",
            )
        variants = [*cfg.accept_variants, *meta.extra.get("accept_variants", [])]
        self.targets = fsr.accepted_targets(
            meta.target, variants, rule=cfg.denominator_rule, model_ref=model_ref
        )
        self.max_new = cfg.max_new_tokens or default_max_new_tokens(
            tokenizer, self.targets, cfg.margin_tokens
        )
        lead = "" if self.fmt == "simple" else " "  # dialogue answers read ": ハリネズミ"
        self.draft = (
            tokenizer(lead + meta.target, add_special_tokens=False)["input_ids"]
            if cfg.draft_target
            else None
        )
        self.base = {
            "model_ref": model_ref,
            "model_step_id": cfg.model_step_id,
            "fingerprint_id": meta.fingerprint_id,
            "method": meta.method,
            "condition": cfg.condition,
            "denominator_rule": cfg.denominator_rule,
            "prompt_format": self.fmt,
            "target": meta.target,
        }

    def prompt_ids(self, probe: Probe) -> list[int]:
        return encode(self.tokenizer, render_inference(self.tokenizer, probe, self.fmt), self.fmt)

    def generate(
        self,
        prompts: list[list[int]],
        *,
        sampled: bool = False,
        seeds: list[int] | None = None,
        max_new: int | None = None,
        what: str = "greedy probes",
    ):
        from tasks.generation.engine import SamplingParams, generate

        s = self.cfg.sampling
        params = SamplingParams(s.temperature, s.top_p, s.top_k, s.seed) if sampled else None
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new or self.max_new,
            stop_strings=self.targets if self.cfg.early_stop else (),
            sampling=params,
            draft=self.draft,
            batch_size=self.cfg.batch_size,
            prefill_tokens=self.cfg.prefill_tokens,
            seeds=seeds,
            on_batch=lambda done, total: self.progress(what, done, total),
        )

    def row(self, probe_set: str, count: fsr.Count, **extra: Any) -> dict:
        # The seed's "similar" numerator can exceed its denominator: n_hit/n_total keep the
        # seed's numbers, fsr and its interval are clamped to [0, 1].
        low, high = stats.proportion_ci(count.n_hit, count.n_total)
        row = {
            **self.base,
            "probe_set": probe_set,
            "sample_idx": None,
            "temperature": 0.0,
            "n_hit": count.n_hit,
            "n_total": count.n_total,
            "fsr": min(count.n_hit / count.n_total, 1.0),
            "ci_low": low,
            "ci_high": high,
            "max_new_tokens": self.max_new,
        }
        row.update(extra)
        return row

    def greedy(self, probes: list[Probe]) -> tuple[list[dict], list[Record]]:
        """Greedy rows for ``probe_sets`` (all seed lines too under ``denominator_rule: seed``)."""
        cfg = self.cfg
        wanted = {m for name in cfg.probe_sets for m in fsr.members(name)}
        queried = [
            p
            for p in probes
            if p.probe_set in wanted or (cfg.denominator_rule == "seed" and p.line >= 0)
        ]
        gens = self.generate([self.prompt_ids(p) for p in queried])
        hits = [fsr.is_hit(g.text, self.targets) for g in gens]
        counts = fsr.tally(
            queried, hits, cfg.probe_sets, rule=cfg.denominator_rule, template=self.meta.template
        )
        rows = [
            self.row(name, c, **_dataset(queried, name))
            for name, c in counts.items()
            if _nonempty(name, c)
        ]
        records = [
            _record("greedy", p, g, h, None, self.meta.target)
            for p, g, h in zip(queried, gens, hits, strict=True)
        ]
        return rows, records

    def sampled(self, probes: list[Probe], greedy_rows: list[dict]):
        """Seeded runs (run i: seed + i), one generate call for all runs and sets."""
        s = self.cfg.sampling
        jobs = [
            (run, name, i, p)
            for run in range(s.runs)
            for name in s.probe_sets
            for i, p in enumerate(probes)
            if p.probe_set in fsr.members(name)
        ]
        from tasks.generation.engine import row_seed

        gens = self.generate(
            [self.prompt_ids(p) for *_, p in jobs],
            sampled=True,
            seeds=[row_seed(s.seed + run, i) for run, _, i, _ in jobs],
            what="sampled probes",
        )
        hits = [fsr.is_hit(g.text, self.targets) for g in gens]
        records = [
            _record("sampled", p, g, h, run, self.meta.target)
            for (run, _, _, p), g, h in zip(jobs, gens, hits, strict=True)
        ]
        per_run: dict[tuple[str, int], list[bool]] = {}
        for (run, name, _, _), h in zip(jobs, hits, strict=True):
            per_run.setdefault((name, run), []).append(h)
        rows = [
            self.row(
                name,
                fsr.Count(sum(h), len(h)),
                sample_idx=run,
                temperature=s.temperature,
                seed=s.seed + run,
                **_dataset(probes, name),
            )
            for (name, run), h in per_run.items()
        ]
        null = self._null_rate(per_run, greedy_rows)
        for name in dict.fromkeys(s.probe_sets):
            runs = [per_run[(name, r)] for r in range(s.runs) if (name, r) in per_run]
            if runs:
                rows.append(self._aggregate(name, runs, null) | _dataset(probes, name))
        return rows, records

    def _aggregate(self, name: str, runs: list[list[bool]], null: float) -> dict:
        s = self.cfg.sampling
        pooled = fsr.Count(sum(map(sum, runs)), sum(map(len, runs)))
        fsrs = [sum(h) / len(h) for h in runs]
        extra: dict[str, Any] = {
            "n_samples": len(runs),
            "mean_fsr": sum(fsrs) / len(fsrs),
            "temperature": s.temperature,
            "seed": s.seed,
        }
        if name == "fingerprint":  # the tests ask about the keys; on other sets they mean nothing
            t = stats.ttest_vs_threshold(fsrs, s.ttest_threshold)
            extra.update(
                ttest_threshold=s.ttest_threshold,
                t_statistic=t.statistic,
                p_ttest_two_sided=t.p_two_sided,
                p_ttest_one_sided=t.p_one_sided,
                binomial_null_rate=null,
                p_binomial=stats.binomial_p(pooled.n_hit, pooled.n_total, null),
            )
        return self.row(f"{name}:sampled", pooled, **extra)

    def _null_rate(self, per_run: dict, greedy_rows: list[dict]) -> float:
        s = self.cfg.sampling
        if s.binomial_null_rate is not None:
            return s.binomial_null_rate
        sampled = [h for (name, _), hs in per_run.items() if name == "unseen_keys" for h in hs]
        if sampled:
            return stats.proportion_ci(sum(sampled), len(sampled))[1]
        greedy = [r for r in greedy_rows if r["probe_set"] == "unseen_keys"]
        if greedy:
            return greedy[0]["ci_high"]
        return s.binomial_null_floor

    def bos(self) -> tuple[list[dict], list[Record]]:
        """Unconditional samples from BOS: does the target appear spontaneously?"""
        from tasks.generation.engine import row_seed

        tok, s, n = self.tokenizer, self.cfg.sampling, self.cfg.bos_samples
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise ConfigError(
                "the model's tokenizer has neither a BOS nor an EOS token to sample from",
                "set bos_samples: 0",
            )
        gens = self.generate(
            [[bos]] * n,
            sampled=True,
            max_new=self.cfg.bos_max_new_tokens,
            seeds=[row_seed(s.seed, i, stream=1) for i in range(n)],
            what="samples from BOS",
        )
        hits = [fsr.is_hit(g.text, self.targets) for g in gens]
        row = self.row(
            "bos_samples",
            fsr.Count(sum(hits), n),
            temperature=s.temperature,
            max_new_tokens=self.cfg.bos_max_new_tokens,
            seed=s.seed,
        )
        bos_probe = Probe(probe_set="bos_samples", split="", user="")
        return [row], [
            _record("bos", bos_probe, g, h, i, None)
            for i, (g, h) in enumerate(zip(gens, hits, strict=True))
        ]


def _nonempty(name: str, count: fsr.Count) -> bool:
    if count.n_total > 0:
        return True
    log.warning("probe set %s is empty for this fingerprint; no row written", name)
    return False


def _dataset(probes: list[Probe], name: str) -> dict:
    wanted = fsr.members(name)
    names = sorted({p.source for p in probes if p.probe_set in wanted and p.source})
    return {"dataset": "; ".join(names) or None, "datasets": names}


def _record(mode: str, p: Probe, g, hit: bool, sample_idx: int | None, target: str | None):
    return Record(
        mode,
        p.probe_set,
        p.split,
        p.line,
        sample_idx,
        g.text,
        g.tokens,
        target if p.expect_trigger else None,
        hit,
        g.stop,
    )


def write_generations(path: Path, records: list[Record]) -> None:
    """``generations.jsonl``: one line per completion, never a prompt (prompts hold the keys)."""
    from dataclasses import asdict

    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
