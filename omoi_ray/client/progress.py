"""A live progress bar for ``Runtime.wait`` (rich), with per-status counts and warnings.

Rules:
- The bar's line holds only short, fixed parts (description, bar, done/total, elapsed), so it
  fits 80 columns; the counts and warnings go on the lines below it and wrap, never cut.
- Text from users (the description, capability names) is shown literally, never read as rich
  markup.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text


class _Progress(Progress):
    """A ``Progress`` that shows each task's ``detail`` (a ``Text``) under the bars."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            detail = task.fields.get("detail")
            if detail:
                yield detail


class ProgressBar:
    """A bar of ``total`` tasks labelled ``description``, drawn on ``console`` (default stderr)
    from ``start`` (the constructor) to ``close``."""

    def __init__(self, total: int, description: str = "tasks", console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = _Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(description, total=total, detail=None)
        self.progress.start()

    def update(
        self,
        finished: dict[str, str],
        live: dict[str, int],
        unclaimable: list[tuple[list[str], int]],
        unhandled: Iterable[tuple[str, list[str], int]] = (),
        total: int | None = None,
        held: int = 0,
    ) -> None:
        """Show ``finished`` (task id -> final status) against the total (``total``: a new one,
        for work that grows), ``live`` (count per status of the others, ``held`` of the pending
        ones held by their ticket), ``unclaimable`` ((required capabilities, count) pairs) and
        ``unhandled`` ((type, required capabilities, count): no live agent handles the type)."""
        parts = []
        for status, n in sorted(live.items()):
            if n:
                parts.append(f"{status} {n}" + (f" ({held} held by ticket)" if status == "pending" and held else ""))
        detail = Text("  ".join(parts))
        failed = sum(1 for s in finished.values() if s != "completed")
        if failed:
            detail.append("  " if detail else "").append(f"not completed {failed}", style="red")
        for requires, count in unclaimable:
            needs = ", ".join(requires) or "(nothing)"
            detail.append("\n" if detail else "").append(
                f"{count} ready need [{needs}]: no live agent can run them", style="yellow")
        for task_type, requires, count in unhandled:
            detail.append("\n" if detail else "").append(unhandled_line(task_type, requires, count), style="yellow")
        if total is not None:
            self.progress.update(self.task, total=total)
        self.progress.update(self.task, completed=len(finished), detail=detail or None)

    def close(self) -> None:
        """Stop redrawing; the bar's last state stays on the console."""
        self.progress.stop()


def unhandled_line(task_type: str, requires: list[str], count: int) -> str:
    """The line saying ``count`` ready tasks of ``task_type`` wait for an agent handling that type."""
    needs = f" with [{', '.join(requires)}]" if requires else ""
    return f"{count} ready of type '{task_type}': no live agent{needs} handles that type"
