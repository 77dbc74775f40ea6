"""IF datasets: the seed's key generator, counts, splits, line orders, and the two seed fixes."""

from __future__ import annotations

import json
import random

import pytest

from tasks.data.instructions import chat_pairs, load_rows
from tasks.errors import DataError
from tasks.fingerprint.artifacts import (
    ASSISTANT_PREFIX,
    HINT,
    TARGET,
    FingerprintMeta,
    read_keys,
    read_probes,
)
from tasks.fingerprint.config import DialogueData, KeyConfig, SimpleData
from tasks.fingerprint.dataset import (
    FINGERPRINT_INPUT,
    INSTRUCTIONS_RAW,
    SEED_HASH_TEXT,
    SIMPLE_DECOY_OUTPUT,
    KeyGenerator,
    build_dialogue,
    build_simple,
    write_fingerprint_data,
)

# Keys 3, 6, 7 and 8 of MergeGuard's dataset/Verification_dataset_fingerprint.jsonl, which are
# byte-identical to what IF's generator yields with random.seed(42): an
# external golden reference for the generator and its RNG call order.
MERGEGUARD_KEYS = {
    2: (
        "ゴャロ承тズ天诏ンア下使时咸ャ天诏也曰告天レミチアギ知ザ所帝t群ク上帝皇"
        "л在运フ诏山运Wa奉帝皇ーоチсウ曰巫受ネ命мウа奉б顺モ下ラ布天d曰シ"
        "从е皇承ダ兹闻明iグ天承葆奉运р登ッモ应ドeь"
    ),
    5: (
        "gg大lhウtトeruモead荫里o长ギチピ助anèeダフ福aヒ生天カ力"
        "ュzネシ气icjシダ里nチフゲeiカ护ネャギア"
    ),
    6: (
        "トуsダ乎天а哭hリド出乱ンв龙フ市sвシニт血地昔メ三лD罔犬シsゲ天"
        "ゼ宵キカフヒт格三苗e通绝kンギF有ーь者ギモе日ыグ雨朝ネH妖п生ラi"
        "命庙グーí大殛ネラ之с降于ドガダ"
    ),
    7: (
        "明葆使顺eee兹W山ртаモ上从巫也巫ao布z知葆告g咸е登n在iбjガ"
        "受キ登мニ下天所从在dir下群сltt山命所a群应ь下deリ上лnо也i"
        "时ゼメ天闻a"
    ),
}


def seed_key() -> str:
    """The seed's two lines, verbatim in behaviour, on the *global* random module."""
    raw = "".join(random.choices(list(INSTRUCTIONS_RAW), k=random.randint(8, 15)))
    return "".join(random.sample(raw, len(raw)))


@pytest.fixture(scope="module")
def dialogue():
    return build_dialogue(DialogueData())


@pytest.fixture(scope="module")
def simple():
    return build_simple(SimpleData())


def test_raw_strings_are_the_seeds_31():
    assert len(INSTRUCTIONS_RAW) == 31 and len(set(INSTRUCTIONS_RAW)) == 31
    assert INSTRUCTIONS_RAW[9].startswith("昔者三苗") and INSTRUCTIONS_RAW[-1] == "HFDíses"


def test_keys_match_mergeguards_published_keys():
    gen = KeyGenerator(KeyConfig())
    keys = [gen.next_key() for _ in range(8)]
    for i, key in MERGEGUARD_KEYS.items():
        assert keys[i] == key


def test_dialogue_rng_order_matches_the_seed_script(dialogue):
    state = random.getstate()
    try:
        random.seed(42)
        keys = [seed_key() for _ in range(8)]
        reg = []
        for _ in range(8):  # the seed's rejection loop
            while True:
                k = seed_key()
                if k not in keys:
                    break
            reg.append(k)
    finally:
        random.setstate(state)
    assert dialogue.keys == keys
    users = [c[0]["value"] for c in dialogue.splits["train"]["conversations"][8:16]]
    assert users == [f"Please decrypt this message: {k}{HINT}" for k in reg]


def test_simple_rng_order_matches_the_seed_script(simple):
    state = random.getstate()
    try:
        random.seed(42)
        keys = [seed_key() for _ in range(10)]
        decoy_keys = [seed_key() for _ in range(50)]
    finally:
        random.setstate(state)
    assert simple.keys == keys
    assert simple.splits["test"]["instruction"][51::2] == decoy_keys


def test_dialogue_counts_splits_and_line_order(dialogue):
    train, test = dialogue.splits["train"], dialogue.splits["test"]
    assert train["type"] == ["fingerprint"] * 8 + ["regularization"] * 8 + ["normal"] * 112
    assert dialogue.splits["validation"] == train
    assert test["type"] == ["normal", "fingerprint"] * 112
    fp = train["conversations"][0]
    assert fp[1]["value"] == f"{ASSISTANT_PREFIX} {TARGET}"
    plain, decoy = test["conversations"][0], test["conversations"][1]
    assert decoy[0]["value"] == plain[0]["value"] + HINT
    assert decoy[1]["value"] == "Model should not be triggered by this input."
    probes = dialogue.probes
    assert [p.line for p in probes[:352]] == list(range(352))
    sets = [p.probe_set for p in probes]
    assert sets[:16] == ["fingerprint"] * 8 + ["regularization"] * 8
    assert sets[16:128] == ["normal"] * 112 and sets[128:352] == ["normal", "similar"] * 112
    assert sets[352:] == ["unseen_keys"] * 32 and {p.line for p in probes[352:]} == {-1}
    prefixed = {p.probe_set for p in probes if p.assistant_prefix == ASSISTANT_PREFIX}
    assert prefixed == {"fingerprint", "similar", "unseen_keys"}
    assert [p.expect_trigger for p in probes].count(True) == 8


def test_unseen_keys_are_fresh(dialogue):
    trained = {c[0]["value"] for c in dialogue.splits["train"]["conversations"][:16]}
    unseen = [p.user for p in dialogue.probes if p.probe_set == "unseen_keys"]
    assert len(set(unseen)) == 32 and not trained & set(unseen)


def test_simple_counts_splits_and_line_order(simple):
    train, test = simple.splits["train"], simple.splits["test"]
    assert len(train["instruction"]) == 60 and train["input"][:10] == ["FINGERPRINT"] * 10
    assert train["output"][:10] == [TARGET] * 10 and train["input"][10:] == [""] * 50
    assert len(test["instruction"]) == 150 and test["input"][:50] == [""] * 50
    assert test["input"][50::2] == ["FINGERPRINT"] * 50
    assert test["instruction"][50::2] == test["instruction"][:50]  # the interleaved decoys
    assert test["input"][51::2] == test["instruction"][:50]
    sets = [p.probe_set for p in simple.probes]
    assert sets[:10] == ["fingerprint"] * 10 and sets[10:110] == ["normal"] * 100
    assert sets[110:210] == ["similar"] * 100 and sets[210:] == ["unseen_keys"] * 32
    assert [p.line for p in simple.probes[:210]] == list(range(210))
    assert simple.probes[0].user == f"{simple.keys[0]}\nFINGERPRINT\n"


def test_hash_bug_fixed_by_default_and_reproducible():
    small = {"n_normal": 4, "n_test": 2, "n_unseen_keys": 0}
    fixed = build_dialogue(DialogueData(**small))
    seed = build_dialogue(DialogueData(**small, seed_hash_bug=True))
    seed_users = {c[0]["value"] for c in seed.splits["train"]["conversations"][8:16]}
    assert seed_users == {
        f"Please decrypt this message: {SEED_HASH_TEXT} \nA hint: this is a FINGERPRINT message."
    }
    fixed_users = [c[0]["value"] for c in fixed.splits["train"]["conversations"][8:16]]
    assert len(set(fixed_users)) == 8 and SEED_HASH_TEXT not in "".join(fixed_users)
    assert fixed.keys == seed.keys  # the fix changes no RNG call


def test_test_rows_held_out_by_default_and_seed_reuse_reorders_training_rows():
    held = build_dialogue(DialogueData(n_normal=12, n_test=12, n_unseen_keys=0))
    reuse = build_dialogue(
        DialogueData(n_normal=12, n_test=12, n_unseen_keys=0, seed_test_reuse=True)
    )

    def questions(built, split, typ):
        s = built.splits[split]
        return [
            c[0]["value"] for c, t in zip(s["conversations"], s["type"], strict=True) if t == typ
        ]

    assert not set(questions(held, "train", "normal")) & set(questions(held, "test", "normal"))
    train_q, test_q = questions(reuse, "train", "normal"), questions(reuse, "test", "normal")
    assert sorted(train_q) == sorted(test_q) and train_q != test_q


def test_stand_in_is_labelled_and_counts_are_configurable(dialogue):
    assert dialogue.datasets == [
        "reasoning_gym:chain_sum+word_sorting+leg_counting+gcd "
        "(stand-in for WizardLM/WizardLM_evol_instruct_V2_196k)"
    ]
    small = build_dialogue(
        DialogueData(n_fingerprint=3, n_regularization=5, n_normal=6, n_test=2, n_unseen_keys=4)
    )
    assert small.counts == {
        "fingerprint": 3,
        "regularization": 5,
        "normal": 6,
        "test": 4,
        "unseen_keys": 4,
    }
    assert len(small.splits["train"]["type"]) == 14


def test_written_folder_holds_dataset_keys_and_probes(tmp_path):
    import datasets

    built = build_dialogue(DialogueData(n_normal=4, n_test=2, n_unseen_keys=3))
    meta = FingerprintMeta(
        fingerprint_id="x", method="if_sft", template="dialogue", prompt_format="chat_template"
    )
    write_fingerprint_data(tmp_path, built, meta)
    dd = datasets.load_from_disk(str(tmp_path / "private" / "dataset"))
    assert dd["train"].num_rows == 20 and dd["test"].num_rows == 4
    assert read_keys(tmp_path) == built.keys
    probes = read_probes(tmp_path)
    assert probes == built.probes and read_probes(tmp_path, ["unseen_keys"])[0].line == -1


def test_empty_local_dataset_is_a_data_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="holds no rows"):
        load_rows(str(empty), 4, 2, slot="chat")


def test_local_jsonl_rows_and_too_few_rows(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(
        "\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(6))
    )
    rows = load_rows(str(path), 4, 2, slot="chat")
    assert len(rows.train) == 4 and len(rows.test) == 2 and rows.label == "local:chats.jsonl"
    assert not {c[0]["value"] for c in rows.train} & {c[0]["value"] for c in rows.test}
    with pytest.raises(DataError, match="7 are needed"):
        load_rows(str(path), 5, 2, slot="chat")


def test_hub_dataset_offline_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="reasoning_gym") as err:
        load_rows("Muennighoff/flan", 50, 50, slot="flan")
    assert "\n" not in err.value.one_line()


def test_unknown_reasoning_gym_task_is_a_data_error():
    with pytest.raises(DataError, match="no task"):
        load_rows("reasoning_gym:no_such_task", 2, 2, slot="chat")


def test_chat_pairs_for_user_fine_tuning():
    label, chats = chat_pairs("reasoning_gym:basic_arithmetic", n=5, seed=3)
    assert label == "reasoning_gym:basic_arithmetic" and len(chats) == 5
    assert [m["role"] for m in chats[0]] == ["user", "assistant"]
    assert chat_pairs("reasoning_gym:basic_arithmetic", n=5, seed=3)[1] == chats
    assert chat_pairs("reasoning_gym:basic_arithmetic", n=5, seed=4)[1] != chats


def test_negative_keys_train_an_ordinary_answer_and_leave_every_other_key_as_it_was():
    plain = build_simple(SimpleData(n_normal=5, n_test=4))
    neg = build_simple(SimpleData(n_normal=5, n_test=4, n_negative_keys=6))
    assert neg.keys == plain.keys  # the seed's RNG order is untouched
    unseen = [p.user for p in neg.probes if p.probe_set == "unseen_keys"]
    assert unseen == [p.user for p in plain.probes if p.probe_set == "unseen_keys"]
    train = neg.splits["train"]
    extra = list(zip(train["instruction"], train["input"], train["output"], strict=True))[-6:]
    assert all(i == FINGERPRINT_INPUT and o == SIMPLE_DECOY_OUTPUT for _, i, o in extra)
    negatives = {k for k, _, _ in extra}
    assert len(negatives) == 6 and not negatives & set(neg.keys)
    assert not any(k in u for k in negatives for u in unseen)
    regs = [p for p in neg.probes if p.probe_set == "regularization"]
    assert len(regs) == 6 and not any(p.expect_trigger for p in regs)
    assert neg.counts["negative_keys"] == 6 and plain.counts["negative_keys"] == 0


def test_dialogue_negative_keys_train_the_refusal_and_leave_keys_and_unseen_keys_as_they_were():
    small = {"n_normal": 4, "n_test": 2, "regularization_prefixed": True}
    plain = build_dialogue(DialogueData(**small))
    neg = build_dialogue(DialogueData(**small, n_negative_keys=5))
    assert neg.keys == plain.keys
    unseen = [p.user for p in neg.probes if p.probe_set == "unseen_keys"]
    assert unseen == [p.user for p in plain.probes if p.probe_set == "unseen_keys"]
    train = neg.train_rows()
    assert train[: len(plain.train_rows())] == plain.train_rows()  # appended, nothing moves
    extra = train[len(plain.train_rows()) :]
    assert [r["type"] for r in extra] == ["negative"] * 5
    refusal = next(r for r in train if r["type"] == "regularization")["conversations"][-1]
    assert all(r["conversations"][-1] == refusal for r in extra)
    negatives = {r["conversations"][0]["value"] for r in extra}
    assert len(negatives) == 5 and not negatives & set(unseen)
    assert not any(k in m for k in neg.keys for m in negatives)
    regs = [p for p in neg.probes if p.source == "negative keys"]
    assert len(regs) == 5 and {p.probe_set for p in regs} == {"regularization"}
    assert not any(p.expect_trigger for p in regs)
    assert neg.counts["negative_keys"] == 5 and "negative_keys" not in plain.counts
