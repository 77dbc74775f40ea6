"""A headless Chromium driven over the DevTools protocol, for tests of the HTML report.

Chromium is started with ``--remote-debugging-port=0`` and a private profile; the test talks to
its page target over a websocket (aiohttp, already installed with Ray): navigate, wait for the
load event, evaluate JavaScript, collect console errors and uncaught exceptions, take a
screenshot. No selenium or playwright is needed; ``.ci/run`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """The first Chromium found on PATH."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageCheck:
    """What a page load showed: its images and every console error."""

    images: list[dict] = field(default_factory=list)  # src, complete, width, height
    errors: list[str] = field(default_factory=list)
    title: str = ""


def check_page(url: str, screenshot: Path, timeout: float = 60.0) -> PageCheck:
    """Load ``url`` in headless Chromium; report images and console errors; save a screenshot."""
    binary = chromium_binary()
    assert binary, "no chromium on PATH"
    profile = tempfile.mkdtemp(prefix="fprun-chromium-")
    proc = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = _devtools_port(proc, timeout)
        return asyncio.run(asyncio.wait_for(_drive(port, url, screenshot), timeout))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(proc: subprocess.Popen, timeout: float) -> int:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if m:
            return int(m.group(1))
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


async def _drive(port: int, url: str, screenshot: Path) -> PageCheck:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Session(ws)
            for domain in ("Page", "Runtime", "Log"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Page.navigate", url=url)
            await cdp.wait_event("Page.loadEventFired")
            found = await cdp.call(
                "Runtime.evaluate", returnByValue=True,
                expression="JSON.stringify({title: document.title, images: Array.from("
                "document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
                "width: i.naturalWidth, height: i.naturalHeight}))})",
            )  # fmt: skip
            shot = await cdp.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            page = json.loads(found["result"]["value"])
            return PageCheck(page["images"], cdp.errors, page["title"])


class _Session:
    """Request/response over one DevTools websocket, collecting error events on the way."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id, self.errors, self.events = ws, 0, [], []

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self._receive()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def wait_event(self, name: str) -> None:
        while name not in self.events:
            await self._receive()

    async def _receive(self) -> dict:
        msg = json.loads((await self.ws.receive()).data)
        method, params = msg.get("method"), msg.get("params", {})
        if method:
            self.events.append(method)
        if method == "Runtime.exceptionThrown":
            self.errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))
        return msg
