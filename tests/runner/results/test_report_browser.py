"""The report in a real browser: every image loads with a size, the console stays clean, from a
file:// URL and from a static server."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from runner.results.report.page import build_report
from tests.browser import check_page, chromium_binary

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_binary() is None, reason="no chromium (.ci/run installs it)"),
]


def assert_loaded(check, page) -> None:
    assert check.title == "fprun report"
    assert len(check.images) >= 4, check.images
    for img in check.images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert not check.errors, check.errors


def test_report_loads_from_a_file_url(store, tmp_path):
    page = build_report(store.root, tmp_path / "report")
    shot = tmp_path / "report-file.png"
    assert_loaded(check_page(page.as_uri(), shot), page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_report_loads_from_a_static_server(store, tmp_path):
    page = build_report(store.root, tmp_path / "report")
    moved = shutil.copytree(page.parent, tmp_path / "served" / "r")  # links must be relative
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(moved))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        assert_loaded(check_page(url, tmp_path / "report-http.png"), moved / "index.html")
    finally:
        server.shutdown()
