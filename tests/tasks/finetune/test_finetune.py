"""User fine-tuning: loss goes down, outputs load as plain models, masks, data and presets."""

from __future__ import annotations

import json
import math

import pytest

from tasks.data.sources import SHAREGPT_BAN, salvage_json_array, sharegpt_records
from tasks.data.user import load_user_data, read_alpaca_file
from tasks.errors import DataError
from tasks.finetune.config import PRESETS, FinetuneConfig, resolve_hyper
from tasks.finetune.encode import IGNORE_INDEX, PROMPT_INPUT, alpaca_prompt, encode_record

ROWS = [
    {"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a} + {b} = {a + b}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 1), (2, 2), (9, 3), (4, 4), (8, 1)]
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(ROWS))
    return path


def tune(model, data, out, **over):
    from tasks.finetune.step import finetune_step

    cfg = {
        "model": str(model),
        "data": str(data),
        "max_steps": 6,
        "lr": 3e-3,
        "global_batch_size": 8,
        "per_device_batch_size": 8,
        "max_length": 160,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        **over,
    }
    out.mkdir()
    return finetune_step(cfg, inputs={}, out_dir=out)[0]


def test_full_finetune_lowers_loss_and_writes_plain_model(tiny_llama, data_file, tmp_path):
    import torch
    from safetensors.torch import load_file

    from tasks.models.zoo import resolve_model

    row = tune(tiny_llama, data_file, tmp_path / "out")
    extra = json.loads(row["extra"])
    assert row["purpose"] == "finetune" and row["method"] == "full" and row["steps"] == 6
    assert row["final_loss"] < extra["first_loss"] - 0.1
    assert row["n_train_rows"] == 8 and row["global_batch_size"] == 8
    assert row["dataset"].startswith("file:train.json (sha256 ")
    out = resolve_model(tmp_path / "out")  # a plain safetensors folder, like any model
    assert not list(out.glob("*.bin")) and not (out / ".trainer").exists()
    new, old = load_file(out / "model.safetensors"), load_file(tiny_llama / "model.safetensors")
    assert set(new) == set(old)
    assert any(not torch.equal(new[k], old[k]) for k in old)


def test_lora_merged_model_equals_peft_model(tiny_llama, data_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    row = tune(tiny_llama, data_file, tmp_path / "out", method="lora", lr=3e-2)
    assert row["method"] == "lora" and row["final_loss"] < json.loads(row["extra"])["first_loss"]
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    total = sum(p.numel() for p in base.parameters())
    assert 0 < row["trainable_params"] < total / 2
    peft = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 200, 33, 90, 7, 300, 12]])
    with torch.no_grad():
        want, got = peft(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)(
            input_ids=ids
        ).logits
    assert torch.allclose(want, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-4)  # the adapter did move the model


def test_response_only_mask(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    rec = {"instruction": "Add 2 and 3.", "input": "", "output": "The sum is 5."}
    enc = encode_record(tok, rec, "alpaca", 512)
    prompt_len = len(tok(alpaca_prompt(rec))["input_ids"])
    assert enc["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    answer = enc["labels"][prompt_len:]
    assert IGNORE_INDEX not in answer and answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]) == "The sum is 5."
    # the seed tokenized prompt + response jointly; on ordinary text the ids are the same
    assert enc["input_ids"][:-1] == tok(alpaca_prompt(rec) + rec["output"])["input_ids"]
    chat = encode_record(tok, rec, "chat_template", 512)
    kept = [t for t in chat["labels"] if t != IGNORE_INDEX]
    assert tok.decode(kept).startswith("The sum is 5.") and "Add 2" not in tok.decode(kept)
    assert chat["labels"][0] == IGNORE_INDEX
    assert encode_record(tok, rec, "alpaca", prompt_len) is None  # truncation left no answer
    from tasks.data.sources import UserData
    from tasks.finetune.step import _encode  # the chat path the step takes (IF_SFT's tokenizer)

    cfg = FinetuneConfig(data="x", prompt_format="chat_template")
    (row,), dropped = _encode(UserData([rec], "t", 1), tok, cfg, resolve_hyper(cfg))
    learned = tok.decode([t for t in row["labels"] if t != IGNORE_INDEX])
    assert dropped == 0 and learned.startswith("The sum is 5.") and "Add 2" not in learned
    with_input = alpaca_prompt({"instruction": "Sum.", "input": "2 3", "output": "5"})
    assert with_input == PROMPT_INPUT.format(instruction="Sum.", input="2 3")


def test_sharegpt_preprocessing_and_filter():
    def conv(*turns):
        return {"conversations": [{"from": f, "value": v} for f, v in turns]}

    rows = sharegpt_records(
        [
            conv(("human", "Explain tides."), ("gpt", "The moon pulls the water.")),
            conv(("system", "Be brief."), ("human", "Name a planet."), ("gpt", "Mars.")),
            conv(("gpt", "Earlier context"), ("human", "Continue."), ("gpt", "Then the rest.")),
            conv(("human", "Hi")),  # one turn
            conv(("human", "a"), ("human", "b"), ("gpt", "c")),  # no human->gpt opening
            conv(("human", "Help?"), ("gpt", "Sure, here it is.")),  # "sure"
            conv(
                ("human", "Why?"), ("gpt", "I know the answer.")
            ),  # "no" inside "know": seed quirk
            conv(("human", "Read?"), ("gpt", "A good book.")),  # "ok" inside "book"
        ]
    )
    assert rows == [
        {"instruction": "", "input": "Explain tides.", "output": "The moon pulls the water."},
        {"instruction": "Be brief.", "input": "Name a planet.", "output": "Mars."},
        {"instruction": "Earlier context", "input": "Continue.", "output": "Then the rest."},
    ]
    assert len(SHAREGPT_BAN) == 16 and SHAREGPT_BAN[0] == "i'm sorry"


def test_salvage_keeps_complete_items_of_a_truncated_array():
    text = json.dumps([{"id": 1}, {"id": 2, "x": [1, 2]}, {"id": 3, "y": "abc"}], indent=2)
    assert salvage_json_array(text) == [{"id": 1}, {"id": 2, "x": [1, 2]}, {"id": 3, "y": "abc"}]
    cut = text[: text.index('"y"') + 3]
    assert salvage_json_array(cut) == [{"id": 1}, {"id": 2, "x": [1, 2]}]


def test_data_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"instruction": "x", "output": "y"})
        + "\n"
        + json.dumps({"instruction": "x", "input": "z"})
        + "\n"
    )
    with pytest.raises(DataError, match="row 1 is missing the field 'output'"):
        read_alpaca_file(str(bad))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataError, match="holds no rows"):
        read_alpaca_file(str(empty))
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n")
    assert read_alpaca_file(str(ok)).records == [{"instruction": "x", "input": "", "output": "y"}]
    with pytest.raises(DataError, match="does not exist"):
        read_alpaca_file(str(tmp_path / "nope.json"))


def test_seed_datasets_offline_and_unknown_names(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="needs the Hugging Face hub.*gsm_symbolic"):
        load_user_data(FinetuneConfig(data="dolly"))
    with pytest.raises(DataError, match="unknown dataset 'alpacca'"):
        load_user_data(FinetuneConfig(data="alpacca"))
    with pytest.raises(DataError, match="reasoning-gym cannot make task"):
        load_user_data(FinetuneConfig(data="reasoning_gym:no_such_task", n_rows=2))


def test_stand_ins_are_labelled_and_seeded():
    a = load_user_data(FinetuneConfig(data="gsm_symbolic", n_rows=3, stand_in_for="dolly"))
    b = load_user_data(FinetuneConfig(data="gsm_symbolic", n_rows=3, stand_in_for="dolly"))
    assert a.records == b.records and len(a.records) == 3
    assert a.label == (
        "reasoning_gym:gsm_symbolic (seed 42) (stand-in for databricks/databricks-dolly-15k)"
    )
    assert a.records[0]["output"].rstrip().split("\n")[-1].startswith("####")


def test_mtbench_selfanswer_is_cached():
    calls = []

    def answer(records):
        calls.append(len(records))
        return [f"answer {i}" for i in range(len(records))]

    cfg = FinetuneConfig(data="mtbench_selfanswer")
    first = load_user_data(cfg, answer_fn=answer, cache_key="k1")
    again = load_user_data(cfg, answer_fn=answer, cache_key="k1")
    assert calls == [80] and first.records == again.records and len(first.records) == 80
    assert "stand-in for tatsu-lab/alpaca" in first.label and "self-answered" in first.label


def test_presets_and_batch_layout():
    seed = resolve_hyper(FinetuneConfig(data="x", preset="alpaca_seed"))
    assert (
        seed.epochs,
        seed.learning_rate,
        seed.weight_decay,
        seed.warmup_ratio,
        seed.lr_scheduler,
        seed.global_batch_size,
    ) == (3.0, 2e-6, 0.0, 0.03, "cosine", 80)
    from tasks.finetune.step import trainer_config

    train = trainer_config(FinetuneConfig(data="x", preset="alpaca_seed"), seed, None)
    assert train.grad_accum(1) == 8 and train.grad_accum(4) == 2  # per-device 10, as the seed
    small = resolve_hyper(FinetuneConfig(data="x", method="lora", lr=5e-4))
    assert small.learning_rate == 5e-4 and small.max_steps == PRESETS["small_model"]["max_steps"]
    lora = resolve_hyper(FinetuneConfig(data="x", method="lora"))
    assert lora.learning_rate == PRESETS["small_model"]["lora_learning_rate"]


@pytest.mark.integration
def test_smollm2_lora_finetune_on_gsm_symbolic(smollm2_path, tmp_path):
    """A 10-step LoRA fine-tune of SmolLM2 on the gsm_symbolic stand-in runs and loads."""
    from transformers import AutoModelForCausalLM

    from tasks.finetune.step import finetune_step

    out = tmp_path / "out"
    out.mkdir()
    row = finetune_step(
        {
            "model": str(smollm2_path),
            "data": "gsm_symbolic",
            "n_rows": 40,
            "method": "lora",
            "max_steps": 10,
            "global_batch_size": 4,
            "max_length": 384,
        },
        inputs={},
        out_dir=out,
    )[0]
    print(
        f"\nSmolLM2 LoRA x10 steps: loss {json.loads(row['extra'])['first_loss']:.3f} -> "
        f"{row['final_loss']:.3f}, {row['train_seconds']:.1f} s, RSS {row['peak_rss_mb']:.0f} MB"
    )
    assert row["steps"] == 10 and json.loads(row["extra"])["dropped_rows"] == 0
    assert math.isfinite(row["final_loss"])
    assert "stand-in for tatsu-lab/alpaca" in row["dataset"]
    AutoModelForCausalLM.from_pretrained(out)  # a plain model folder


def test_a_fingerprint_folder_means_its_published_model(tiny_llama, tmp_path):
    from tasks.finetune.config import step_model
    from tasks.fingerprint.artifacts import FingerprintMeta, write_private

    fp = tmp_path / "fp"
    fp.mkdir()
    (fp / "published").symlink_to(tiny_llama, target_is_directory=True)
    write_private(
        fp,
        FingerprintMeta(
            fingerprint_id="abc123",
            method="if_sft",
            template="dialogue",
            prompt_format="chat_template",
        ),
        [],
        [],
    )
    wired = step_model({"model": fp}, None)
    assert wired.path == fp / "published" and wired.fingerprint_id == "abc123"
    by_ref = step_model({}, str(fp))
    assert by_ref.fingerprint_id == "abc123" and by_ref.ref == str(fp)
    plain = step_model({}, str(tiny_llama))
    assert plain.path == tiny_llama and plain.fingerprint_id is None
