"""Human-readable HuRef pictures: the built-in generator, the contact sheet, the CLI."""

from __future__ import annotations

import itertools
import json
import pickle
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from tasks.errors import CheckpointError, DataError
from tasks.huref.encoder.config import CNNEncoderConfig
from tasks.huref.encoder.image import CoordinateNet, StyleGAN2Generator, image_distance
from tasks.huref.encoder.model import CNNEncoder, save_encoder
from tasks.huref.store import save_invariants

K = 32


def zs(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / v.std(ddof=1)


def at_cosine(v: np.ndarray, cos: float, rs: np.random.RandomState) -> np.ndarray:
    """A z-scored vector whose cosine with the z-scored ``v`` is exactly ``cos``."""
    v = zs(v)
    e = zs(rs.standard_normal(v.size))
    e -= (e @ v) / (v @ v) * v
    e *= np.linalg.norm(v) / np.linalg.norm(e)
    return np.cos(np.arccos(cos)) * v + np.sin(np.arccos(cos)) * e


@pytest.fixture(scope="module")
def gen():
    return CoordinateNet()


def test_same_vector_same_picture_whatever_its_scale(gen):
    v = np.random.RandomState(0).standard_normal(512)
    img = gen(v, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, CoordinateNet()(3.0 * v + 1.0, 64))  # fresh net, z-scored input
    assert np.array_equal(img[:, ::-1], img)  # mirror-symmetric by design
    assert img.std() > 10  # shapes, not a flat colour


def test_near_vectors_give_near_pictures_and_unrelated_ones_differ(gen):
    rs = np.random.RandomState(1)
    bases = [rs.standard_normal(512) for _ in range(6)]
    d99 = [image_distance(gen(b, 96), gen(at_cosine(b, 0.99, rs), 96)) for b in bases]
    unrelated = [
        image_distance(gen(a, 96), gen(b, 96)) for a, b in itertools.combinations(bases, 2)
    ]
    # Measured here: ~0.08 against ~0.28 (mean abs pixel difference on a 0..1 scale).
    assert max(d99) < min(unrelated)
    assert np.mean(unrelated) > 2.5 * np.mean(d99)


def test_lipschitz_bound_holds(gen):
    rs = np.random.RandomState(2)
    bound = gen.lipschitz_bound()
    for step in (1e-4, 1e-3, 1e-2):
        z1 = zs(rs.standard_normal(512))
        z2 = z1 + step * rs.standard_normal(512)
        diff = np.abs(gen.render_float(z1 @ gen.proj, 48) - gen.render_float(z2 @ gen.proj, 48))
        assert diff.max() <= bound * np.linalg.norm(z1 - z2)


def test_bad_vectors_are_data_errors(gen):
    with pytest.raises(DataError, match="constant"):
        gen(np.ones(512))
    with pytest.raises(DataError, match="takes 512"):
        gen(np.random.RandomState(0).standard_normal(100))


class FakeG:
    """Stand-in with StyleGAN2's mapping/synthesis call shapes (no real generator offline)."""

    def mapping(self, z, c, truncation_psi, truncation_cutoff):
        assert c is None and truncation_psi == 0.5 and truncation_cutoff == 8
        return z.repeat(1, 2)

    def synthesis(self, w):
        return torch.tanh(w[:, :48]).reshape(1, 3, 4, 4)


def test_stylegan_pickles_need_allow_pickle_and_a_generator(tmp_path):
    pkl = tmp_path / "afhqdog.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": FakeG()}))
    with pytest.raises(CheckpointError, match="pickle"):
        StyleGAN2Generator.from_pickle(pkl)
    img = StyleGAN2Generator.from_pickle(pkl, allow_pickle=True)(np.linspace(-1, 1, 512))
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(CheckpointError, match="G_ema"):
        StyleGAN2Generator.from_pickle(tmp_path / "other.pkl", allow_pickle=True)
    # A class from a module that is not importable, as NVIDIA's dnnlib is here.
    blob = pickle.dumps({"G_ema": FakeG()}).replace(b"tests.tasks.", b"dnnlib.task.")  # same length
    (tmp_path / "nv.pkl").write_bytes(blob)
    with pytest.raises(CheckpointError, match="dnnlib"):
        StyleGAN2Generator.from_pickle(tmp_path / "nv.pkl", allow_pickle=True)


def _meta(name: str, tokens: str = "t0") -> dict:
    return {
        "model_ref": name,
        "arch": "llama",
        "k": K,
        "n_layers": 2,
        "token_strategy": "vocab_rank",
        "token_set_hash": tokens,
        "dtype": "float32",
        "hidden_size": 16,
    }


@pytest.fixture()
def family(tmp_path):
    """A base, an offspring (base + 10% noise) and an unrelated model's invariants."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, K, K, generator=g) * 3 + 1
    models = {
        "base": base,
        "base-tuned": base + 0.1 * torch.randn(6, K, K, generator=g),
        "unrelated": torch.randn(6, K, K, generator=g) * 3 + 1,
    }
    return [save_invariants(tmp_path / "inv" / n, t, _meta(n)) for n, t in models.items()]


def test_image_cli_writes_pngs_and_a_sheet_with_related_pictures_closer(tmp_path, family, cli):
    other = save_invariants(
        tmp_path / "inv" / "other-tokens", torch.randn(6, K, K), _meta("other-tokens", tokens="t1")
    )
    out = cli(["huref", "image", *family, other, "--out", tmp_path / "img", "--size", 96])
    assert out.exit_code == 0, out.output
    imgs = {
        n: mpimg.imread(tmp_path / "img" / f"{n}.png")[..., :3]
        for n in ("base", "base-tuned", "unrelated")
    }
    assert imgs["base"].shape == (96, 96, 3)
    near = image_distance(imgs["base"], imgs["base-tuned"])
    far = image_distance(imgs["base"], imgs["unrelated"])
    assert near * 3 < far
    assert (tmp_path / "img" / "contact_sheet.png").stat().st_size > 10_000
    manifest = json.loads((tmp_path / "img" / "images.json").read_text())
    tuned, unrelated = manifest["models"][1], manifest["models"][2]
    assert tuned["feature_cos_to_first"] > 0.98 and abs(unrelated["feature_cos_to_first"]) < 0.2
    assert tuned["ics_to_first"] > 99 and abs(unrelated["ics_to_first"]) < 10
    assert manifest["models"][3]["ics_to_first"] is None  # ICS across token sets: not shown
    assert manifest["method"] == "mean_pool"


def test_image_cli_with_a_trained_encoder(tmp_path, family, cli):
    enc = CNNEncoder(CNNEncoderConfig(kernel=4, stride=2, channels=[8, 16, 32, 512]))
    save_encoder(enc.eval(), tmp_path / "enc")
    out = cli(
        [
            "huref",
            "image",
            *family,
            "--out",
            tmp_path / "img",
            "--size",
            32,
            "--encoder",
            tmp_path / "enc",
            "--no-ics",
        ]
    )
    assert out.exit_code == 0, out.output
    manifest = json.loads((tmp_path / "img" / "images.json").read_text())
    assert manifest["method"].startswith("cnn:") and manifest["models"][1]["ics_to_first"] is None


def test_image_cli_bad_inputs_exit_2(tmp_path, family, cli):
    out = cli(["huref", "image", family[0], tmp_path / "missing", "--out", tmp_path / "o"])
    assert out.exit_code == 2 and "holds no HuRef invariants" in out.output
    (family[1] / "invariants.safetensors").write_bytes(b"\x00" * 64)
    out = cli(["huref", "image", *family, "--out", tmp_path / "o"])
    assert out.exit_code == 2 and "not a safetensors file" in out.error and "extract" in out.error
    (tmp_path / "enc.pth").write_bytes(b"whatever")
    out = cli(
        ["huref", "image", family[0], "--out", tmp_path / "o", "--encoder", tmp_path / "enc.pth"]
    )
    assert out.exit_code == 2 and "--allow-pickle" in out.output
    out = cli(
        [
            "huref",
            "image",
            family[0],
            "--out",
            tmp_path / "o",
            "--stylegan",
            tmp_path / "afhqdog.pkl",
        ]
    )
    assert out.exit_code == 2 and "--allow-pickle" in out.output
    assert not (tmp_path / "o" / "contact_sheet.png").exists()


def test_image_cli_exit_code_through_the_console_script(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from runner.cli import main; main()",
            "huref",
            "image",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
