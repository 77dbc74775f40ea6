"""The progress display of a run: steps done of N, the running steps, bars inside long steps.

One :class:`RunProgress` per run. On a terminal it is a ``rich`` live display (a run bar with
the ETA, and one bar per running step with its rate and ETA, fed by the step's ``progress``
hook); anywhere else (CI, ``ray job submit`` logs, a pipe) it prints plain lines, inner progress
at most every ``PLAIN_EVERY_S`` seconds. Steps on Ray workers report through a small file in
their artifact folder (:class:`ProgressFile`), which the driver polls while it waits.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tasks.files import atomic_write_json

PROGRESS_FILE = ".fprun-progress.json"
# plain-line mode: at most one inner-progress line per step this often (CI logs stay short)
PLAIN_EVERY_S = float(os.environ.get("FPRUN_PROGRESS_EVERY_S", "30"))
FILE_EVERY_S = 1.0  # a worker rewrites its progress file at most this often


class ProgressFile:
    """A step's ``progress`` hook on a Ray worker: the latest report, in the artifact folder."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / PROGRESS_FILE
        self.last = 0.0

    def __call__(self, what: str, done: int, total: int | None) -> None:
        now = time.time()
        if now - self.last < FILE_EVERY_S and done != total:
            return
        self.last = now
        try:
            atomic_write_json(self.path, {"what": what, "done": done, "total": total}, indent=None)
        except OSError:  # progress is best effort; the step's own writes report real problems
            pass


def read_progress(out_dir: str | Path) -> tuple[str, int, int | None] | None:
    """The last report a worker wrote into ``out_dir``, if any."""
    import json

    try:
        doc = json.loads((Path(out_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
        return str(doc["what"]), int(doc["done"]), doc.get("total")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_progress(out_dir: str | Path) -> None:
    """Remove a finished step's progress file (it is no artifact)."""
    (Path(out_dir) / PROGRESS_FILE).unlink(missing_ok=True)


def fmt_seconds(s: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 12 min``; ``-`` when unknown."""
    if s is None or s != s or s < 0:
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class RunProgress:
    """What the driver tells about a run: plain lines to ``log``, or a rich live display.

    The run's ETA sums, over the steps not finished, what a running step's own progress rate
    leaves, else their estimate (runner.estimates) or the mean time of the finished steps of
    their kind, less the time a step has spent since its first progress report; the sum is
    divided by the number of steps reporting at once. A submitted step that has not reported is
    counted whole: it may be queued (an actor pool takes every cell, runs one per actor), and
    its duration is measured from its first report when it made one. While some step has no
    figure the ETA reads ``ETA > ...`` (a lower bound).
    """

    def __init__(self, log: Callable[[str], None] | None = None, *, live: bool = False) -> None:
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.live = live
        self.stream: TextIO = sys.stderr
        self.total = self.done = self.n_started = 0
        self.pending: dict[str, tuple[str, float | None]] = {}  # step_id -> (kind, estimate)
        self.began: dict[str, float] = {}  # step_id -> its first progress report (really running)
        self.durations: dict[str, list[float]] = {}  # kind -> seconds of finished steps
        self.inner: dict[str, dict[str, Any]] = {}  # step_id -> its inner-progress state
        self.names: dict[str, str] = {}
        self._rich: Any = None

    @classmethod
    def for_stream(cls, stream: TextIO | None = None) -> RunProgress:
        """Rich on a terminal (unless ``FPRUN_PLAIN_PROGRESS=1``), plain lines otherwise."""
        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        live = tty and os.environ.get("FPRUN_PLAIN_PROGRESS", "") in ("", "0")
        out = cls(lambda line: print(line, file=stream, flush=True), live=live)
        out.stream = stream
        return out

    # -- run level -------------------------------------------------------------------------

    def begin(self, steps: list[tuple[str, str, float | None]]) -> None:
        """The steps to execute: (step_id, kind, estimated seconds or None)."""
        self.total = len(steps)
        self.pending = {sid: (kind, est) for sid, kind, est in steps}
        if self.live and steps:
            from runner.exec.progress_rich import RichView

            self._rich = RichView(self.stream, self.total, self.eta_text())

    def line(self, text: str) -> None:
        """A line that stays (skips, failures, ...), above the live display if there is one."""
        if self._rich is not None:
            self._rich.print(text)
        else:
            self.log(text)

    def eta(self) -> tuple[float, int]:
        """(seconds left on the steps that have a figure, how many remaining steps have none)."""
        left, unknown = 0.0, 0
        now = time.time()
        for sid, (kind, est) in self.pending.items():
            inner = self.inner.get(sid, {}).get("left")
            if inner is not None:  # a running step's own rate says best how long it has left
                left += inner
                continue
            mine = self.durations.get(kind)
            guess = est if est is not None else _mean(mine) if mine else None
            if guess is None:
                unknown += 1
                continue
            began = self.began.get(sid)
            left += max(0.0, guess - (now - began if began else 0.0))
        reporting = sum(1 for sid in self.pending if sid in self.began)
        return left / max(1, reporting), unknown

    def eta_text(self) -> str:
        """``ETA 3 min 05 s``; ``ETA > 3 min 05 s`` while some remaining step has no figure."""
        left, unknown = self.eta()
        if not self.pending or (unknown and not left):
            return ""
        return f"ETA {'> ' if unknown else ''}{fmt_seconds(left)}"

    def counter(self) -> str:
        """``[k/N]``: this is the k-th step of the run to start."""
        return f"[{self.n_started}/{self.total}]" if self.total else ""

    # -- step level ------------------------------------------------------------------------

    def skipped(self, desc: str) -> None:
        self.line(f"skip  {desc}  (already in results)")

    def started_step(self, step_id: str, desc: str, name: str) -> None:
        self.names[step_id] = name
        self.n_started += 1
        if self._rich is not None:
            self._rich.start(step_id, name)
        self.line(f"start {self.counter()} {desc}")

    def report(self, step_id: str, what: str, done: int, total: int | None) -> None:
        """A step's ``progress(what, done, total)``: a bar on a terminal; elsewhere a line at
        most every PLAIN_EVERY_S seconds, and one at the end of a phase that printed any."""
        now = time.time()
        self.began.setdefault(step_id, now)
        state = self.inner.get(step_id)
        if state is None or state["what"] != what:  # a new phase restarts the rate
            state = self.inner[step_id] = {"t0": now, "what": what, "shown": now, "lines": 0}
        rate = done / (now - state["t0"]) if done and now - state["t0"] >= 1.0 else None
        state["left"] = (total - done) / rate if rate and total else None
        if self._rich is not None:
            self._rich.update(step_id, what, done, total)
            self._rich.advance(self.done, self.eta_text())
            return
        finished = total is not None and done >= total
        due = now - state["shown"] >= PLAIN_EVERY_S and not finished
        if due or (finished and state["lines"] and not state.get("closed")):
            state.update(shown=now, lines=state["lines"] + 1, closed=finished)
            name = self.names.get(step_id, step_id)
            self.log("      " + inner_line(name, what, done, total, now - state["t0"]))

    def finished(self, step_id: str, desc: str, seconds: float, rows: int) -> None:
        kind, _ = self.pending.pop(step_id, ("", None))
        if (
            step_id in self.began
        ):  # from its first report: a pooled step's queue time is not its own
            seconds = time.time() - self.began[step_id]
        self.durations.setdefault(kind, []).append(seconds)
        self._end(step_id)
        eta = self.eta_text()
        left = f", run {eta}" if eta else ""
        self.line(f"done  [{self.done}/{self.total}] {desc}  {seconds:.1f}s, {rows} row(s){left}")

    def failed(self, step_id: str, desc: str, why: str) -> None:
        self.pending.pop(step_id, None)
        self._end(step_id)
        self.line(f"FAIL  {desc}  {why}")

    def blocked(self, step_id: str, desc: str) -> None:
        self.pending.pop(step_id, None)
        self._end(step_id)
        self.line(f"block {desc}  (an input failed)")

    def _end(self, step_id: str) -> None:
        self.done += 1
        self.inner.pop(step_id, None)
        self.began.pop(step_id, None)
        if self._rich is not None:
            self._rich.finish(step_id, self.done, self.eta_text())

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def inner_line(name: str, what: str, done: int, total: int | None, elapsed: float) -> str:
    """``if_sft: training steps 40/160 (2.1/s, ETA 57 s)`` for the plain-line mode."""
    rate = done / elapsed if elapsed >= 1.0 and done else None
    of = f"/{total}" if total else ""
    eta = (total - done) / rate if rate and total else None
    bits = [f"{rate:.2f}/s" if rate else "", f"ETA {fmt_seconds(eta)}" if eta is not None else ""]
    extra = ", ".join(b for b in bits if b)
    return f"{name}: {what} {done}{of}" + (f" ({extra})" if extra else "")
