"""The terminal half of the run display (runner.exec.progress): rich bars, imported only on a TTY.

One bar for the run (steps done of N, its ETA from the mean step time) and one per running step
(what it is doing, done of total, rate and ETA from rich's own speed estimate). Lines printed
meanwhile (fprun's and third-party) appear above the bars.
"""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text


class RateEtaColumn(ProgressColumn):
    """``2.10/s  ETA 57 s``: a step's rate and time left; the run bar's ETA comes in a field."""

    def render(self, task: Any) -> Text:
        from runner.exec.progress import fmt_seconds

        if "run_eta" in task.fields:
            return Text(task.fields["run_eta"], style="cyan")
        speed = task.speed
        rate = f"{speed:.2f}/s" if speed else ""
        left = task.time_remaining if task.total else None
        eta = f"ETA {fmt_seconds(left)}" if left is not None else ""
        return Text("  ".join(x for x in (rate, eta) if x), style="cyan")


class RichView:
    """The live bars of one run."""

    def __init__(self, stream: TextIO, total: int, eta: str) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            RateEtaColumn(),
            console=Console(file=stream),
            refresh_per_second=4,
        )
        self.run = self.progress.add_task("steps", total=total, run_eta=eta)
        self.tasks: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.progress.start()

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start(self, step_id: str, name: str) -> None:
        self.names[step_id] = name
        self.tasks[step_id] = self.progress.add_task(f"  {name}", total=None)

    def update(self, step_id: str, what: str, done: int, total: int | None) -> None:
        task = self.tasks.get(step_id)
        if task is None:
            return
        desc = f"  {self.names.get(step_id, step_id)}: {what}"
        if self.progress.tasks[self._index(task)].description != desc:
            self.progress.reset(task, total=total, description=desc)
        self.progress.update(task, completed=done, total=total)

    def _index(self, task: Any) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def finish(self, step_id: str, done: int, eta: str) -> None:
        task = self.tasks.pop(step_id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.advance(done, eta)

    def advance(self, done: int, eta: str) -> None:
        self.progress.update(self.run, completed=done, run_eta=eta)

    def stop(self) -> None:
        self.progress.stop()
