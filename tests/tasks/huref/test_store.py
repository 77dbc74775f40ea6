"""The invariants writer: extraction streams each matrix to disk, and the file it leaves is the
one ``save_invariants`` (safetensors' ``save_file``) writes, byte for byte; a failed extraction
leaves no half-written file and keeps an earlier result intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks.huref.arch import detect
from tasks.huref.invariants import compute_invariants
from tasks.huref.safetensors_io import CheckpointReader
from tasks.huref.store import (
    META_FILE,
    TENSOR_FILE,
    InvariantsWriter,
    load_invariants,
    save_invariants,
)

IDS = list(range(600, 1000, 5))  # 80 ordinary tokens of the shared tiny tokenizer
META = {
    "model_ref": "m",
    "arch": "llama",
    "k": len(IDS),
    "n_layers": 2,
    "token_strategy": "vocab_rank",
    "token_set_hash": "h",
    "dtype": "float32",
    "hidden_size": 64,
}


@pytest.fixture(scope="module")
def tiny_llama(fprun_cache) -> Path:
    from tasks.models.zoo import resolve_model

    return resolve_model("tiny-llama")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_sink_and_writer_give_save_files_bytes(tiny_llama, tmp_path, monkeypatch, stream):
    if stream:  # block streaming writes attention and MLP terms in place, then hands them on
        monkeypatch.setenv("FPRUN_HUREF_STREAM_MIB", "0")
    reader = CheckpointReader(tiny_llama)
    a = detect(tiny_llama, reader)
    whole = compute_invariants(reader, a, IDS)
    save_invariants(tmp_path / "whole", whole, META)
    handed: list[int] = []

    def sink(i: int, m: np.ndarray) -> None:
        handed.append(i)
        writer.write(i, m)

    with InvariantsWriter(tmp_path / "sink", len(IDS), 2) as writer:
        assert compute_invariants(reader, a, IDS, sink=sink) is None
        writer.finish(META)
    assert handed == list(range(6))
    assert (tmp_path / "sink" / TENSOR_FILE).read_bytes() == (
        tmp_path / "whole" / TENSOR_FILE
    ).read_bytes()
    assert json.loads((tmp_path / "sink" / META_FILE).read_text()) == json.loads(
        (tmp_path / "whole" / META_FILE).read_text()
    )
    tensor, _ = load_invariants(tmp_path / "sink")
    assert np.array_equal(tensor.numpy(), whole)


def test_a_failed_extraction_keeps_the_earlier_result_and_leaves_no_temporary(tmp_path):
    old = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4)
    meta = {**META, "k": 4}
    save_invariants(tmp_path, old, meta)
    before = (tmp_path / TENSOR_FILE).read_bytes()
    with pytest.raises(RuntimeError), InvariantsWriter(tmp_path, 4, 2) as w:
        w.write(0, np.ones((4, 4)))
        raise RuntimeError("extraction died half way")
    w2 = InvariantsWriter(tmp_path, 4, 2)
    w2.write(0, np.ones((4, 4)))
    with pytest.raises(ValueError, match="1/6 matrices"):
        w2.finish(meta)  # too few matrices: refused, nothing published
    assert (tmp_path / TENSOR_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TENSOR_FILE, META_FILE])


def test_writer_refuses_out_of_order_wrong_shape_and_mislabelled_metadata(tmp_path):
    with InvariantsWriter(tmp_path, 4, 1) as w:
        with pytest.raises(ValueError, match="out of order"):
            w.write(1, np.zeros((4, 4)))
        with pytest.raises(ValueError, match="shape"):
            w.write(0, np.zeros((4, 5)))
        for i in range(3):
            w.write(i, np.zeros((4, 4)))
        with pytest.raises(ValueError, match="out of order"):
            w.write(3, np.zeros((4, 4)))  # a fourth matrix for one layer
        with pytest.raises(ValueError, match="disagrees"):
            w.finish({**META, "k": 4})  # metadata says 2 layers, the file holds 1
    assert not any(tmp_path.iterdir())
