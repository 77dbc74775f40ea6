"""Instruction and chat data: offline stand-ins, local files, and hub datasets.

The seed fills the IF datasets' Flan (simple template) and WizardLM (dialogue template) slots with
real data; neither is installable offline, so by default seeded reasoning-gym generators fill them,
and every row set is labelled so, e.g. ``reasoning_gym:basic_arithmetic (stand-in for
Muennighoff/flan)``. A *source* is ``reasoning_gym:task[,task...]`` (rows round-robin over the
generators), a local ``.jsonl``/``.json`` file (seed ``conversations``, ``messages``, Alpaca, Flan
``inputs``/``targets`` or ``question``/``answer``) or a hub dataset id, sampled as the seed does.
Rows are conversations in the seed's shape, ``[{"from": "human"|"gpt", "value": ...}]``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.errors import DataError
from tasks.readers import read_json_rows

Slot = Literal["flan", "chat"]
HUB_NAMES: dict[str, str] = {
    "flan": "Muennighoff/flan",
    "chat": "WizardLM/WizardLM_evol_instruct_V2_196k",
}
HUB_SPLITS: dict[str, str] = {"flan": "test", "chat": "train"}  # the splits the seed streams
TRAIN_SHUFFLE_SEED, TEST_SHUFFLE_SEED = 42, 1999  # the seed's shuffle(seed=...) values
HUB_TIMEOUT_S = float(os.environ.get("FPRUN_HUB_TIMEOUT", "5"))
_FIX = "use a reasoning_gym:<task> stand-in or a local JSONL file"

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class SourceRows:
    """Rows drawn from one source for one dataset build."""

    label: str  # what result rows record; stand-ins say what they stand in for
    train: list[Conversation]
    test: list[Conversation]


def load_rows(
    source: str, n_train: int, n_test: int, *, slot: Slot, reuse_train_for_test: bool = False
) -> SourceRows:
    """Draw ``n_train`` training and ``n_test`` test conversations from ``source``.

    Args:
        source: See the module docstring.
        n_train: Rows for the training split (the seed: ``shuffle(seed=42).take(n)``).
        n_test: Rows for the test split.
        slot: Which seed dataset the rows replace ("flan" or "chat"), for the label and the hub
            split.
        reuse_train_for_test: Reproduce the seed, whose ``taken.shuffle(seed=1999).take(n)``
            re-orders the *training* rows (``datasets`` never re-shuffles the sources under a
            ``take``) instead of drawing new ones; see docs/seed_fixes.md.

    Raises:
        DataError: The source is empty, too small, malformed, or on an unreachable hub.
    """
    if n_test > n_train and reuse_train_for_test:
        raise DataError(
            f"seed_test_reuse draws {n_test} test rows from {n_train} training rows",
            "lower n_test to at most n_normal, or turn seed_test_reuse off",
        )
    if source.startswith("reasoning_gym:"):
        return _gym_rows(source, n_train, n_test, slot, reuse_train_for_test)
    path = Path(source).expanduser()
    if path.exists() or source.endswith((".jsonl", ".json")) or source.startswith((".", "/")):
        return _local_rows(path, n_train, n_test, reuse_train_for_test)
    return _hub_rows(source, n_train, n_test, slot, reuse_train_for_test)


def chat_pairs(
    source: str = "reasoning_gym:basic_arithmetic", n: int = 400, seed: int = 0
) -> tuple[str, list[list[dict[str, str]]]]:
    """``n`` single-turn chats in ``{"role", "content"}`` form, for user fine-tuning.

    Args:
        source: Any source of :func:`load_rows` (default: an easy task SmolLM2 can learn).
        n: Number of chats.
        seed: Generator seed, so two users can fine-tune on different data.

    Returns:
        ``(label, chats)``; the label names the data actually used.
    """
    if source.startswith("reasoning_gym:"):
        convs = _gym_generate(_gym_tasks(source), n, seed)
        label = source
    else:
        rows = load_rows(source, n, 0, slot="chat")
        convs, label = rows.train, rows.label
    return label, [to_messages(c) for c in convs]


def to_messages(conv: Conversation) -> list[dict[str, str]]:
    """The seed's ``{"from": "human"|"gpt"}`` turns as chat-template ``{"role", "content"}``."""
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    out = []
    for turn in conv:
        role = roles.get(turn["from"])
        if role is None:
            raise DataError(
                f"conversation turn has role {turn['from']!r}",
                "use human/gpt (or user/assistant) turns",
            )
        out.append({"role": role, "content": turn["value"]})
    return out


def pair(prompt: str, answer: str) -> Conversation:
    """One exchange in the seed's conversation shape."""
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]


# --- reasoning-gym stand-ins ----------------------------------------------------------------


def _gym_tasks(source: str) -> list[str]:
    tasks = [t.strip() for t in source.partition(":")[2].split(",") if t.strip()]
    if not tasks:
        raise DataError(
            f"source {source!r} names no reasoning-gym task",
            "write e.g. reasoning_gym:basic_arithmetic,chain_sum",
        )
    return tasks


def _gym_generate(
    tasks: list[str], n: int, seed: int, skip: set[str] | None = None
) -> list[Conversation]:
    """``n`` rows round-robin over ``tasks`` (each task seeded with ``seed``), skipping
    questions in ``skip`` (a held-out split must not repeat training rows)."""
    import reasoning_gym  # local: ~1 s import, only when a stand-in is used

    skip = skip or set()
    per_task = -(-n // len(tasks)) if n else 0
    columns = []
    for task in tasks:
        size = per_task + len(skip) // len(tasks) + 8  # spare rows for the ones skipped
        try:
            items = reasoning_gym.create_dataset(task, size=size, seed=seed)
        except (KeyError, ValueError) as err:
            raise DataError(
                f"reasoning-gym has no task {task!r} ({err})",
                "pick a task from reasoning_gym.factory.DATASETS",
            ) from err
        rows = [pair(x["question"], str(x["answer"])) for x in items if x["question"] not in skip]
        columns.append(rows[:per_task])
    out = [col[i] for i in range(per_task) for col in columns if i < len(col)]
    if len(out) < n:
        raise DataError(
            f"reasoning-gym tasks {tasks} gave {len(out)} distinct rows, need {n}",
            "add tasks to the source or lower the row counts",
        )
    return out[:n]


def _gym_rows(source: str, n_train: int, n_test: int, slot: Slot, reuse: bool) -> SourceRows:
    tasks = _gym_tasks(source)
    train = _gym_generate(tasks, n_train, TRAIN_SHUFFLE_SEED)
    if reuse:
        test = _reorder(train, n_test)
    else:
        test = _gym_generate(tasks, n_test, TEST_SHUFFLE_SEED, skip={c[0]["value"] for c in train})
    label = f"reasoning_gym:{'+'.join(tasks)} (stand-in for {HUB_NAMES[slot]})"
    return SourceRows(label, train, test)


def _reorder(rows: list[Conversation], n: int) -> list[Conversation]:
    """The seed's test split under ``seed_test_reuse``: the training rows, re-ordered."""
    order = list(range(len(rows)))
    random.Random(TEST_SHUFFLE_SEED).shuffle(order)
    return [rows[i] for i in order[:n]]


# --- local files ----------------------------------------------------------------------------


def _local_rows(path: Path, n_train: int, n_test: int, reuse: bool) -> SourceRows:
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist", f"check the path, or {_FIX}")
    rows = [_conversation(r, path) for r in _read_records(path)]
    if not rows:
        raise DataError(f"dataset {path} holds no rows", "pass a file with at least one row")
    need = n_train + (0 if reuse else n_test)
    if len(rows) < need:
        raise DataError(
            f"dataset {path} has {len(rows)} rows, {need} are needed",
            "add rows or lower the data counts (n_normal, n_test)",
        )
    random.Random(TRAIN_SHUFFLE_SEED).shuffle(rows)
    train = rows[:n_train]
    test = _reorder(train, n_test) if reuse else rows[n_train : n_train + n_test]
    return SourceRows(f"local:{path.name}", train, test)


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = read_json_rows(path, error=DataError, what="dataset")
    if not all(isinstance(r, dict) for r in records):
        raise DataError(f"dataset {path} holds non-object rows", "write one JSON object per line")
    return records


def _conversation(rec: dict[str, Any], where: Any) -> Conversation:
    """Map the common instruction-data layouts onto the seed's conversation shape."""
    if isinstance(rec.get("conversations"), list):
        return [{"from": t["from"], "value": t["value"]} for t in rec["conversations"]]
    if isinstance(rec.get("messages"), list):
        back = {"user": "human", "assistant": "gpt", "system": "system"}
        return [
            {"from": back.get(m["role"], m["role"]), "value": m["content"]} for m in rec["messages"]
        ]
    for q, a in (
        ("instruction", "output"),
        ("inputs", "targets"),
        ("question", "answer"),
        ("prompt", "response"),
    ):
        if q in rec and a in rec:
            extra = rec.get("input") if q == "instruction" else ""
            return pair(f"{rec[q]}\n{extra}" if extra else str(rec[q]), str(rec[a]))
    raise DataError(
        f"dataset {where} has a row with fields {sorted(rec)}",
        "use conversations, messages, instruction/output, inputs/targets or question/answer rows",
    )


# --- hub datasets ---------------------------------------------------------------------------


def _hub_rows(name: str, n_train: int, n_test: int, slot: Slot, reuse: bool) -> SourceRows:
    """Stream a hub dataset as the seed does: ``shuffle(seed=42).take(n)`` for training; the
    test split from ``shuffle(seed=1999)`` of the whole stream minus the training rows (or, with
    ``reuse``, of the taken stream, which re-orders the training rows as the seed's code did)."""
    _check_hub(name)
    import datasets  # local: heavy

    split = HUB_SPLITS[slot] if name == HUB_NAMES[slot] else "train"
    try:
        stream = datasets.load_dataset(name, split=split, streaming=True)
        taken = stream.shuffle(seed=TRAIN_SHUFFLE_SEED).take(n_train)
        train = [_conversation(r, name) for r in taken]
        seen = {json.dumps(c, sort_keys=True) for c in train}
        pool = taken if reuse else stream.shuffle(seed=TEST_SHUFFLE_SEED)
        test: list[Conversation] = []
        for rec in pool:
            if len(test) >= n_test:
                break
            conv = _conversation(rec, name)
            if reuse or json.dumps(conv, sort_keys=True) not in seen:
                test.append(conv)
    except (ConnectionError, OSError) as err:
        raise DataError(
            f"cannot stream hub dataset {name} ({type(err).__name__})",
            f"check the network, or {_FIX}",
        ) from err
    if not train:
        raise DataError(f"hub dataset {name} (split {split}) holds no rows", _FIX)
    return SourceRows(name, train, test)


def _check_hub(name: str) -> None:
    """Fail in seconds, not after the datasets library's minute of retries, when offline."""
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in flags):
        raise DataError(f"hub dataset {name} requested while HF_HUB_OFFLINE is set", _FIX)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(name, timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise DataError(
            f"hub dataset {name} does not exist or is gated", "check the id, or log in (HF_TOKEN)"
        ) from err
    except Exception as err:  # DNS, refused, timeout, proxy: all mean "not reachable now"
        raise DataError(
            f"hub dataset {name} is unreachable ({type(err).__name__}); "
            "the hub cannot be reached from here",
            _FIX,
        ) from err
