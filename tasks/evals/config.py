"""Config of the utility-eval step (torch-free): refusal, math, perplexity, lm-eval.

Each suite has its own options block; the step reads only the block of its ``suite``. Defaults
are fprun's (completion-only refusal check, chat template, CPU-sized generation budgets); the
seed's settings are named options (``refusal_scope: seed_prompt_and_completion``,
``rule: mergeguard_gsm``, ``sampling: seed``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.config import Strict
from tasks.models.device import DeviceName

# The seed's run_eval.py task list (headqa = headqa_en + headqa_es).
HARMLESSNESS_TASKS = [
    "anli_r1",
    "anli_r2",
    "anli_r3",
    "arc_challenge",
    "arc_easy",
    "piqa",
    "openbookqa",
    "headqa",
    "winogrande",
    "logiqa",
    "sciq",
    "hellaswag",
    "boolq",
    "cb",
    "cola",
    "rte",
    "wic",
    "wsc",
    "copa",
    "record",
    "multirc",
    "lambada_openai",
    "lambada_standard",
    "mmlu",
]
# An easy setting the base SmolLM2 can do (its gsm_symbolic accuracy is near zero, so that
# cannot show harm): the sum of two one-digit numbers. Measured on SmolLM2-135M-Instruct (40
# problems, greedy, 24 new tokens): this 62%; two digits 22%; with "-" as well 35%;
# reasoning-gym's default mix (2-6 terms of up to 4 digits, all four operators, parentheses,
# negation) 2.5%.
EASY_ARITHMETIC: dict[str, Any] = {
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 1,
    "operators": ["+"],
    "allow_parentheses": False,
    "allow_negation": False,
}


class RefusalOptions(Strict):
    """Refusal rate on harmful prompts by MergeGuard's 29-substring test (its eval_safe.py)."""

    prompts: Literal["strongreject_small", "strongreject", "harmbench"] = Field(
        "strongreject_small",
        description="strongreject_small: 60 rows (MergeGuard used its own "
        "50-row subset); strongreject: 313; harmbench: 320 test behaviours",
    )
    n: int | None = Field(None, ge=1, description="use only the first n prompts")
    prompt_format: Literal["chat_template", "raw"] = Field(
        "chat_template", description="raw: the prompt text alone, as MergeGuard fed it"
    )
    sampling: Literal["seed", "greedy"] = Field(
        "seed", description="seed: do_sample at temperature 0.2 (eval_safe.py); greedy"
    )
    temperature: float = Field(0.2, gt=0)
    max_new_tokens: int = Field(128, ge=1, description="MergeGuard: 1024 (CPU budget here)")
    match_straight_apostrophes: bool = Field(
        False,
        description="also count the 7 curly-apostrophe strings written with a straight "
        "' (MergeGuard's list has only the curly form, which many tokenizers never produce)",
    )
    refusal_scope: Literal["completion", "seed_prompt_and_completion"] = Field(
        "completion",
        description="search the completion only (fprun) or prompt + completion, "
        "as MergeGuard's pipeline output held both",
    )


class MathTask(Strict):
    """One math task: a seeded reasoning-gym set, a prompt and an answer-extraction rule."""

    task: str = Field("basic_arithmetic", description="reasoning-gym task name")
    n: int = Field(200, ge=1, description="problems (N >= 200 for the utility check)")
    seed: int = Field(0, description="reasoning-gym dataset seed")
    task_config: dict[str, Any] = Field(default_factory=dict, description="generator options")
    rule: Literal["fprun", "mergeguard_gsm"] = Field(
        "fprun",
        description="fprun: chat prompt, last number of the completion; mergeguard_gsm: "
        "eval_math.py's Alpaca prompt, 'The answer is: ' split, number regex, fractions",
    )
    sampling: Literal["greedy", "mergeguard"] = Field(
        "greedy", description="mergeguard: T=0.8, top_k 50, top_p 0.95 (eval_math.py)"
    )
    max_new_tokens: int = Field(
        128,
        ge=1,
        description="MergeGuard: 1024; rows that reach it "
        "are counted as 'truncated' in extra (at 64, 28 of SmolLM2's 200 "
        "verbose arithmetic answers were cut before the result)",
    )
    answer_scope: Literal["completion", "seed_prompt_and_completion"] = Field(
        "completion",
        description="mergeguard_gsm only: search the completion (fprun) or prompt + "
        "completion as eval_math.py did, where a missing 'The answer is: ' falls back to the "
        "prompt's own text",
    )
    label: str | None = Field(None, description="task column (default: task, plus /rule)")


class MathOptions(Strict):
    tasks: list[MathTask] = Field(
        default_factory=lambda: [
            MathTask(task="basic_arithmetic", n=200, task_config=EASY_ARITHMETIC),
            MathTask(task="gsm_symbolic", n=50, max_new_tokens=256),
        ],
        min_length=1,
    )


class PerplexityOptions(Strict):
    text: str = Field(
        "in_the_year_2889",
        description="in_the_year_2889 (reasoning-gym's public-"
        "domain Jules Verne text) or a path to a UTF-8 text file",
    )
    chunk_tokens: int = Field(
        256,
        ge=2,
        description="fixed, non-overlapping chunk length; the last partial chunk is dropped",
    )
    max_chunks: int | None = Field(None, ge=1, description="score only the first chunks")


class LmEvalOptions(Strict):
    tasks: list[str] = Field(default_factory=lambda: list(HARMLESSNESS_TASKS), min_length=1)
    num_fewshot: int = Field(0, ge=0, description="the seed ran 0, 1 and 5")
    limit: int | None = Field(None, ge=1, description="examples per task (None: all)")


class EvalConfig(Strict):
    """One model x one suite."""

    suite: Literal["refusal", "math", "perplexity", "lm_eval"]
    model: str | None = Field(None, description="model ref when no upstream model is wired in")
    model_identity: str | None = Field(None, description="content hash of a local model folder")
    model_step_id: str | None = Field(None, description="step that produced the model (rows)")
    refusal: RefusalOptions = RefusalOptions()
    math: MathOptions = MathOptions()
    perplexity: PerplexityOptions = PerplexityOptions()
    lm_eval: LmEvalOptions = LmEvalOptions()
    batch_size: int = Field(16, ge=1, description="prompts per generate() / chunks per forward")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(0, description="sampling seed")
    ci_method: Literal["exact", "wilson"] = Field(
        "exact", description="95% interval: exact = Clopper-Pearson, or Wilson"
    )
