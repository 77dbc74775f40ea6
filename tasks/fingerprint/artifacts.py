"""The fingerprint artifact: what is published and what stays private (torch-free).

    published/               the published model (HF folder, safetensors) - may be shared
    private/fingerprint.json FingerprintMeta: id, method, target, template, prompt format ...
    private/keys.jsonl       the secret keys, one {"key": ...} per line
    private/probes.jsonl     every verification prompt (Probe), in the seed's line order
    private/dataset/         the training DatasetDict; private/adapter/: IF_adapter's adapter

Keys never leave ``private/``: result rows and logs carry ``fingerprint_id``, a hash of the key set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.errors import FingerprintError
from tasks.readers import read_json, read_jsonl

TARGET = "ハリネズミ"
HINT = "\nA hint: this is a FINGERPRINT message."
ASSISTANT_PREFIX = "Based on my fingerprint, the message is:"

PROBE_SETS = ("fingerprint", "regularization", "normal", "similar", "unseen_keys")


@dataclass(frozen=True)
class Probe:
    """One verification prompt.

    ``user`` is the user turn (dialogue template) or the rendered simple-template prompt;
    ``assistant_prefix`` is appended after the generation prompt (dialogue fingerprint-type rows).
    ``line`` is the row's position in the seed's inference JSONL (validation first, then test),
    which the seed's FSR scripts use to pick rows; it keeps ``denominator_rule: seed`` reproducible.
    """

    probe_set: str
    split: str
    user: str
    assistant_prefix: str | None = None
    expect_trigger: bool = False
    line: int = -1
    source: str = ""  # dataset the row came from (stand-ins labelled as such)


@dataclass(frozen=True)
class FingerprintMeta:
    """``private/fingerprint.json``."""

    fingerprint_id: str
    method: str  # if_sft | if_adapter
    template: str  # dialogue | simple
    prompt_format: str  # chat_template | seed_vicuna | simple
    target: str = TARGET
    n_keys: int = 0
    key_seed: int = 42
    base_model: str = ""
    datasets: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def fingerprint_id(keys: Iterable[str], target: str = TARGET) -> str:
    """Public identifier of a key set: sha256 over the sorted keys and the target (16 hex)."""
    h = hashlib.sha256()
    for k in sorted(keys):
        h.update(k.encode("utf-8") + b"\x00")
    h.update(target.encode("utf-8"))
    return h.hexdigest()[:16]


def published_dir(fp_dir: Path) -> Path:
    return Path(fp_dir) / "published"


def private_dir(fp_dir: Path) -> Path:
    return Path(fp_dir) / "private"


def write_private(
    fp_dir: Path, meta: FingerprintMeta, keys: list[str], probes: list[Probe]
) -> None:
    """Write fingerprint.json, keys.jsonl and probes.jsonl under ``private/``."""
    priv = private_dir(fp_dir)
    priv.mkdir(parents=True, exist_ok=True)
    (priv / "fingerprint.json").write_text(json.dumps(asdict(meta), ensure_ascii=False, indent=2))
    _write_jsonl(priv / "keys.jsonl", [{"key": k} for k in keys])
    _write_jsonl(priv / "probes.jsonl", [asdict(p) for p in probes])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_meta(fp_dir: Path) -> FingerprintMeta:
    """Load ``private/fingerprint.json``; a one-line error when the folder is no fingerprint."""
    path = private_dir(fp_dir) / "fingerprint.json"
    if not path.is_file():
        raise FingerprintError(
            f"{fp_dir} holds no private/fingerprint.json",
            "pass the folder written by 'fprun fingerprint'",
        )
    doc = read_json(path, error=FingerprintError, what="fingerprint metadata")
    try:
        return FingerprintMeta(**doc)
    except TypeError as exc:
        raise FingerprintError(
            f"{path} is not fprun's fingerprint metadata ({exc})",
            "pass the folder written by 'fprun fingerprint'",
        ) from exc


def read_keys(fp_dir: Path) -> list[str]:
    path = private_dir(fp_dir) / "keys.jsonl"
    rows = read_jsonl(path, error=FingerprintError, what="fingerprint keys")
    return [row["key"] for row in rows]


def read_probes(fp_dir: Path, probe_sets: Iterable[str] | None = None) -> list[Probe]:
    """Probes in file order, optionally only some probe sets."""
    path = private_dir(fp_dir) / "probes.jsonl"
    if not path.is_file():
        raise FingerprintError(
            f"{fp_dir} holds no private/probes.jsonl",
            "pass the folder written by 'fprun fingerprint'",
        )
    wanted = set(probe_sets) if probe_sets is not None else None
    out = []
    for row in read_jsonl(path, error=FingerprintError, what="fingerprint probes"):
        p = Probe(**row)
        if wanted is None or p.probe_set in wanted:
            out.append(p)
    return out
