"""``fprun report RESULTS --out DIR``: a static HTML page of PNG plots from the Parquet tables.

Nothing is recomputed: every section reads only the result store. One section per result kind
present (sections register in :data:`SECTIONS`, in page order); each figure carries a caption
saying what was measured, on which model and data, and how many samples. The page uses relative
links only, so it works from a file:// URL and from any static server.
"""

from __future__ import annotations

SECTIONS: dict[str, str] = {
    "verification": "runner.results.report.verification:section",
    "similarity": "runner.results.report.huref:section",
    "sweep_trial": "runner.results.report.sweep:section",
    "eval": "runner.results.report.utility:section",
    "merge_cell": "runner.results.report.merge:section",
    "detector_score": "runner.results.report.detectors:section",
    "provenance": "runner.results.report.provenance:section",
}
