"""The ``detector_score`` step on hand-made pair rows: groups, estimability, counts, survival."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import DataError
from tasks.provenance.score_step import detector_score_step, groups


def pair(tmp: Path, name: str, **row) -> Path:
    base = {
        "owner": "o",
        "fingerprint_method": "if_sft",
        "relation": "derived",
        "family": "quantize",
        "strength": 8.0,
        "status": "ok",
        "if_fsr": None,
        "if_sampled": None,
        "ics": None,
        "pcs": None,
        "false_trigger_rate": None,
    }
    folder = tmp / name
    folder.mkdir()
    (folder / "pair.json").write_text(json.dumps({**base, **row}))
    return folder


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    out = {}
    # 12 pool models: ICS low, IF FSR 0 except one that fires once; PCS missing on two (other arch)
    for i in range(12):
        out[f"n{i:02d}"] = pair(
            tmp_path, f"n{i}", relation="independent", family="independent", strength=None,
            ics=float(i), if_fsr=0.125 if i == 0 else 0.0, pcs=None if i < 2 else 1.0 + i,
            false_trigger_rate=0.0,
        )  # fmt: skip
    for i, (bits, ics) in enumerate([(8, 99.0), (8, 98.0), (4, 95.0), (4, 5.0)]):
        out[f"q{i}"] = pair(
            tmp_path, f"q{i}", strength=float(bits), ics=ics, if_fsr=1.0 if bits == 8 else 0.0,
            pcs=90.0, false_trigger_rate=0.25,
        )  # fmt: skip
    out["f0"] = pair(tmp_path, "f0", family="prune", strength=0.5, status="failed")
    return out


def rows_by(rows, detector, family, strength=None):
    want = (detector, family, strength)
    hit = [r for r in rows if (r["detector"], r["family"], r["strength"]) == want]
    assert len(hit) == 1, (detector, family, strength)
    return hit[0]


def test_scores_calibrate_on_the_pool_and_say_what_is_not_estimable(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rows = detector_score_step({"bootstrap": 200}, inputs=inputs, out_dir=out)
    ics_q = rows_by(rows, "huref_ics", "quantize")
    assert ics_q["n_derived"] == 4 and ics_q["n_independent"] == 12
    # 3 of 4 quantized models above every pool ICS (max 11); ICS 5 beats 5 of 12 and ties one
    assert ics_q["tpr_zero_fp"] == pytest.approx(0.75)
    assert ics_q["auc"] == pytest.approx((3 * 12 + 5.5) / 48)
    assert ics_q["auc_low"] <= ics_q["auc"] <= ics_q["auc_high"]
    # 12 pool pairs support FPR 0.1 but not 0.01 or 0.001: reasons, not numbers
    assert ics_q["tpr_at_1pct"] is None and "needs at least 100" in ics_q["tpr_at_1pct_why_not"]
    assert ics_q["tpr_at_01pct"] is None and "has 12" in ics_q["tpr_at_01pct_why_not"]
    tprs = json.loads(ics_q["tprs"])
    assert tprs["0.1"]["value"] == pytest.approx(0.75) and tprs["0.01"]["value"] is None
    # per strength: int8 both separate, int4 half
    assert rows_by(rows, "huref_ics", "quantize", 8.0)["survives"] is True
    assert rows_by(rows, "huref_ics", "quantize", 4.0)["tpr_zero_fp"] == pytest.approx(0.5)
    # the IF detector: int8 fires (1.0 > the pool's 0.125), int4 does not
    fsr8 = rows_by(rows, "if_fsr", "quantize", 8.0)
    assert fsr8["tpr_zero_fp"] == 1.0 and fsr8["unseen_trigger_rate"] == pytest.approx(0.25)
    assert rows_by(rows, "if_fsr", "quantize", 4.0)["survives"] is False
    assert fsr8["unseen_trigger_rate_pool"] == 0.0
    # PCS: two pool models had no score (another architecture) and are counted, not dropped
    pcs = rows_by(rows, "huref_pcs", "all")
    assert pcs["n_independent"] == 10 and pcs["n_not_applicable"] == 2
    # the failed prune pair is counted in its family; no detector scores it
    prune = rows_by(rows, "huref_ics", "prune")
    assert prune["n_failed"] == 1 and prune["n_derived"] == 0 and prune["auc"] is None
    assert "not estimable" in prune["auc_why_not"]
    # the sampled detector had no scores at all: every row says why
    assert all(r["auc"] is None for r in rows if r["detector"] == "if_sampled")
    assert json.loads((out / "scores.json").read_text()) == json.loads(json.dumps(rows))


def test_groups_split_by_family_and_strength_only_when_strengths_differ():
    rows = [
        {"family": "noise", "strength": 0.1},
        {"family": "noise", "strength": 0.5},
        {"family": "permute_rotate", "strength": None},
    ]
    names = [(f, s, len(m)) for f, s, m in groups(rows)]
    assert names == [
        ("all", None, 3),
        ("noise", None, 2),
        ("noise", 0.1, 1),
        ("noise", 0.5, 1),
        ("permute_rotate", None, 1),
    ]


def test_a_missing_pair_file_is_a_one_line_data_error(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(DataError, match="pair.json is missing"):
        detector_score_step({}, inputs={"p0": tmp_path / "p"}, out_dir=tmp_path)
