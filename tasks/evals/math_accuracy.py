"""Math accuracy on seeded reasoning-gym problems, with fprun's or MergeGuard's answer rule.

``fprun`` (default): the question as one user turn of the model's chat template, greedy, and the
*last* number of the completion compared numerically with the gold answer. ``mergeguard_gsm``:
MergeGuard's ``eval_math.py``: its Alpaca prompt asking for "The answer is: ", the first number
after the last such phrase, fractions evaluated (denominator 0 gives the numerator), rounded with
Python's round and compared as floats; on gsm_symbolic it is the labelled offline stand-in for
MergeGuard's GSM8K-50. fprun searches the completion only; the seed also searched the prompt
(``answer_scope: seed_prompt_and_completion`` reproduces it, docs/seed_fixes.md).
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from tasks.errors import DataError
from tasks.evals.config import MathTask

MERGEGUARD_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. Give the final number answer behind the string 'The answer is: '"
    "\n\n### Instruction:\n{instruction}\n\n### Response: Let's think step by step."
)
MERGEGUARD_SPLIT = "The answer is: "
MERGEGUARD_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")  # eval_math.py's regex, verbatim
FPRUN_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
STAND_IN = {"gsm_symbolic": "GSM8K"}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def mergeguard_extract(text: str) -> int | None:
    """eval_math.py's ``extract_answer_number`` (without its unicodedata branch, which only
    accepts single numeric characters the regex cannot produce as numerator or denominator)."""
    parts = text.split(MERGEGUARD_SPLIT)
    if len(parts) < 2:
        return None
    match = MERGEGUARD_NUMBER.search(parts[-1].strip())
    if match is None:
        return None
    found = match.group()
    if "/" in found:
        numerator, denominator = found.split("/")
        if not (_is_number(numerator) and _is_number(denominator)):
            return None
        if denominator == "0":
            return round(float(numerator.replace(",", "")))
        return round(float(Fraction(found.replace(",", ""))))
    value = float(found.replace(",", ""))
    return None if value == float("inf") else round(value)


def fprun_extract(text: str) -> float | None:
    """The last number in the text (commas as thousands separators, a/b as a fraction)."""
    found = FPRUN_NUMBER.findall(text)
    if not found:
        return None
    token = found[-1].replace(",", "")
    try:
        return float(Fraction(token))
    except (ValueError, ZeroDivisionError):
        return None


def parse_gold(answer: str) -> float:
    """reasoning-gym's answer string as a number."""
    return float(Fraction(answer.replace(",", "").strip()))


def is_correct(
    completion: str, gold: float, rule: str, prompt: str = "", scope: str = "completion"
) -> bool:
    """Score one completion under ``rule`` (see the module docstring)."""
    if rule == "mergeguard_gsm":
        text = prompt + completion if scope == "seed_prompt_and_completion" else completion
        pred = mergeguard_extract(text)
        return pred is not None and float(pred) == float(gold)
    value = fprun_extract(completion)
    return value is not None and abs(value - gold) < 1e-6


def make_problems(task: MathTask) -> list[tuple[str, float]]:
    """``(question, gold)`` pairs from a seeded reasoning-gym dataset."""
    import reasoning_gym  # local: ~1 s import

    try:
        ds = reasoning_gym.create_dataset(
            task.task, size=task.n, seed=task.seed, **task.task_config
        )
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(
            f"reasoning-gym cannot make math task {task.task!r} ({exc})",
            "pick a reasoning-gym task with numeric answers",
        ) from exc
    try:
        return [(e["question"], parse_gold(str(e["answer"]))) for e in ds]
    except (ValueError, ZeroDivisionError) as exc:
        raise DataError(
            f"reasoning-gym task {task.task!r} has non-numeric answers",
            "pick a task whose answers are numbers",
        ) from exc


def task_label(task: MathTask) -> tuple[str, str]:
    """``(task column, dataset column)`` for a math task."""
    name = task.label or (task.task if task.rule == "fprun" else f"{task.task}/{task.rule}")
    dataset = f"reasoning_gym:{task.task} (seed {task.seed}, n {task.n})"
    if task.rule == "mergeguard_gsm":
        dataset += f" (stand-in for {STAND_IN.get(task.task, 'GSM8K')}-50 of MergeGuard)"
    return name, dataset


def run_math(
    model: Any, tokenizer: Any, task: MathTask, *, batch_size: int, seed: int, out_dir: Path
) -> dict:
    """Accuracy of one task: a row with k correct of n (responses saved as JSONL)."""
    # Over 60 lines on purpose: generation, extraction and scoring of one batch read top to bottom.
    from tasks.evals.generate import generate_full

    problems = make_problems(task)
    if task.rule == "mergeguard_gsm":
        texts = [MERGEGUARD_PROMPT.format(instruction=q) for q, _ in problems]
    else:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            for q, _ in problems
        ]
    sample = task.sampling == "mergeguard"
    gens = generate_full(
        model,
        tokenizer,
        texts,
        max_new_tokens=task.max_new_tokens,
        do_sample=sample,
        temperature=0.8,
        top_k=50,
        top_p=0.95,
        seed=seed,
        batch_size=batch_size,
        add_special_tokens=task.rule == "mergeguard_gsm",
    )
    completions = [g.text for g in gens]
    correct = [
        is_correct(c, gold, task.rule, t, task.answer_scope)
        for c, (_, gold), t in zip(completions, problems, texts, strict=True)
    ]
    name, dataset = task_label(task)
    with (out_dir / f"math_{name.replace('/', '_')}.jsonl").open("w", encoding="utf-8") as fh:
        for (q, gold), c, ok in zip(problems, completions, correct, strict=True):
            fh.write(
                json.dumps(
                    {"question": q, "gold": gold, "completion": c, "correct": ok},
                    ensure_ascii=False,
                )
                + "\n"
            )
    extra = {
        "rule": task.rule,
        "sampling": task.sampling,
        "max_new_tokens": task.max_new_tokens,
        "answer_scope": task.answer_scope,
        "task_config": task.task_config,
        "seed": seed,
        "truncated": sum(g.stop == "length" for g in gens),
        "prompt": "mergeguard_alpaca" if task.rule == "mergeguard_gsm" else "chat_template",
    }
    return {
        "task": name,
        "metric": "accuracy",
        "k": sum(correct),
        "n": len(correct),
        "dataset": dataset,
        "extra": extra,
    }
