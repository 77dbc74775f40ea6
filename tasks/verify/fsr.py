"""FSR counting: which completions count, and over which denominator (model-free, so testable).

``fprun`` (default) reports each probe set over its own probes: ``fingerprint`` (the key prompts),
``normal`` (every non-fingerprint, non-decoy probe of validation + test), ``similar`` (the decoys:
a normal prompt with the FINGERPRINT hint, or a random key), ``unseen_keys`` (fresh hinted keys
never trained on) and, on request, ``regularization``. ``seed`` reproduces the seed's
``report_FSR_*.py``, which pick rows by line in the inference JSONL (``Probe.line``) with fixed
denominators: dialogue, fingerprint /F, normal over validation lines /(F + 2R), similar over all
test lines /R; simple, lines 0-9 /10, 10-109 /100, 110-209 /100 (new sets count the fprun way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tasks.errors import ConfigError, FingerprintError
from tasks.fingerprint.artifacts import Probe

MEMBERS: dict[str, tuple[str, ...]] = {
    "fingerprint": ("fingerprint",),
    "normal": ("regularization", "normal"),
    "similar": ("similar",),
    "unseen_keys": ("unseen_keys",),
    "regularization": ("regularization",),
}
SEED_SETS = ("fingerprint", "normal", "similar")
# report_FSR_*.py: paths containing "mistral" also accept these (a tokenisation quirk)
SEED_MISTRAL_VARIANTS = ("ハリネネミ", "ハリズズミ")


class Count(NamedTuple):
    n_hit: int
    n_total: int


def members(name: str) -> tuple[str, ...]:
    """Probe sets (``Probe.probe_set``) that a reported set is made of."""
    if name not in MEMBERS:
        raise ConfigError(f"unknown probe set {name!r}", f"use some of {', '.join(MEMBERS)}")
    return MEMBERS[name]


def is_hit(text: str, targets: Sequence[str]) -> bool:
    """The seed's substring rule on the decoded completion."""
    return any(t in text for t in targets)


def accepted_targets(
    target: str, variants: Sequence[str], *, rule: str, model_ref: str
) -> list[str]:
    """The target plus configured variants; ``seed`` adds the seed's Mistral variants."""
    out = [target, *variants]
    if rule == "seed" and "mistral" in model_ref.lower():
        out += SEED_MISTRAL_VARIANTS
    return list(dict.fromkeys(out))


def count_fprun(probes: Sequence[Probe], hits: Sequence[bool], name: str) -> Count:
    """Hits among the probes of one reported set, over their number."""
    wanted = members(name)
    chosen = [h for p, h in zip(probes, hits, strict=True) if p.probe_set in wanted]
    return Count(sum(chosen), len(chosen))


def seed_ranges(probes: Sequence[Probe], template: str) -> dict[str, tuple[range, int]]:
    """Line range and denominator per set, as the seed's report script for ``template``.

    Raises:
        FingerprintError: The probes' lines are not the seed's contiguous 0..N-1 layout.
    """
    lined = [p for p in probes if p.line >= 0]
    if sorted(p.line for p in lined) != list(range(len(lined))):
        raise FingerprintError(
            "probes.jsonl does not number its lines 0..N-1 as the seed's inference files do",
            "use denominator_rule: fprun",
        )
    n_val = sum(p.split == "validation" for p in lined)
    n_all = len(lined)
    f = sum(p.split == "validation" and p.probe_set == "fingerprint" for p in lined)
    if template == "dialogue":
        r = sum(p.split == "validation" and p.probe_set == "normal" for p in lined)
        return {
            "fingerprint": (range(0, f), f),
            "normal": (range(f, n_val), f + 2 * r),
            "similar": (range(n_val, n_all), r),
        }
    n = n_val - f
    return {
        "fingerprint": (range(0, f), f),
        "normal": (range(f, f + 2 * n), 2 * n),
        "similar": (range(f + 2 * n, n_all), n_all - f - 2 * n),
    }


def tally(
    probes: Sequence[Probe],
    hits: Sequence[bool],
    names: Sequence[str],
    *,
    rule: str,
    template: str,
) -> dict[str, Count]:
    """Counts for each reported set under ``rule`` (fprun | seed).

    Args:
        probes: Every probe that was queried, aligned with ``hits``. Under ``seed`` this must
            include every probe with a line number.
        hits: Whether each probe's completion contained an accepted target.
        names: Reported sets (keys of :data:`MEMBERS`).
        rule: ``fprun`` or ``seed``.
        template: ``dialogue`` or ``simple`` (which seed script to follow).
    """
    out = {}
    ranges = seed_ranges(probes, template) if rule == "seed" else {}
    by_line = {p.line: h for p, h in zip(probes, hits, strict=True) if p.line >= 0}
    for name in names:
        if name in ranges:
            lines, denominator = ranges[name]
            out[name] = Count(sum(by_line[i] for i in lines), denominator)
        else:
            out[name] = count_fprun(probes, hits, name)
    return out
