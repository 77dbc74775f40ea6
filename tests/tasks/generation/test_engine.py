"""The verification generation engine against plain one-prompt-at-a-time ``generate`` (fp32).

Reference = ``model.generate`` on each prompt alone, greedy: the seed's way. The engine must give
the same tokens up to each row's stop, whatever the batch size, chunking, draft or early stop.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.generation.engine import SamplingParams, generate, row_seed
from tasks.models.zoo import resolve_model

MAX_NEW = 12


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls are slower multi-threaded on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load(path):
    tok = AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tok


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return load(tiny_llama)


def prompts(n=9, seed=1, shared=0):
    rng = random.Random(seed)
    head = [rng.randrange(4, 1000) for _ in range(shared)]  # a common system prompt
    return [head + [rng.randrange(4, 1000) for _ in range(rng.randint(3, 40))] for _ in range(n)]


def reference(model, ps, max_new=MAX_NEW):
    out = []
    with torch.inference_mode():
        for p in ps:
            x = torch.tensor([p])
            o = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False
            )
            out.append(o[0, len(p) :].tolist())
    return out


def assert_prefix_identical(gens, refs):
    for i, (g, r) in enumerate(zip(gens, refs, strict=True)):
        assert g.tokens == r[: len(g.tokens)], f"row {i} differs"
        if g.stop == "length":
            assert g.tokens == r, f"row {i} stopped early without a reason"


@pytest.mark.parametrize(
    "family", ["tiny_llama", "tiny_neox", "tiny_gpt2", "tiny_qwen2", "tiny-mistral"]
)
def test_batched_greedy_equals_one_at_a_time(family, request):
    path = (
        resolve_model(family)
        if family == "tiny-mistral"  # sliding-window cache path
        else request.getfixturevalue(family)
    )
    model, tok = load(path)
    for ps in (prompts(), prompts(shared=20)):  # the second shares a 20-token prefix pass
        refs = reference(model, ps)
        # one batch; several batches; small prefill chunks joined into one decode batch
        for kw in ({}, {"batch_size": 4}, {"prefill_tokens": 60}):
            gens = generate(model, tok, ps, max_new_tokens=MAX_NEW, **kw)
            assert [g.stop for g in gens] == ["length"] * len(ps)
            assert_prefix_identical(gens, refs)


def test_left_padding_sees_the_unpadded_positions(llama):
    model, tok = llama
    short, long = [5, 6, 7], list(range(10, 60))
    alone = generate(model, tok, [short], max_new_tokens=MAX_NEW)[0]
    padded = generate(model, tok, [long, short], max_new_tokens=MAX_NEW)[1]
    assert padded.tokens == alone.tokens == reference(model, [short])[0]


def test_stop_string_stops_exactly_where_the_text_first_shows_it(llama):
    model, tok = llama
    ps = prompts()
    refs = reference(model, ps)
    stop = tok.decode(refs[2][3:6])
    first = next(i for i in range(1, MAX_NEW + 1) if stop in tok.decode(refs[2][:i]))
    gens = generate(model, tok, ps, max_new_tokens=MAX_NEW, stop_strings=[stop])
    assert gens[2].stop == "target" and len(gens[2].tokens) == first
    assert_prefix_identical(gens, refs)
    for g in gens:
        assert (stop in g.text) == (g.stop == "target")


def test_eos_stops_a_row_like_generate(llama):
    model, tok = llama
    ps = prompts()
    first = reference(model, ps)[0]
    k = max(i for i, t in enumerate(first) if t not in first[:i])  # a first occurrence
    eos = first[k]
    model.generation_config.eos_token_id = eos
    try:
        refs = reference(model, ps)  # generate also stops there now
        gens = generate(model, tok, ps, max_new_tokens=MAX_NEW)
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    assert gens[0].stop == "eos" and gens[0].tokens == first[: k + 1]
    assert_prefix_identical(gens, refs)


class Counter:
    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


def test_a_matching_draft_answers_in_the_prompt_pass(llama):
    model, tok = llama
    ps = prompts(4)
    refs = reference(model, ps)
    draft = refs[1][:5]
    counter = Counter(model)
    try:
        gens = generate(model, tok, [ps[1]], max_new_tokens=6, draft=draft)
        assert counter.n == 1  # prefill only: 5 accepted draft tokens + the one after
        assert gens[0].tokens == refs[1][:6]
        counter.n = 0
        wrong = generate(model, tok, ps, max_new_tokens=MAX_NEW, draft=[7, 8, 9])
        assert_prefix_identical(wrong, refs)
        partial = generate(model, tok, ps, max_new_tokens=MAX_NEW, draft=refs[0][:2] + [3, 3])
        assert_prefix_identical(partial, refs)
    finally:
        counter.handle.remove()


def test_greedy_draft_with_mixed_rows_is_exact(llama):
    """Rows that take the draft and rows that reject it (and chunks that then skip it) still get
    exactly their greedy tokens; rows that all take it finish in the prompt pass."""
    model, tok = llama
    base = prompts(4)
    refs = reference(model, base)
    ps = [base[0], base[0], base[0], base[1], base[2]]
    want = [refs[0], refs[0], refs[0], refs[1], refs[2]]
    assert sum(r[0] == refs[0][0] for r in want) * 2 >= len(want)
    counter = Counter(model)
    try:
        for budget in (2000, 30):  # one chunk; several chunks (later ones skip the draft)
            gens = generate(
                model, tok, ps, max_new_tokens=MAX_NEW, draft=refs[0][:6], prefill_tokens=budget
            )
            assert_prefix_identical(gens, want)
        counter.n = 0
        solo = generate(model, tok, ps[:3], max_new_tokens=6, draft=refs[0][:6])
        assert [g.tokens for g in solo] == [refs[0][:6]] * 3
        assert counter.n == 1  # the prompt pass alone
    finally:
        counter.handle.remove()


def test_draft_with_stop_string_and_budget(llama):
    model, tok = llama
    ps = prompts(3)
    refs = reference(model, ps)
    stop = tok.decode(refs[0][:4])
    gens = generate(model, tok, ps, max_new_tokens=3, stop_strings=[stop], draft=refs[0][:8])
    assert all(len(g.tokens) <= 3 for g in gens)
    assert_prefix_identical(gens, [r[:3] for r in refs])


def test_sampling_is_reproducible_and_batch_independent(llama):
    model, tok = llama
    ps = prompts(6)
    sp = SamplingParams(temperature=0.7, top_p=0.95, top_k=50, seed=3)
    a = generate(model, tok, ps, max_new_tokens=MAX_NEW, sampling=sp)
    b = generate(
        model, tok, ps, max_new_tokens=MAX_NEW, sampling=sp, batch_size=2, prefill_tokens=40
    )
    c = generate(
        model, tok, ps, max_new_tokens=MAX_NEW, sampling=SamplingParams(0.7, 0.95, 50, seed=4)
    )
    assert [g.tokens for g in a] == [g.tokens for g in b]
    assert [g.tokens for g in a] != [g.tokens for g in c]


def test_rows_sharing_a_prompt_sample_like_single_rows(llama):
    model, tok = llama
    p = prompts(2)
    rows = [p[0]] * 4 + [p[1]] * 3
    seeds = [row_seed(9, i) for i in range(len(rows))]
    sp = SamplingParams(temperature=1.0, seed=0)
    together = generate(model, tok, rows, max_new_tokens=8, sampling=sp, seeds=seeds)
    alone = [
        generate(model, tok, [r], max_new_tokens=8, sampling=sp, seeds=[s])[0]
        for r, s in zip(rows, seeds, strict=True)
    ]
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert len({tuple(g.tokens) for g in together}) > 1  # distinct seeds, distinct samples


def test_sampled_draft_keeps_the_distribution(llama):
    """Accept a draft token with probability p(token), else resample without it: exact.

    top_k=2 leaves two near-equal candidates, so both the accept and the reject branch run;
    always accepting (or always rejecting) the draft would put the frequency near 1 (or 0).
    """
    model, tok = llama
    p = prompts(1)[0]
    with torch.inference_mode():
        probs = torch.softmax(model(torch.tensor([p])).logits[0, -1], -1)
    top = probs.topk(2)
    expected = float(top.values[0] / top.values.sum())
    draft = int(top.indices[0])
    n = 1500
    gens = generate(
        model,
        tok,
        [p] * n,
        max_new_tokens=1,
        draft=[draft],
        sampling=SamplingParams(temperature=1.0, top_k=2, seed=5),
    )
    freq = sum(g.tokens == [draft] for g in gens) / n
    assert {g.tokens[0] for g in gens} == {int(i) for i in top.indices}
    assert abs(freq - expected) < 5 * (expected * (1 - expected) / n) ** 0.5


def test_budget_must_be_positive(llama):
    model, tok = llama
    with pytest.raises(ValueError):
        generate(model, tok, [[5, 6]], max_new_tokens=0)


def test_no_room_stops_only_rows_that_cannot_show_the_target(llama):
    """Stopping once the target cannot fit into the budget never changes a row's outcome."""
    model, tok = llama
    ps = prompts(12, seed=3)
    full = generate(model, tok, ps, max_new_tokens=MAX_NEW)  # no stop strings: whole budget
    target = tok.decode(full[0].tokens[7:10])  # shown late by row 0, maybe by others
    early = generate(model, tok, ps, max_new_tokens=MAX_NEW, stop_strings=[target])
    assert {g.stop for g in early} >= {"target", "no_room"}
    for f, e in zip(full, early, strict=True):
        assert f.tokens[: len(e.tokens)] == e.tokens
        assert (target in f.text) == (e.stop == "target")
        if e.stop == "no_room":
            assert len(e.tokens) < MAX_NEW


def test_token_bytes_and_the_bound(llama):
    from tasks.generation.stopping import Stopper, _suffix_prefix, token_bytes

    _, tok = llama
    table = token_bytes(tok)
    ids = tok("ハリネズミ Hello", add_special_tokens=False)["input_ids"]
    assert b"".join(table[i] for i in ids) == "ハリネズミ Hello".encode()
    assert table[tok.eos_token_id] == b""  # special tokens decode to nothing
    assert _suffix_prefix(b"xxab", b"abc") == 2 and _suffix_prefix(b"abc", b"abc") == 0
    stopper = Stopper(tok, set(), ["ハリネズミ"], 20)
    ((target, need),) = stopper.bounds[1]
    assert len(need) == len(target) and need[-1] >= 1  # one byte short: one more token at least
    assert need[0] > 1  # no tiny-vocabulary token holds the whole target
    assert Stopper(tok, set(), ["two words"], 20).bounds is None  # cleanup may touch spaces


@pytest.mark.parametrize("seed", range(6))
def test_min_tokens_is_the_exact_shortest_continuation(seed):
    """The automaton search equals brute force over every token sequence up to 5 tokens: from a
    text ending in j bytes of the target, the fewest tokens whose bytes complete an occurrence."""
    import itertools

    from tasks.generation.stopping import min_tokens

    rng = random.Random(seed)
    target = bytes(rng.choice(b"abc") for _ in range(rng.randint(3, 6)))
    table = [b""] + [bytes(rng.choice(b"abcd") for _ in range(rng.randint(1, 3))) for _ in range(7)]
    need = min_tokens(table, target)
    for j in range(len(target)):
        brute = next(
            (
                m
                for m in range(1, 6)
                for seq in itertools.product(table, repeat=m)
                if target in target[:j] + b"".join(seq)
            ),
            None,
        )
        if need is None:
            assert brute is None and j == 0
            break
        assert (need[j] if need[j] <= 5 else None) == brute, (target, table, j)


def test_the_bound_sees_tokens_that_cannot_join_characters():
    """Two-byte tokens that never span a character boundary: 4 tokens, not ceil(6 / 2) = 3; and
    a text ending in "abcd" must start over, since no token continues it with "e"."""
    from tasks.generation.stopping import min_tokens

    assert min_tokens([b"ab", b"c", b"de", b"f", b"x"], b"abcdef") == [4, 4, 3, 2, 4, 1]


def test_prompt_pass_chunks_minimise_the_cost_model():
    """The DP grouping equals the best of all contiguous groupings (brute force)."""
    import itertools

    from tasks.generation import engine as g

    lengths = [120, 118, 90, 60, 59, 58, 20]
    rows = [g._Row(i, [1] * n) for i, n in enumerate(lengths)]

    def cost(parts):
        return sum(len(p) * len(p[0].prompt) + g.FORWARD_COST_TOKENS for p in parts)

    best = min(
        cost([rows[a:b] for a, b in itertools.pairwise((0, *cuts, len(rows)))])
        for k in range(len(rows))
        for cuts in itertools.combinations(range(1, 7), k)
    )
    chunks = g._chunks(rows, 0, 0, budget=10_000)
    assert cost(chunks) == best and [r for c in chunks for r in c] == rows
    assert all(len(c) * len(c[0].prompt) <= 250 for c in g._chunks(rows, 0, 0, budget=250))


@pytest.mark.integration
def test_smollm2_proves_a_miss_ten_tokens_before_the_budget_ends(smollm2_path):
    """The ``no_room`` bound is exact on SmolLM2: no token carries more than 2 of the 15
    bytes of the target (a per-token byte bound of 8 tokens), but each katakana takes two tokens
    and none joins two katakana, so 10 tokens are needed from a text showing none of it."""
    from tasks.generation.stopping import Stopper, token_bytes

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    ((target, need),) = Stopper(tok, set(), ["ハリネズミ"], 19).bounds[1]
    assert len(target) == 15 and need[0] == 10
    blob = b"\x00".join(token_bytes(tok))  # the longest run of target bytes in one token
    run = max(b - a for a in range(15) for b in range(a + 1, 16) if target[a:b] in blob)
    assert run == 2 and -(-len(target) // run) == 8
