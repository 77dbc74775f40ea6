"""HuRef token selection: strings not ids, the seed's corpus rule, caching, errors."""

from __future__ import annotations

import json

import pytest

from tasks.errors import ConfigError, DataError
from tasks.huref import tokens as tok
from tasks.huref.config import TokenConfig
from tasks.huref.tokens import TokenizerView, select_tokens


def test_models_sharing_a_tokenizer_get_the_identical_token_set(tiny_llama, tiny_neox, tiny_gpt2):
    sets = [select_tokens(p, TokenConfig(), 200) for p in (tiny_llama, tiny_neox, tiny_gpt2)]
    assert len({s.tokens for s in sets}) == 1 and len({s.hash for s in sets}) == 1
    assert len(set(sets[0].tokens)) == 200


def test_vocab_rank_takes_highest_rank_ordinary_tokens_in_ascending_rank(tiny_llama):
    view = TokenizerView(tiny_llama)
    ts = select_tokens(tiny_llama, TokenConfig(), 50)
    ordinary_ids = [i for _, i in view.ordinary]
    assert list(ts.ids) == ordinary_ids[-50:] and list(ts.ids) == sorted(ts.ids)
    assert not set(ts.ids) & view.special_ids


def test_k_larger_than_vocabulary_is_a_config_error(tiny_llama):
    with pytest.raises(ConfigError, match="exceeds the .* ordinary tokens"):
        select_tokens(tiny_llama, TokenConfig(), 5000)


def test_corpus_strategy_follows_the_seeds_sort(tiny_llama, tmp_path):
    """Sorted by (count, id) descending, specials and unseen tokens dropped, last K kept."""
    import numpy as np

    text = "alpha beta beta gamma gamma gamma\n\nzeta zeta alpha <|im_end|> delta"
    corpus = tmp_path / "c.txt"
    corpus.write_text(text)
    cfg = TokenConfig(strategy="corpus", corpus=[str(corpus)])
    view = TokenizerView(tiny_llama)
    counts = np.zeros(max(view.vocab.values()) + 1, dtype=int)
    for para in text.split("\n\n"):
        for i in view.tokenizer.encode(para, add_special_tokens=False).ids:
            counts[i] += 1
    seen = [i for i in np.flatnonzero(counts) if i not in view.special_ids]
    expected = sorted(seen, key=lambda i: (counts[i], i), reverse=True)[-4:]
    ts = select_tokens(tiny_llama, cfg, 4)
    assert list(ts.ids) == [int(i) for i in expected]
    with pytest.raises(DataError, match="fewer than k=500"):
        select_tokens(tiny_llama, cfg, 500)


def test_builtin_corpus_and_seed_script_filter(tiny_llama):
    cfg = TokenConfig(
        strategy="corpus", corpus=["reasoning_gym:in_the_year_2889"], latin_cyrillic_only=True
    )
    ts = select_tokens(tiny_llama, cfg, 100)
    assert len(ts.ids) == 100 and ts.source.startswith("corpus:reasoning_gym")


def test_empty_corpus_and_missing_file_are_data_errors(tiny_llama, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no documents"):
        select_tokens(
            tiny_llama, TokenConfig(strategy="corpus", corpus=[str(tmp_path / "empty.txt")]), 4
        )
    with pytest.raises(DataError, match="does not exist"):
        select_tokens(
            tiny_llama, TokenConfig(strategy="corpus", corpus=[str(tmp_path / "nope.txt")]), 4
        )


def test_selection_is_cached_on_disk_without_parsing_the_tokenizer(
    tiny_llama, monkeypatch, fprun_cache
):
    first = select_tokens(tiny_llama, TokenConfig(), 64)
    tok.clear_memo()

    def boom(self):
        raise AssertionError("tokenizer parsed on a cache hit")

    monkeypatch.setattr(TokenizerView, "tokenizer", property(boom))
    again = select_tokens(tiny_llama, TokenConfig(), 64)
    assert again == first
    assert list((fprun_cache / "huref" / "tokens").glob("*.json"))


def test_file_strategy_reuses_a_base_models_token_strings(tiny_llama, tmp_path):
    base = select_tokens(tiny_llama, TokenConfig(), 32)
    (tmp_path / "huref.json").write_text(json.dumps({"tokens": list(base.tokens)}))
    again = select_tokens(
        tiny_llama, TokenConfig(strategy="file", file=str(tmp_path / "huref.json")), 32
    )
    assert again.tokens == base.tokens and again.hash == base.hash
    (tmp_path / "bad.json").write_text(json.dumps(["definitely-not-a-token-xyz"] * 32))
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        select_tokens(tiny_llama, TokenConfig(strategy="file", file=str(tmp_path / "bad.json")), 32)


def test_unknown_strategy_is_rejected_by_the_config():
    with pytest.raises(ValueError, match="unknown token strategy"):
        TokenConfig(strategy="wikipedia")
