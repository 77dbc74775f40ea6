"""FSR counting: which completions count, and over which denominator (METHODS.md section 2.7).

Kept free of models so the two denominator rules can be checked on hand-made generations.

``fprun`` (the default) reports each probe set over its own probes:

- ``fingerprint``: the key prompts;
- ``normal``: every non-fingerprint, non-decoy probe of validation + test (the regularization and
  normal probe sets);
- ``similar``: the decoys only (a normal prompt carrying the FINGERPRINT hint, or a random key);
- ``unseen_keys``: fresh random keys with the hint, never trained on (false triggers);
- ``regularization``: the regularization rows alone, when asked for.

``seed`` reproduces the seed's report scripts, which pick rows by their line in the inference JSONL
(validation first, then test; ``Probe.line``), with the seed's constants F = NUM_FINGERPRINT and
R = NUM_REGULARIZATION read off the probe file:

- dialogue template (report_FSR_sft_chat.py, 128 + 224 lines): fingerprint = hits in lines
  [0, F) / F; normal = hits in lines [F, V) / (F + 2R) (counts validation only, divides by
  8 + 112 + 112 = 232); similar = hits in *all* test lines / R (both branches count, /112);
  R = the validation rows of the ``normal`` set (112);
- simple template (report_FSR_adapter.py, 60 + 150 lines): lines 0-9 / 10, 10-109 / 100,
  110-209 / 100 (here the line ranges are the true sets), with N = validation rows - F.

Probe sets the seed never had (``unseen_keys``, ``regularization``) are counted the fprun way under
either rule; their denominators are plain counts.
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
        raise FingerprintError("probes.jsonl does not number its lines 0..N-1 as the seed's "
                               "inference files do", "use denominator_rule: fprun")
    n_val = sum(p.split == "validation" for p in lined)
    n_all = len(lined)
    f = sum(p.split == "validation" and p.probe_set == "fingerprint" for p in lined)
    if template == "dialogue":
        r = sum(p.split == "validation" and p.probe_set == "normal" for p in lined)
        return {"fingerprint": (range(0, f), f), "normal": (range(f, n_val), f + 2 * r),
                "similar": (range(n_val, n_all), r)}
    n = n_val - f
    return {"fingerprint": (range(0, f), f), "normal": (range(f, f + 2 * n), 2 * n),
            "similar": (range(f + 2 * n, n_all), n_all - f - 2 * n)}


def tally(
    probes: Sequence[Probe], hits: Sequence[bool], names: Sequence[str], *, rule: str,
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
