"""fprun report: every result kind present gets its section, read from the tables alone."""

from __future__ import annotations

import re

import pytest

from runner.results.report.page import build_report
from tasks.errors import StoreError


def test_report_has_a_section_and_an_image_per_kind(store, tmp_path):
    page = build_report(store.root, tmp_path / "out")
    text = page.read_text()
    for title in ("Fingerprint verification", "HuRef", "Sweeps", "Utility", "Provenance"):
        assert title in text
    assert "Merging (MergeGuard)" in text and "5 merged models" in text  # the failed one is out
    assert "RuntimeError: boom" in text and "merge_utility.png" in text
    assert "merge_tradeoff.png" in text and "merge_heatmap_dare_ties.png" in text
    assert "merge_heatmap_ties.png" not in text  # one density: no heatmap
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) >= 4
    for name in images:  # relative links to PNGs that exist
        png = page.parent / name
        assert "/" not in name and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "stand-in for X" in text  # datasets keep their real names in captions
    assert "Provenance benchmark" in text and "provenance_roc_if_sft.png" in text
    assert (
        "provenance_survival_if_sft_quantize.png" in text
        and "key_capacity_key_capacity.png" in text
    )
    assert "n/e (4 indep.)" in text  # TPR@1%FPR: the pool is too small for a number


def test_report_of_an_empty_store_is_bad_input(tmp_path):
    with pytest.raises(StoreError, match="no result tables"):
        build_report(tmp_path / "nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
