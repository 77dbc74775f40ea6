"""HuRef's streamed reads: block-by-block invariants equal whole tensors on every layout and at
realistic sizes, exact row-block reads, and a full-load path that never writes into the model."""

import json

import numpy as np
import pytest
import torch

from tasks.huref.arch import detect
from tasks.huref.invariants import StateDictSource, compute_invariants
from tasks.huref.safetensors_io import CheckpointReader
from tests.tasks.huref.families import IDS, _hf, _rel


def test_full_load_path_never_writes_into_the_model(family_paths):
    path = family_paths["tiny-llama"]
    model = _hf(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_invariants(
        StateDictSource(model.state_dict(), path), detect(path, CheckpointReader(path)), IDS
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _count_block_reads(monkeypatch) -> list:
    """Record every ``read_row_block`` call (the list fills as extraction streams)."""
    reads = []
    real = CheckpointReader.read_row_block
    monkeypatch.setattr(
        CheckpointReader,
        "read_row_block",
        lambda self, *args, **kw: reads.append(args) or real(self, *args, **kw),
    )
    return reads


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-neox", "tiny-mistral"])
def test_block_streaming_matches_whole_tensors_on_every_layout(family_paths, monkeypatch, family):
    """16-row blocks and X in 6-row slices, on the chain association where the MLP streams and
    on the attention group sums: the whole-tensor result to float32 rounding (at these toy
    sizes OpenBLAS's small-matrix kernels round differently; the bits are checked below)."""
    from tasks.huref import streaming
    from tasks.huref.invariants import association

    path = family_paths[family]
    reader = CheckpointReader(path)
    a = detect(path, reader)
    ids = IDS[:12]  # small K: the MLP takes the chain association, the one that streams
    n_inner, d = reader.info(a.key(a.n_layers_total - 1, "up")).shape
    assert association(len(ids), d, n_inner) == "chain"
    whole = compute_invariants(StateDictSource(_hf(path).state_dict(), path), a, ids)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 3 * 4 * d)  # 16-row blocks (the multiple)
    monkeypatch.setattr(streaming, "MIN_ROWS", 1)
    monkeypatch.setenv("FPRUN_HUREF_STREAM_MIB", "0")  # stream whatever the size
    monkeypatch.setattr(streaming, "A_BUDGET", 4 * 6 * n_inner)
    reads = _count_block_reads(monkeypatch)
    assert _rel(compute_invariants(reader, a, ids), torch.as_tensor(whole)) < 1e-6
    assert len(reads) > 20  # it really went block by block


def test_block_streaming_matches_whole_tensors_at_realistic_sizes(tmp_path, monkeypatch):
    """A 512-wide GQA Llama, 64-128-row blocks and X in 128-row slices: the whole tensors' result
    (blocking splits only output rows/columns, never a summed dimension)."""
    from safetensors.numpy import save_file

    from tasks.huref import streaming
    from tasks.huref.invariants import association

    d, n_inner, hd, heads, kv, vocab = 512, 1024, 64, 8, 2, 1200
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (heads * hd, d),
                p + "self_attn.k_proj.weight": (kv * hd, d),
                p + "self_attn.v_proj.weight": (kv * hd, d),
                p + "self_attn.o_proj.weight": (d, heads * hd),
                p + "mlp.gate_proj.weight": (n_inner, d),
                p + "mlp.up_proj.weight": (n_inner, d),
                p + "mlp.down_proj.weight": (d, n_inner),
            }
        )
    tensors = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": d,
                "intermediate_size": n_inner,
                "num_hidden_layers": 2,
                "num_attention_heads": heads,
                "num_key_value_heads": kv,
                "head_dim": hd,
                "vocab_size": vocab,
            }
        )
    )
    reader = CheckpointReader(tmp_path)
    a = detect(tmp_path, reader)
    ids = list(range(0, 1024, 4))  # K = 256: chain association for the MLP
    assert association(len(ids), d, n_inner) == "chain"
    sd = {k: torch.from_numpy(v) for k, v in tensors.items()}
    whole = compute_invariants(StateDictSource(sd, tmp_path), a, ids)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 128 * 4 * d)
    monkeypatch.setattr(streaming, "MIN_ROWS", 1)
    monkeypatch.setenv("FPRUN_HUREF_STREAM_MIB", "0")  # stream whatever the size
    monkeypatch.setattr(streaming, "A_BUDGET", 128 * 4 * n_inner)
    reads = _count_block_reads(monkeypatch)
    streamed = compute_invariants(reader, a, ids)
    # Equal to fp32 rounding, not always bitwise: blocking changes the matrix products' shapes,
    # and some BLAS kernels sum in a shape-dependent order (OpenBLAS's Haswell kernels, which it
    # picks on AMD Zen 5; its SkylakeX kernels give identical bits). A wrong block is far off.
    assert float(np.abs(streamed - whole).max()) <= 1e-5 * float(np.abs(whole).max())
    assert len(reads) > 40  # blocks of q, o, gate, up and down, twice over X's two slices
    monkeypatch.delenv("FPRUN_HUREF_STREAM_MIB")  # default: a layer this small is read whole
    reads.clear()
    assert np.array_equal(compute_invariants(reader, a, ids), whole) and not reads


def test_read_row_block_reads_exact_rows_into_a_reused_buffer(family_paths):
    path = family_paths["tiny-llama"]
    reader = CheckpointReader(path)
    key = detect(path, reader).key(0, "up")
    full = reader.read(key)
    buf = np.empty((4, full.shape[1]), dtype=np.float32)
    got = reader.read_row_block(key, 3, 7, out=buf)
    assert np.shares_memory(got, buf) and np.array_equal(got, full[3:7])
    assert np.array_equal(reader.read_row_block(key, 5, 6), full[5:6])
    with pytest.raises(ValueError):
        reader.read_row_block(key, 0, full.shape[0] + 1)
