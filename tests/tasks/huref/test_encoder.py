"""HuRef feature extraction: mean pooling, the CNN encoder, its storage and its training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from runner.results.store import ResultStore
from tasks.errors import ArchitectureError, CheckpointError, DataError
from tasks.huref.encoder.config import CNNEncoderConfig, EncoderTrainConfig
from tasks.huref.encoder.data import make_triplets
from tasks.huref.encoder.model import (
    CNNEncoder,
    encode_cnn,
    load_encoder,
    mean_pool,
    save_encoder,
)
from tasks.huref.encoder.train import train_encoder

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "huref_encoder.yaml"
SMALL_CNN = {"kernel": 4, "stride": 2, "channels": [8, 16, 32, 512]}
# K=32 and lr 3e-3 so that 80 steps move the weights measurably on a CPU in ~3 s.
TINY = {
    "tokens": 32,
    "encoder": SMALL_CNN,
    "batch_size": 8,
    "steps_per_epoch": 10,
    "epochs": 8,
    "lr": 3e-3,
    "t_max": 80,
    "eval_triplets": 32,
    "device": "cpu",
}


def test_mean_pool_is_the_seeds_reshape_at_the_seed_shape():
    gen = torch.Generator().manual_seed(0)
    t = torch.empty(6, 4096, 4096).normal_(generator=gen)
    seed = t.reshape(512, -1).mean(1)  # the seed: 512 rows of 196,608 contiguous values
    seed = (seed - seed.mean()) / seed.std()
    assert torch.equal(mean_pool(t), seed)


def test_mean_pool_any_k_uses_near_equal_contiguous_chunks():
    t = torch.randn(9, 20, 20, generator=torch.Generator().manual_seed(1))  # 3600 = 7.03 x 512
    ref = np.array([c.mean() for c in np.array_split(t.double().numpy().ravel(), 512)])
    ref = (ref - ref.mean()) / ref.std(ddof=1)
    got = mean_pool(t)
    assert got.shape == (512,) and np.allclose(got.numpy(), ref, atol=1e-5)
    with pytest.raises(DataError, match="fewer than the 512"):
        mean_pool(torch.randn(3, 10, 10))
    with pytest.raises(DataError, match="constant"):
        mean_pool(torch.zeros(6, 32, 32))


def test_cnn_shapes_match_the_seed_and_shrink_errors_name_the_fix():
    seed = CNNEncoderConfig()
    assert seed.padding == 22 and seed.spatial_sizes(4096) == [4096, 1024, 256, 64, 16]
    assert CNNEncoderConfig(**SMALL_CNN).spatial_sizes(32) == [32, 16, 8, 4, 2]
    with pytest.raises(ArchitectureError, match="encoder.kernel=4"):
        seed.spatial_sizes(64)
    with pytest.raises(ValidationError, match="kernel - stride must be even"):
        CNNEncoderConfig(kernel=5, stride=2)
    with pytest.raises(ValidationError, match="shrinks a 64x64 input"):
        EncoderTrainConfig(tokens=64)
    with pytest.raises(ValidationError, match="3 \\* n_layers"):
        EncoderTrainConfig(tokens=32, n_layers=3, encoder=SMALL_CNN)


def test_cnn_layer_order_is_conv_relu_bn_and_last_conv_bn():
    enc = CNNEncoder(CNNEncoderConfig(**SMALL_CNN))
    kinds = [type(m).__name__ for m in enc.net]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d"] * 3 + ["Conv2d", "BatchNorm2d"]


def _trained_tiny_encoder() -> CNNEncoder:
    torch.manual_seed(0)
    enc = CNNEncoder(CNNEncoderConfig(**SMALL_CNN))
    enc.train()
    with torch.no_grad():  # move the BN running stats so a round trip must carry buffers too
        for _ in range(3):
            enc(torch.randn(4, 6, 32, 32))
    return enc.eval()


def test_encoder_round_trips_through_safetensors_and_json(tmp_path):
    enc = _trained_tiny_encoder()
    inv = torch.randn(6, 32, 32)
    save_encoder(enc, tmp_path / "enc", {"note": "test"})
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "encoder.json",
        "encoder.safetensors",
    ]
    again = load_encoder(tmp_path / "enc")
    a, b = encode_cnn(enc, inv), encode_cnn(again, inv)
    assert torch.equal(a, b)
    assert abs(float(a.mean())) < 1e-5 and abs(float(a.std()) - 1) < 1e-5
    with pytest.raises(ArchitectureError, match="6 matrices"):
        encode_cnn(again, torch.randn(9, 32, 32))


def test_pickled_encoders_are_refused_unless_allowed(tmp_path):
    enc = _trained_tiny_encoder()
    pth = tmp_path / "encoder.pth"
    torch.save(enc, pth)  # the seed's format: a whole pickled module
    with pytest.raises(CheckpointError, match="pickle"):
        load_encoder(pth)
    loaded = load_encoder(pth, allow_pickle=True)
    inv = torch.randn(6, 32, 32)
    assert torch.equal(encode_cnn(loaded, inv), encode_cnn(enc, inv))


def test_corrupt_or_missing_encoder_is_a_checkpoint_error(tmp_path):
    save_encoder(_trained_tiny_encoder(), tmp_path / "enc")
    (tmp_path / "enc" / "encoder.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_encoder(tmp_path / "enc")
    with pytest.raises(CheckpointError, match="holds no fprun encoder"):
        load_encoder(tmp_path / "nothing")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1])


def test_sandwich_anchor_correlates_with_its_positive_and_the_seeds_does_not():
    cfg = EncoderTrainConfig(**TINY)
    a, p, n = make_triplets(cfg, 2, torch.Generator().manual_seed(0))
    assert a.shape == p.shape == n.shape == (2, 6, 32, 32)
    assert _corr(a, p) > 0.5 and abs(_corr(a, n)) < 0.1
    a, p, _ = make_triplets(cfg, 2, torch.Generator().manual_seed(0), anchor="seed_independent_y")
    assert abs(_corr(a, p)) < 0.1  # the seed's quirk: its anchor shares nothing with its positive


def test_training_learns_beyond_a_calibrated_untrained_encoder(tmp_path):
    reports = []
    rows = train_encoder(
        TINY, inputs={}, out_dir=tmp_path, on_report=lambda m, c: reports.append((m, c))
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["purpose"], row["method"], row["steps"]) == ("encoder", "huref_cnn", 80)
    assert row["dataset"] == "synthetic:huref_triplets(K=32,anchor=sandwich)"
    extra = json.loads(row["extra"])
    after, control = extra["held_out_after"], extra["held_out_control"]
    # Held-out triplets: the offspring is far closer than the unrelated model ...
    assert after["frac_ap_gt_an"] == 1.0 and after["cos_ap"] - after["abs_cos_an"] > 0.4
    # ... and gradient steps, not only BatchNorm statistics, moved it there.
    # (The contrastive loss itself is not asserted: at 80 steps the adversarial term pulls
    # |cos_an| up about as much as cos_ap rises, so its sign flips with the torch build.)
    assert after["cos_ap"] > control["cos_ap"] + 0.015
    assert [m["epoch"] for m, _ in reports] == list(range(1, 9)) and reports[0][1] is None
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 8 and json.loads(log[-1])["loss_e"] > 0
    enc = load_encoder(tmp_path)
    assert json.loads((tmp_path / "encoder.json").read_text())["trained"]["tokens"] == 32
    assert encode_cnn(enc, torch.randn(6, 32, 32)).shape == (512,)


def test_callbacks_get_checkpoints_and_seed_anchor_runs(tmp_path):
    class Reporter:
        def __init__(self):
            self.seen = []

        def on_report(self, metrics, checkpoint_dir):
            self.seen.append((metrics["epoch"], checkpoint_dir))

    rep = Reporter()
    cfg = {
        **TINY,
        "epochs": 2,
        "steps_per_epoch": 2,
        "eval_triplets": 4,
        "checkpoint_every": 1,
        "anchor": "seed_independent_y",
    }
    rows = train_encoder(cfg, inputs={}, out_dir=tmp_path, callbacks=[rep])
    assert [e for e, _ in rep.seen] == [1, 2]
    assert (rep.seen[-1][1] / "encoder.json").is_file()
    assert "anchor=seed_independent_y" in rows[0]["dataset"]


def test_train_encoder_cli_writes_encoder_and_row(tmp_path, cli):
    out = cli(
        [
            "huref",
            "train-encoder",
            "--config",
            SMOKE,
            "--set",
            "epochs=1",
            "--set",
            "steps_per_epoch=2",
            "--set",
            "eval_triplets=4",
            "--out",
            tmp_path / "enc",
            "--results",
            tmp_path / "r",
            "--artifacts",
            tmp_path / "a",
        ]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "enc" / "encoder.safetensors").is_file()
    assert "cos(anchor,pos)" in out.output
    table = ResultStore(tmp_path / "r").read("train_run")
    assert table.num_rows == 1 and table.column("method").to_pylist() == ["huref_cnn"]
    load_encoder(tmp_path / "enc")


def test_train_encoder_cli_bad_input_exits_2_with_one_line(tmp_path, cli):
    out = cli(
        [
            "huref",
            "train-encoder",
            "--config",
            SMOKE,
            "--set",
            "epoch=3",
            "--out",
            tmp_path / "enc",
            "--results",
            tmp_path / "r",
        ]
    )
    assert out.exit_code == 2 and "'epochs'" in out.output and "\n" not in out.output.strip()
    assert not (tmp_path / "enc").exists()
    out = cli(["huref", "train-encoder", "--set", "tokens=64", "--out", tmp_path / "enc"])
    assert out.exit_code == 2 and "shrinks a 64x64 input" in out.output
