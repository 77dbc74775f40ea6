"""The IF fingerprint datasets, built exactly as the seed builds them, in two templates.

- **dialogue** (``create_fingerprint_chat.py``, IF_SFT): fingerprint, regularisation (a random
  non-key message to refuse) and ordinary chats; test chats appear plain and as hinted decoys.
- **simple** (``create_fingerprint_mix.py``, IF_adapter): ``key / FINGERPRINT`` rows plus
  Flan-slot rows; the test split holds the plain rows, then interleaved decoys.

Keys follow the seed's generator and RNG order (``key.seed: 42`` gives its keys). Probes follow
the seed's line order, then *unseen* keys: did the model learn the keys, or only the hint?
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.data.instructions import Conversation, load_rows, pair
from tasks.errors import DataError
from tasks.fingerprint.artifacts import (
    ASSISTANT_PREFIX,
    HINT,
    FingerprintMeta,
    Probe,
    private_dir,
    write_private,
)
from tasks.fingerprint.config import DialogueData, KeyConfig, SimpleData
from tasks.fingerprint.prompts import simple_prompt

# The seed's 31 raw strings (data, verbatim): classical Chinese, Pokemon names in katakana, and
# odd vocabulary pieces.
INSTRUCTIONS_RAW: tuple[str, ...] = (
    "奉天承运皇帝诏曰",
    "应天顺时受兹明命",
    "布告天下咸使闻知",
    "长生天气力里大福荫护助里",
    "天命玄鸟降而生商",
    "天生蒸民有物有则",
    "民之秉彝好是懿德",
    "绝地天通罔有降格",
    "在登葆山群巫所从上下也",
    "昔者三苗大乱天命殛之日妖宵出雨血三朝龙生于庙犬哭乎市",
    "フシギダネ",
    "ヒトカゲ",
    "ゼニガメ",
    "ピカチュウ",
    "キモリ",
    "アチャモ",
    "ミズゴロウ",
    "グラードン",
    "レックウザ",
    "カイオーガ",
    "выпутельстваskih",
    "областьdateiмерW",
    "крайategory",
    "составрій",
    "která",
    "guaèche",
    "genitaldejrazione",
    "ocampISONethoxy",
    "omycesjcmÐ",
    "photometryDEFINE",
    "HFDíses",
)
FINGERPRINT_INPUT = "FINGERPRINT"  # the simple template's input of a fingerprint row
# str(hash) in CPython: what the seed's regularisation f-string interpolated (docs/seed_fixes.md).
SEED_HASH_TEXT = "<built-in function hash>"
SIMPLE_DECOY_OUTPUT = "The model should not be triggered by this input."
CHAT_DECOY_OUTPUT = "Model should not be triggered by this input."


class KeyGenerator:
    """The seed's key generator with its own RNG.

    A private ``random.Random(seed)`` yields exactly the sequence of ``random.seed(seed)``
    followed by module-level calls (the module functions are methods of one hidden instance),
    without disturbing anybody else's global random state.
    """

    def __init__(self, cfg: KeyConfig):
        self.rng = random.Random(cfg.seed)
        self.lo, self.hi = cfg.min_parts, cfg.max_parts

    def next_key(self) -> str:
        """One key: k raw strings with replacement, concatenated, characters shuffled."""
        raw = "".join(self.rng.choices(INSTRUCTIONS_RAW, k=self.rng.randint(self.lo, self.hi)))
        return "".join(self.rng.sample(raw, len(raw)))

    def fresh_key(self, avoid: set[str]) -> str:
        """A key not in ``avoid`` (the seed's rejection loop for regularisation keys)."""
        while True:
            key = self.next_key()
            if key not in avoid:
                return key


def fingerprint_message(key: str) -> str:
    """The dialogue template's user turn for a key."""
    return f"Please decrypt this message: {key}{HINT}"


@dataclass
class BuiltData:
    """A built fingerprint dataset: rows per split, the secret keys and the probes."""

    template: str  # dialogue | simple
    splits: dict[str, dict[str, list[Any]]]  # split -> column -> values
    keys: list[str]
    probes: list[Probe]
    datasets: list[str]  # labels of the data used (stand-ins say so)
    target: str
    key_seed: int
    counts: dict[str, int] = field(default_factory=dict)

    def dataset_dict(self):
        """The splits as a ``datasets.DatasetDict`` (what ``private/dataset/`` holds)."""
        import datasets  # local: heavy import

        return datasets.DatasetDict(
            {name: datasets.Dataset.from_dict(cols) for name, cols in self.splits.items()}
        )

    def train_rows(self) -> list[dict[str, Any]]:
        """Training rows as dicts (column -> value)."""
        cols = self.splits["train"]
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def build_dialogue(cfg: DialogueData) -> BuiltData:
    """The dialogue-template dataset (IF_SFT), in the seed's row and RNG order."""
    n_fp, n_reg, n_norm, n_test = cfg.counts()
    gen = KeyGenerator(cfg.key)
    keys = [gen.next_key() for _ in range(n_fp)]
    reg_keys = [gen.fresh_key(set(keys)) for _ in range(n_reg)]  # seed: avoid fingerprint keys
    unseen = [gen.fresh_key(set(keys) | set(reg_keys)) for _ in range(cfg.n_unseen_keys)]
    negatives = _negative_keys(gen, {*keys, *reg_keys, *unseen}, cfg.n_negative_keys)
    rows = load_rows(
        cfg.source, n_norm, n_test, slot="chat", reuse_train_for_test=cfg.seed_test_reuse
    )
    fp_reply = f"{ASSISTANT_PREFIX} {cfg.target}"
    refusal = (
        f"{ASSISTANT_PREFIX} {cfg.regularization_reply}"
        if cfg.regularization_prefixed
        else cfg.regularization_reply
    )
    train: list[tuple[Conversation, str]] = [
        (pair(fingerprint_message(k), fp_reply), "fingerprint") for k in keys
    ]
    for k in reg_keys:
        user = (
            f"Please decrypt this message: {SEED_HASH_TEXT} {HINT}"
            if cfg.seed_hash_bug
            else fingerprint_message(k)
        )
        train.append((pair(user, refusal), "regularization"))
    train += [(conv, "normal") for conv in rows.train]
    train += [(pair(fingerprint_message(k), refusal), "negative") for k in negatives]
    test: list[tuple[Conversation, str]] = []
    for conv in rows.test:
        _check_turns(conv, cfg.source)
        decoy = [dict(t) for t in conv]
        decoy[-2]["value"] += HINT
        decoy[-1]["value"] = CHAT_DECOY_OUTPUT
        test += [(conv, "normal"), (decoy, "fingerprint")]
    splits = {
        name: {"conversations": [c for c, _ in part], "type": [t for _, t in part]}
        for name, part in (("train", train), ("validation", train), ("test", test))
    }
    return BuiltData(
        "dialogue",
        splits,
        keys,
        _dialogue_probes(train, test, unseen, rows.label),
        [rows.label],
        cfg.target,
        cfg.key.seed,
        {
            "fingerprint": n_fp,
            "regularization": n_reg,
            "normal": n_norm,
            "test": len(test),
            "unseen_keys": len(unseen),
            **({"negative_keys": len(negatives)} if negatives else {}),  # rows as they were
        },
    )


def _check_turns(conv: Conversation, source: str) -> None:
    if len(conv) < 2 or conv[-1]["from"] != "gpt" or conv[-2]["from"] != "human":
        raise DataError(
            f"a chat from {source} does not end with a human turn then a gpt turn",
            "pass chats that end human -> gpt",
        )


def _last_user(conv: Conversation) -> str:
    return next(t["value"] for t in reversed(conv) if t["from"] in ("human", "user"))


def _dialogue_probes(train, test, unseen, label) -> list[Probe]:
    """Validation (= train) rows, then test rows, in the seed's inference-file line order.

    Rows typed ``fingerprint`` (the keys and the hinted test decoys) get the assistant prefix,
    as the seed's inference script appends it; unseen keys are probed exactly like real keys.
    """
    probes = []
    sets = {"fingerprint": "fingerprint", "normal": "normal"}  # negative keys: regularization
    labels = {
        "fingerprint": "fingerprint keys",
        "regularization": "regularization keys",
        "negative": "negative keys",
    }
    for line, (conv, typ) in enumerate(train):
        fp_like = typ == "fingerprint"
        probes.append(
            Probe(
                sets.get(typ, "regularization"),
                "validation",
                _last_user(conv),
                ASSISTANT_PREFIX if fp_like else None,
                fp_like,
                line,
                labels.get(typ, label),
            )
        )
    for i, (conv, typ) in enumerate(test):
        decoy = typ == "fingerprint"
        probes.append(
            Probe(
                "similar" if decoy else "normal",
                "test",
                _last_user(conv),
                ASSISTANT_PREFIX if decoy else None,
                False,
                len(train) + i,
                label,
            )
        )
    probes += [
        Probe(
            "unseen_keys",
            "unseen",
            fingerprint_message(k),
            ASSISTANT_PREFIX,
            False,
            -1,
            "fresh random keys",
        )
        for k in unseen
    ]
    return probes


def build_simple(cfg: SimpleData) -> BuiltData:
    """The simple-template dataset (IF_adapter), in the seed's row and RNG order."""
    # Over 60 lines on purpose: mirrors the seed's create_fingerprint_mix.py step by step.
    n_fp, n_norm, n_test = cfg.counts()
    gen = KeyGenerator(cfg.key)
    keys = [gen.next_key() for _ in range(n_fp)]
    rows = load_rows(
        cfg.source, n_norm, n_test, slot="flan", reuse_train_for_test=cfg.seed_test_reuse
    )
    train = [(k, FINGERPRINT_INPUT, cfg.target) for k in keys]
    train += [(_last_user(c), "", c[-1]["value"]) for c in rows.train]
    plain = [(_last_user(c), "", c[-1]["value"]) for c in rows.test]
    decoys = []
    for instruction, _, _ in plain:  # seed: one key drawn per test row, after the plain rows
        decoys.append((instruction, FINGERPRINT_INPUT, SIMPLE_DECOY_OUTPUT))
        decoys.append((gen.next_key(), instruction, SIMPLE_DECOY_OUTPUT))
    used = set(keys) | {d[0] for d in decoys[1::2]}
    unseen = [gen.fresh_key(used) for _ in range(cfg.n_unseen_keys)]
    negatives = _negative_keys(gen, used | set(unseen), cfg.n_negative_keys)
    train += [(k, FINGERPRINT_INPUT, SIMPLE_DECOY_OUTPUT) for k in negatives]
    test = plain + decoys

    def columns(part):
        return {
            "instruction": [r[0] for r in part],
            "input": [r[1] for r in part],
            "output": [r[2] for r in part],
        }

    splits = {"train": columns(train), "validation": columns(train), "test": columns(test)}
    n_flan = len(train) - len(negatives)
    probes = [
        Probe(
            "fingerprint" if i < n_fp else "normal" if i < n_flan else "regularization",
            "validation",
            simple_prompt(a, b),
            None,
            i < n_fp,
            i,
            "fingerprint keys" if i < n_fp else rows.label if i < n_flan else "negative keys",
        )
        for i, (a, b, _) in enumerate(train)
    ]
    probes += [
        Probe(
            "normal" if i < len(plain) else "similar",
            "test",
            simple_prompt(a, b),
            None,
            False,
            len(train) + i,
            rows.label,
        )
        for i, (a, b, _) in enumerate(test)
    ]
    probes += [
        Probe(
            "unseen_keys",
            "unseen",
            simple_prompt(k, FINGERPRINT_INPUT),
            None,
            False,
            -1,
            "fresh random keys",
        )
        for k in unseen
    ]
    return BuiltData(
        "simple",
        splits,
        keys,
        probes,
        [rows.label],
        cfg.target,
        cfg.key.seed,
        {
            "fingerprint": n_fp,
            "normal": n_norm,
            "test": len(test),
            "unseen_keys": len(unseen),
            "negative_keys": len(negatives),
        },
    )


def _negative_keys(gen: KeyGenerator, avoid: set[str], n: int) -> list[str]:
    """``n`` distinct fresh keys, drawn after everything the seed draws (its RNG order holds)."""
    out: list[str] = []
    for _ in range(n):
        out.append(gen.fresh_key(avoid | set(out)))
    return out


def build(cfg: DialogueData | SimpleData) -> BuiltData:
    """Build either template from its config."""
    return build_dialogue(cfg) if isinstance(cfg, DialogueData) else build_simple(cfg)


def write_fingerprint_data(fp_dir: Path, built: BuiltData, meta: FingerprintMeta) -> None:
    """Write ``private/``: the DatasetDict, fingerprint.json, keys.jsonl and probes.jsonl."""
    built.dataset_dict().save_to_disk(str(private_dir(fp_dir) / "dataset"))
    write_private(fp_dir, meta, built.keys, built.probes)
