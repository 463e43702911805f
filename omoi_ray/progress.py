"""A live progress bar for ``Runtime.wait`` (rich), with per-status counts and warnings."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressBar:
    def __init__(self, total: int, description: str = "tasks", console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(description, total=total, detail="")
        self.progress.start()

    def update(
        self,
        finished: dict[str, str],
        live: dict[str, int],
        unclaimable: list[tuple[list[str], int]],
    ) -> None:
        parts = [f"{status} {n}" for status, n in sorted(live.items()) if n]
        failed = sum(1 for s in finished.values() if s != "completed")
        if failed:
            parts.append(f"[red]not completed {failed}[/red]")
        for requires, count in unclaimable:
            needs = ", ".join(requires) or "(nothing)"
            parts.append(f"[yellow]{count} ready need [{needs}]: no live agent can run them[/yellow]")
        self.progress.update(self.task, completed=len(finished), detail="  ".join(parts))

    def close(self) -> None:
        self.progress.stop()
