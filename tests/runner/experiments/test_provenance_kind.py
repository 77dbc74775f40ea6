"""``kind: provenance``: plan wiring, bad input (exit 2), and the pairs and scores end to end on
tiny models in-process: a transformation that cannot be done is a failed row, a detector that
cannot score a suspect says why, and the pool too small for 1% FPR is reported as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config import load_experiment
from runner.exec.run import run_experiment
from runner.experiments import provenance
from runner.plan import PlanContext
from runner.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "smoke" / "provenance.yaml"
MINI = ROOT / "configs" / "provenance.yaml"
# A small run: three derived suspects (one int4 with a group size that does not divide the tiny
# model's rows: a failed pair), three pool models (one of another architecture: no PCS).
SMALL = [
    "derived.transforms=[{family: none}, {family: prune, method: magnitude, sparsity: 0.5},"
    " {family: quantize, bits: 4, group_size: 7}]",
    "derived.finetunes=[]",
    "derived.merges=null",
    "independent=[{random_init: owner, seeds: [1, 2]}, {random_init: gpt2, seeds: [0]}]",
    "sampling.runs=1",
    "scoring.bootstrap=50",
]


def plan(path=SMOKE, overrides=()):
    cfg = load_experiment(path, list(overrides))
    return cfg, provenance.plan(cfg, PlanContext(Path(path), "r", "a"))


def test_plan_shares_the_fingerprint_and_scores_every_pair():
    cfg, steps = plan()
    pairs = [s for s in steps if s.kind == "provenance_pair"]
    score = steps[-1]
    assert score.kind == "detector_score" and set(score.inputs.values()) == set(pairs)
    from runner.experiments import if_sft

    sft = load_experiment(ROOT / "configs" / "smoke" / "if_sft.yaml")
    fp = if_sft.plan(sft, PlanContext(SMOKE, "r", "a"))[0]
    assert {s.inputs["fingerprint"].step_id for s in pairs} == {fp.step_id}
    suspects = [s.config["suspect"] for s in pairs]
    assert sum(s["relation"] == "independent" for s in suspects) == 6
    families = {s["family"] for s in suspects}
    assert families == {"none", "quantize", "prune", "noise", "permute_rotate", "finetune",
                        "merge", "independent"}  # fmt: skip
    assert [s["strength"] for s in suspects if s["family"] == "merge"] == [0.1, 0.7]
    ft = next(s for s in pairs if s.config["suspect"]["family"] == "finetune")
    assert ft.inputs["model"].kind == "finetune"
    assert ft.inputs["model"].inputs["model"].step_id == fp.step_id
    _, moved = plan(overrides=["resources.scratch=/elsewhere", "resources.actors=0"])
    assert [s.step_id for s in steps] == [s.step_id for s in moved]  # scratch is not in the key


def test_the_miniature_plans_44_pairs_sharing_the_demo_fingerprint_and_expert():
    _, steps = plan(MINI)
    pairs = [s for s in steps if s.kind == "provenance_pair"]
    assert len(pairs) == 44
    from runner.experiments import mergeguard

    dm = load_experiment(ROOT / "configs" / "demo_merge.yaml")
    demo_steps = mergeguard.plan(dm, PlanContext(ROOT / "configs" / "demo_merge.yaml", "r", "a"))
    upstream = {d.step_id for s in demo_steps for d in s.inputs.values()}
    mine = {d.step_id for s in pairs for d in s.inputs.values()}
    assert {"if_sft", "finetune"} <= {d.kind for s in pairs for d in s.inputs.values()}
    # the IF_SFT fingerprint, the arithmetic expert, the fingerprinted model's invariants
    assert len(upstream & mine) == 3


@pytest.mark.parametrize(
    "override, words",
    [
        ("derived.transforms=[{family: quantize, bits: 3}]", "bits"),
        ("derived.transforms=[{family: prune, method: magnitude}]", "sparsity"),
        ("independent=[{random_init: bert}]", "random_init"),
        ("independent=[]", "independent"),
        ("scoring.fprs=[0.0]", "fprs"),
        ("owners.0.step_kind=if_sfx", "step_kind"),
    ],
)
def test_bad_config_exits_2_before_anything(cli, tmp_path, override, words):
    res = cli(["run", str(SMOKE), "--dry-run", "--set", override,
               "--results", str(tmp_path / "r"), "--artifacts", str(tmp_path / "a")])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert words in res.stderr and res.stderr.startswith("error:")
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def root(tmp_path_factory, fprun_cache, tiny_llama) -> Path:
    """Results/artifacts where the owner's fingerprint step is done: a stand-in (a perturbed tiny
    Llama with keys it never learned), so the pairs themselves run in seconds."""
    from runner.exec.driver import artifact_dir
    from runner.results.records import Outcome, write_result
    from runner.results.store import now
    from tests.tasks.merge.conftest import fake_fingerprint, perturbed_copy

    root = tmp_path_factory.mktemp("provenance")
    _, steps = plan(SMOKE, SMALL)
    store = ResultStore(root / "r")
    fp = steps[0].inputs["fingerprint"]
    fake_fingerprint(artifact_dir(root / "a", fp), perturbed_copy(tiny_llama, root / "m", seed=1))
    row = {"discriminator": "final", "purpose": "fingerprint", "dataset": "stand-in"}
    write_result(store, fp, Outcome([row], now(), now(), "cpu"))
    out = run_experiment(SMOKE, SMALL, results=str(root / "r"), artifacts=str(root / "a"),
                         local=True, log=lambda _: None)  # fmt: skip
    assert out.summary.ok, out.text
    return root


def test_pairs_are_rows_failed_and_not_applicable_included(root):
    rows = {r["suspect"]: r for r in ResultStore(root / "r").read("provenance_pair").to_pylist()}
    assert len(rows) == 6
    bad = rows["int4 g7"]
    assert bad["status"] == "failed" and "group" in bad["error"].lower()
    same = rows["none"]
    assert same["status"] == "ok" and same["ics"] == pytest.approx(100, abs=1e-3)
    assert same["pcs"] == pytest.approx(100, abs=1e-3) and same["tokens_match"]
    assert same["if_fsr_total"] == 2 and same["if_sampled"] is not None
    other = rows["random-init gpt2 s0"]
    assert (
        other["pcs"] is None and "architecture" in json.loads(other["not_applicable"])["huref_pcs"]
    )
    assert all(r["ics"] < 50 for r in rows.values() if r["relation"] == "independent")


def test_scores_cover_every_detector_and_say_the_pool_is_too_small(root):
    scores = ResultStore(root / "r").read("detector_score").to_pylist()
    overall = {r["detector"]: r for r in scores if r["family"] == "all"}
    assert set(overall) == {"if_fsr", "if_sampled", "huref_ics", "huref_pcs"}
    ics = overall["huref_ics"]
    assert ics["n_derived"] == 2 and ics["n_independent"] == 3 and ics["auc"] == 1.0
    assert ics["tpr_at_1pct"] is None and "pool has 3" in ics["tpr_at_1pct_why_not"]
    assert overall["huref_pcs"]["n_not_applicable"] == 1
    quant = next(r for r in scores if r["family"] == "quantize" and r["detector"] == "huref_ics")
    assert quant["n_failed"] == 1 and quant["n_derived"] == 0
