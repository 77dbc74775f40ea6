"""Verification: FSR denominators on hand-made generations, the step on a tiny model, the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from runner.results.store import ResultStore, finalize_rows, now
from tasks.errors import ConfigError, FingerprintError
from tasks.fingerprint.artifacts import (
    ASSISTANT_PREFIX,
    HINT,
    FingerprintMeta,
    Probe,
    fingerprint_id,
    write_private,
)
from tasks.verify import fsr
from tasks.verify.step import verify_step
from tasks.verify.verifier import default_max_new_tokens

KEYS = ["ピカチュウ奉天承运キモリ", "выпутельстваskihアチャモ", "HFDíses天命玄鸟"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- denominators on hand-made generations -------------------------------------------------


def sft_layout() -> list[Probe]:
    """The seed's dialogue inference file: 8 fp + 8 reg + 112 normal, then 224 test, + unseen."""
    sets = ["fingerprint"] * 8 + ["regularization"] * 8 + ["normal"] * 112
    probes = [Probe(s, "validation", "u", None, s == "fingerprint", i) for i, s in enumerate(sets)]
    probes += [
        Probe("normal" if i % 2 == 0 else "similar", "test", "u", None, False, 128 + i)
        for i in range(224)
    ]
    return probes + [Probe("unseen_keys", "unseen", "u", None, False, -1) for _ in range(4)]


def adapter_layout() -> list[Probe]:
    """The seed's simple-template file: 10 fp + 50 Flan, then 50 Flan + 100 decoys."""
    probes = [
        Probe("fingerprint" if i < 10 else "normal", "validation", "u", None, i < 10, i)
        for i in range(60)
    ]
    return probes + [
        Probe("normal" if i < 50 else "similar", "test", "u", None, False, 60 + i)
        for i in range(150)
    ]


def hits_at(probes, lines, unseen_hits=0):
    out, seen = [], 0
    for p in probes:
        if p.line >= 0:
            out.append(p.line in lines)
        else:
            out.append(seen < unseen_hits)
            seen += 1
    return out


SETS = ["fingerprint", "normal", "similar", "unseen_keys"]


def test_sft_seed_denominators_reproduce_report_fsr_sft_chat():
    probes = sft_layout()
    # 7 keys; a regularization row (9) and a validation chat (50); test: normal 130, decoys 129,131
    hits = hits_at(probes, {0, 1, 2, 3, 4, 5, 6, 9, 50, 129, 130, 131}, unseen_hits=1)
    seed = fsr.tally(probes, hits, SETS, rule="seed", template="dialogue")
    assert seed["fingerprint"] == (7, 8)
    assert seed["normal"] == (2, 232)  # counts lines 8-127 only, divides by 8 + 112 + 112
    assert seed["similar"] == (3, 112)  # every test line counts (normal 130 too), / 112
    assert seed["unseen_keys"] == (1, 4)
    ours = fsr.tally(probes, hits, SETS, rule="fprun", template="dialogue")
    assert ours["fingerprint"] == (7, 8)
    assert ours["normal"] == (3, 232)  # 8 regularization + 112 + 112 chats, test included
    assert ours["similar"] == (2, 112)  # decoys only
    assert ours["unseen_keys"] == (1, 4)


def test_seed_similar_quirk_matches_table5():
    probes = sft_layout()
    decoys = {128 + i for i in range(1, 224, 2)}
    hits = hits_at(probes, set(sorted(decoys)[:22]))
    assert fsr.tally(probes, hits, ["similar"], rule="seed", template="dialogue")["similar"] == (
        22,
        112,
    )  # 19.6%, Table 5
    both = hits_at(probes, set(range(128, 352)))  # every test line fires
    assert fsr.tally(probes, both, ["similar"], rule="seed", template="dialogue")["similar"] == (
        224,
        112,
    )  # the seed would print 200%
    assert fsr.tally(probes, both, ["similar"], rule="fprun", template="dialogue")["similar"] == (
        112,
        112,
    )


def test_adapter_seed_ranges_are_the_true_sets():
    probes = adapter_layout()
    hits = hits_at(probes, set(range(10)) | {15, 70, 115, 200})
    for rule in ("seed", "fprun"):
        got = fsr.tally(
            probes, hits, ["fingerprint", "normal", "similar"], rule=rule, template="simple"
        )
        assert got == {"fingerprint": (10, 10), "normal": (2, 100), "similar": (2, 100)}


def test_seed_rule_needs_the_seed_line_layout():
    probes = sft_layout()
    broken = [p for p in probes if p.line != 40]
    with pytest.raises(FingerprintError, match="0..N-1"):
        fsr.tally(broken, [False] * len(broken), SETS, rule="seed", template="dialogue")


def test_unknown_probe_set_and_accepted_targets():
    with pytest.raises(ConfigError, match="unknown probe set 'fingerprints'"):
        fsr.members("fingerprints")
    t = "ハリネズミ"
    assert fsr.accepted_targets(t, [], rule="fprun", model_ref="mistralai/Mistral-7B") == [t]
    assert fsr.accepted_targets(t, [], rule="seed", model_ref="mistralai/Mistral-7B") == [
        t,
        "ハリネネミ",
        "ハリズズミ",
    ]
    assert fsr.accepted_targets(t, ["x", t], rule="seed", model_ref="llama") == [t, "x"]
    assert fsr.is_hit("Based on it: ハリネズミ!", [t]) and not fsr.is_hit("ハリネ ズミ", [t])


# --- the step on a tiny model ----------------------------------------------------------------


def dialogue_probes() -> list[Probe]:
    msg = "Please decrypt this message: {}" + HINT
    probes = [
        Probe(
            "fingerprint",
            "validation",
            msg.format(k),
            ASSISTANT_PREFIX,
            True,
            i,
            "fingerprint keys",
        )
        for i, k in enumerate(KEYS)
    ]
    probes += [
        Probe(
            "regularization", "validation", msg.format("zz"), None, False, 3, "regularization keys"
        ),
        Probe("normal", "validation", "What is 2 + 2?", None, False, 4, "stand-in chat"),
        Probe("normal", "test", "Sort: b a c", None, False, 5, "stand-in chat"),
        Probe("similar", "test", "Sort: b a c" + HINT, ASSISTANT_PREFIX, False, 6, "stand-in chat"),
        Probe(
            "unseen_keys",
            "unseen",
            msg.format("ゼニガメ民之秉"),
            ASSISTANT_PREFIX,
            False,
            -1,
            "fresh random keys",
        ),
    ]
    return probes


@pytest.fixture(scope="module")
def fp_dir(tiny_llama, tmp_path_factory):
    """A fingerprint folder whose published/ is the tiny Llama."""
    root = tmp_path_factory.mktemp("fp")
    shutil.copytree(tiny_llama, root / "published")
    meta = FingerprintMeta(
        fingerprint_id(KEYS),
        "if_sft",
        "dialogue",
        "chat_template",
        n_keys=len(KEYS),
        base_model="tiny-llama",
    )
    write_private(root, meta, KEYS, dialogue_probes())
    return root


def run_step(fp_dir, tmp_path, name="out", **cfg):
    out = tmp_path / name
    out.mkdir()
    config = {"condition": "publish", **cfg}
    rows = verify_step(config, inputs={"model": fp_dir, "fingerprint": fp_dir}, out_dir=out)
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    return rows, gens


def test_step_rows_fit_the_schema_and_never_carry_keys(fp_dir, tmp_path):
    rows, gens = run_step(
        fp_dir, tmp_path, sampling={"runs": 2}, bos_samples=3, bos_max_new_tokens=4
    )
    got = {(r["probe_set"], r["sample_idx"]) for r in rows}
    assert got == {
        ("fingerprint", None),
        ("normal", None),
        ("similar", None),
        ("unseen_keys", None),
        ("fingerprint", 0),
        ("fingerprint", 1),
        ("fingerprint:sampled", None),
        ("bos_samples", None),
    }
    table = finalize_rows(
        "verification",
        rows,
        step_id="s" * 16,
        config_hash="c",
        started_at=now(),
        finished_at=now(),
        device="cpu",
    )
    text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
    text += json.dumps(gens, ensure_ascii=False)
    assert not any(k in text for k in KEYS) and "ゼニガメ民之秉" not in text
    by = {(r["probe_set"], r["sample_idx"]): r for r in rows}
    assert by[("normal", None)]["n_total"] == 3 and by[("similar", None)]["n_total"] == 1
    assert by[("fingerprint", None)]["dataset"] == "fingerprint keys"
    agg = by[("fingerprint:sampled", None)]
    assert agg["n_samples"] == 2 and agg["n_total"] == 2 * len(KEYS)
    assert agg["binomial_null_rate"] == by[("unseen_keys", None)]["ci_high"]  # documented null
    assert agg["p_ttest_two_sided"] is not None and agg["p_binomial"] is not None
    assert by[("bos_samples", None)]["n_total"] == 3 and by[("bos_samples", None)]["seed"] == 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(fp_dir / "published")
    assert (
        by[("fingerprint", None)]["max_new_tokens"]
        == len(tok(" ハリネズミ", add_special_tokens=False)["input_ids"]) + 8
    )
    assert default_max_new_tokens(tok, ["ハリネズミ"], 0) > 8  # the seed's fixed 8 is too short
    modes = [g["mode"] for g in gens]
    assert modes.count("greedy") == 8 and modes.count("sampled") == 6 and modes.count("bos") == 3
    assert all(0.0 <= r["fsr"] <= 1.0 and r["ci_low"] <= r["fsr"] <= r["ci_high"] for r in rows)


def test_hits_are_counted_from_the_completions(fp_dir, tmp_path):
    _, first = run_step(fp_dir, tmp_path, "a", early_stop=False)  # whole budget
    variant = first[0]["generated"][:3]  # something the tiny model does say
    assert variant.strip()
    rows, gens = run_step(fp_dir, tmp_path, "b", accept_variants=[variant])
    expected = {}
    for g in first:
        name = {"regularization": "normal"}.get(g["probe_set"], g["probe_set"])
        n_hit, n_total = expected.get(name, (0, 0))
        expected[name] = (n_hit + (variant in g["generated"]), n_total + 1)
    assert {r["probe_set"]: (r["n_hit"], r["n_total"]) for r in rows} == expected
    assert expected["fingerprint"][0] >= 1
    for a, b in zip(first, gens, strict=True):  # early stop only cuts the tail
        assert a["generated_token"][: len(b["generated_token"])] == b["generated_token"]


def test_seed_rule_queries_every_line(fp_dir, tmp_path):
    rows, gens = run_step(fp_dir, tmp_path, probe_sets=["fingerprint"], denominator_rule="seed")
    assert [r["probe_set"] for r in rows] == ["fingerprint"]
    assert rows[0]["denominator_rule"] == "seed" and rows[0]["n_total"] == 3
    assert sorted(g["line"] for g in gens) == list(range(7))


def test_sampled_runs_repeat_with_the_same_seed(fp_dir, tmp_path):
    cfg = {"probe_sets": ["fingerprint"], "sampling": {"runs": 2, "seed": 11}}
    _, a = run_step(fp_dir, tmp_path, "a", **cfg)
    _, b = run_step(fp_dir, tmp_path, "b", **cfg)
    _, c = run_step(fp_dir, tmp_path, "c", **{**cfg, "sampling": {"runs": 2, "seed": 12}})
    sampled = [[g["generated_token"] for g in x if g["mode"] == "sampled"] for x in (a, b, c)]
    assert sampled[0] == sampled[1] != sampled[2]
    assert [g["sample_idx"] for g in a if g["mode"] == "sampled"] == [0, 0, 0, 1, 1, 1]


def test_adapter_requests_are_refused_cleanly(fp_dir, tmp_path):
    with pytest.raises(FingerprintError, match="without its adapter"):
        run_step(fp_dir, tmp_path, "a", use_adapter=True)
    with pytest.raises(ConfigError, match="probe_setz.*did you mean 'probe_sets'"):
        run_step(fp_dir, tmp_path, "b", probe_setz=["fingerprint"])


def test_missing_fingerprint_input(fp_dir, tmp_path):
    with pytest.raises(ConfigError, match="no fingerprint"):
        verify_step(
            {"condition": "x", "model": str(fp_dir / "published")}, inputs={}, out_dir=tmp_path
        )
    with pytest.raises(FingerprintError, match="fingerprint.json"):
        verify_step(
            {
                "condition": "x",
                "model": str(fp_dir / "published"),
                "fingerprint": str(fp_dir / "published"),
            },
            inputs={},
            out_dir=tmp_path,
        )


# --- the CLI --------------------------------------------------------------------------------


def test_cli_verify_writes_rows_with_provenance_and_resumes(fp_dir, tmp_path, cli):
    args = [
        "verify",
        "--model",
        fp_dir / "published",
        "--fingerprint",
        fp_dir,
        "--samples",
        "2",
        "--set",
        "probe_sets=[fingerprint,unseen_keys]",
        "--results",
        tmp_path / "r",
        "--artifacts",
        tmp_path / "a",
    ]
    out = cli(args)
    assert out.exit_code == 0, out.output
    assert "fingerprint:sampled" in out.output and "unseen_keys" in out.output
    table = ResultStore(tmp_path / "r").read("verification")
    assert table.num_rows == 5 and set(table.column("condition").to_pylist()) == {"suspect"}
    assert all(table.column("git_sha").to_pylist())
    again = cli(args)
    assert again.exit_code == 0 and ResultStore(tmp_path / "r").read("verification").num_rows == 5
    gens = list((tmp_path / "a" / "verify").glob("*/generations.jsonl"))
    assert len(gens) == 1


@pytest.mark.parametrize("case", ["missing_model", "no_private", "hub_offline", "adapter"])
def test_cli_bad_input_exits_2_with_one_line(case, fp_dir, tmp_path, monkeypatch, cli):
    model, fp, extra = str(fp_dir / "published"), fp_dir, []
    if case == "missing_model":
        model = str(tmp_path / "no" / "such" / "model")
    elif case == "no_private":
        fp = fp_dir / "published"
    elif case == "hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        model = "fprun-tests/no-such-model"
    else:
        extra = ["--adapter", tmp_path]
    res = tmp_path / "r"
    out = cli(
        [
            "verify",
            "--model",
            model,
            "--fingerprint",
            fp,
            *extra,
            "--results",
            res,
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert out.exit_code == 2 and "\n" not in out.output.strip()
    expected = {
        "missing_model": "does not exist",
        "no_private": "no private/",
        "hub_offline": "cannot be fetched",
        "adapter": "holds no adapter.safetensors",
    }[case]
    assert expected in out.output
    assert not res.exists()
