"""The demo: a team of agents analyses a directory of Python files.

The DAG, built by the driver from the files it finds:

    stats:<file>   (one per file, agents with "read")   lines, blank, comments, functions, classes
        |  fan-in per directory
    summary:<dir>  (agents with "analyze")               totals and the largest files of a directory
        |  fan-in over every directory
    report         (agents with "report")                totals, top files and functions; writes
                                                         report.json into its workspace

Rules:
- One stats task hits a simulated transient error on its first attempt and succeeds on retry,
  so the run shows a retry with backoff.
- Handlers do real work on real files; nothing sleeps.
- The handlers run on agents and are named by import path (``omoi_ray.cli.demo:<name>``); the
  DAG is built and submitted by the driver.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

from omoi_ray.handler.context import TaskContext, TaskView

# ------------------------------------------------------------------ handlers (run on agents)


def file_stats(task: TaskView, ctx: TaskContext) -> dict[str, Any]:
    """Statistics of one Python file."""
    path = Path(task.payload["path"])
    if task.payload.get("flaky") and task.attempt == 1:
        raise OSError(f"simulated transient error reading {path.name} (it will work on retry)")
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    blank = sum(1 for line in lines if not line.strip())
    comments = sum(1 for line in lines if line.lstrip().startswith("#"))
    functions: list[tuple[str, int]] = []
    classes = 0
    try:
        tree = ast.parse(text)
    except SyntaxError:
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                end = getattr(node, "end_lineno", node.lineno) or node.lineno
                functions.append((node.name, end - node.lineno + 1))
            elif isinstance(node, ast.ClassDef):
                classes += 1
    functions.sort(key=lambda f: -f[1])
    return {
        "path": str(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest()[:16],
        "lines": len(lines),
        "blank": blank,
        "comments": comments,
        "code": len(lines) - blank - comments,
        "functions": len(functions),
        "classes": classes,
        "longest_functions": functions[:3],
        "parsed": tree is not None,
    }


def directory_summary(task: TaskView, ctx: TaskContext) -> dict[str, Any]:
    """Fan-in: totals of one directory, from the results of its files' stats tasks."""
    files = task.payload["files"]
    results = list(ctx.upstream_results().values())
    totals: Counter[str] = Counter()
    for r in results:
        for key in ("bytes", "lines", "blank", "comments", "code", "functions", "classes"):
            totals[key] += r[key]
    largest = sorted(results, key=lambda r: -r["lines"])[:3]
    return {
        "directory": task.payload["directory"],
        "files": len(files),
        "totals": dict(totals),
        "largest": [(Path(r["path"]).name, r["lines"]) for r in largest],
        "longest_functions": sorted(
            ((f"{Path(r['path']).name}:{name}", n) for r in results for name, n in r["longest_functions"]),
            key=lambda f: -f[1],
        )[:3],
    }


def final_report(task: TaskView, ctx: TaskContext) -> dict[str, Any]:
    """Fan-in over the directory summaries; writes report.json into the workspace."""
    summaries = list(ctx.upstream_results().values())
    totals: Counter[str] = Counter()
    for s in summaries:
        totals.update(s["totals"])
    report = {
        "directories": len(summaries),
        "files": sum(s["files"] for s in summaries),
        "totals": dict(totals),
        "largest_files": sorted((f for s in summaries for f in s["largest"]), key=lambda f: -f[1])[:5],
        "longest_functions": sorted(
            (f for s in summaries for f in s["longest_functions"]), key=lambda f: -f[1]
        )[:5],
    }
    out = ctx.workspace / "report.json"
    out.write_text(json.dumps(report, indent=2))
    return {**report, "written_to": str(out)}


# ------------------------------------------------------------------ the DAG (built on the driver)


def default_directory() -> Path:
    """The Python standard library's ``json``, ``email`` and ``asyncio`` packages live here."""
    return Path(sysconfig.get_paths()["stdlib"])


def pick_files(root: Path, limit: int) -> dict[str, list[Path]]:
    """Up to ``limit`` .py files under ``root``, grouped by directory (stable order)."""
    root = root.resolve()
    if root == default_directory().resolve():
        candidates = [p for pkg in ("json", "email", "asyncio", "concurrent", "importlib") for p in sorted((root / pkg).rglob("*.py"))]
    else:
        candidates = sorted(root.rglob("*.py"))
    candidates = [p for p in candidates if "__pycache__" not in p.parts and p.is_file()][:limit]
    groups: dict[str, list[Path]] = {}
    for path in candidates:
        groups.setdefault(str(path.parent.relative_to(root)) or ".", []).append(path)
    return groups


def build_dag(run_id: str, groups: dict[str, list[Path]]) -> list[dict[str, Any]]:
    """Return the demo's task specs (dicts ``submit`` accepts), dependencies before dependents.

    Args:
        run_id: prefix of every task id, and the tasks' ticket id.
        groups: directory (relative) -> its ``.py`` files, as ``pick_files`` returns them.

    Returns:
        list of task dicts: one ``file_stats`` per file (the first one flaky), one
        ``directory_summary`` per directory depending on its files' stats, one ``final_report``
        depending on every summary.
    """
    tasks: list[dict[str, Any]] = []
    summaries = []
    flaky_done = False
    for directory, files in groups.items():
        stat_ids = []
        for index, path in enumerate(files):
            tid = f"{run_id}.stats.{_slug(directory)}.{index}"
            flaky = not flaky_done
            flaky_done = True
            tasks.append(
                {
                    "id": tid,
                    "type": "file_stats",
                    "requires": ["read"],
                    "priority": "HIGH" if path.stat().st_size > 30_000 else "MEDIUM",
                    "payload": {"path": str(path), "flaky": flaky},
                    "backoff_base": 0.5,
                    "timeout": 60,
                    "ticket_id": run_id,
                    "phase": "scan",
                }
            )
            stat_ids.append(tid)
        sid = f"{run_id}.summary.{_slug(directory)}"
        tasks.append(
            {
                "id": sid,
                "type": "directory_summary",
                "requires": ["analyze"],
                "depends_on": stat_ids,
                "payload": {"directory": directory, "files": [str(p) for p in files]},
                "ticket_id": run_id,
                "phase": "summarize",
            }
        )
        summaries.append(sid)
    tasks.append(
        {
            "id": f"{run_id}.report",
            "type": "final_report",
            "requires": ["report"],
            "priority": "CRITICAL",
            "depends_on": summaries,
            "ticket_id": run_id,
            "phase": "report",
        }
    )
    return tasks


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)[:60] or "root"


#: the namespace the demo runs its runtime in unless told otherwise (the CLI's --namespace default)
DEMO_NAMESPACE = "omoi-demo"
#: most files one demo run analyses (each is one task)
MAX_DEMO_FILES = 10_000


def run_demo(
    directory: Path | None = None,
    files: int = 60,
    settings: Any = None,
    ray_init: dict[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Start a local runtime, run the DAG with three agents, print a summary; return figures.

    ``files``: at most this many ``.py`` files (1 to ``MAX_DEMO_FILES``); ``settings`` default to
    the namespace ``DEMO_NAMESPACE``; ``console``: a rich ``Console`` to print to (default stdout).
    ``ray_init``: extra ``ray.init`` arguments; ``progress``: show the live progress bar.

    Returns:
        ``{"run_id": str, "tasks": int, "statuses": {final status: count}, "wall_s": seconds,
        "retried": number of tasks that needed more than one attempt}``.

    Raises:
        ValueError: ``files`` is not a whole number from 1 to ``MAX_DEMO_FILES``.
        FileNotFoundError: no ``.py`` file under the directory.
    """
    import ray
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    import omoi_ray as omoi

    if isinstance(files, bool) or not isinstance(files, int) or not 1 <= files <= MAX_DEMO_FILES:
        raise ValueError(f"files must be a whole number from 1 to {MAX_DEMO_FILES}, not {files!r}")
    console = console or Console(soft_wrap=True)
    settings = settings or omoi.Settings(namespace=DEMO_NAMESPACE)
    root = Path(directory) if directory else default_directory()
    groups = pick_files(root, files)
    if not groups:
        raise FileNotFoundError(errno.ENOENT, "no .py files found under this directory", str(root))
    console.print(Text.assemble(("omoi-ray demo", "bold"),
                                f": analysing {sum(map(len, groups.values()))} files under {root}"))
    console.print(Text(f"store: {settings.safe_database_url()}" + ("  (embedded SQLite)" if settings.embedded else "")))
    started_ray = not ray.is_initialized()
    rt = omoi.connect(settings, migrate=True, ray_init={"log_to_driver": False, **(ray_init or {})})
    dashboard = ray.get_runtime_context().worker.node.address_info.get("webui_url") if started_ray else None
    if dashboard:
        console.print(Text(f"Ray dashboard: http://{dashboard} (actors omoi.scheduler, omoi.agent.*; live while the demo runs)"))
    try:
        console.print("starting agents: reader-1, reader-2 (read, 4 slots each), analyst (analyze + report, 2 slots)")
        handlers = {
            "file_stats": "omoi_ray.cli.demo:file_stats",
            "directory_summary": "omoi_ray.cli.demo:directory_summary",
            "final_report": "omoi_ray.cli.demo:final_report",
        }
        for name in ("reader-1", "reader-2"):
            rt.spawn_agent(name, capabilities=["read"], capacity=4, handlers=handlers, exist_ok=True)
        rt.spawn_agent("analyst", capabilities=["analyze", "report"], capacity=2, handlers=handlers, exist_ok=True)
        run_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha1(str(time.time()).encode()).hexdigest()[:4]}"
        dag = build_dag(run_id, groups)
        t0 = time.monotonic()
        ids = rt.submit(dag)
        statuses = rt.wait(ids, progress=progress, description=f"{len(ids)} tasks")
        wall = time.monotonic() - t0
        infos = rt.get_many(ids)
        by_status = Counter(statuses.values())
        by_agent: Counter[str] = Counter(i.agent_id for i in infos if i.status == "completed")
        attempts = sum(i.attempt for i in infos)

        console.print(Text(f"run {run_id}"))
        table = Table(title=f"{len(ids)} tasks in {wall:.2f}s")
        table.add_column("status")
        table.add_column("tasks", justify="right")
        for status, n in sorted(by_status.items()):
            table.add_row(Text(status), str(n))
        console.print(table)
        agents = Table(title="completed per agent")
        agents.add_column("agent")
        agents.add_column("tasks", justify="right")
        for agent, n in sorted(by_agent.items()):
            agents.add_row(Text(agent), str(n))
        console.print(agents)
        retried = [i for i in infos if i.attempt > 1]
        for info in retried:
            console.print(Text(f"retried: {info.id} (attempt {info.attempt}, status {info.status})"))
        report = next(i for i in infos if i.id.endswith(".report"))
        if report.status == "completed":
            print_report(console, report.result)
        console.print(Text(f"wall time {wall:.2f}s, {attempts} attempts for {len(ids)} tasks; "
                           f"state kept in {settings.safe_database_url()}"))
        return {"run_id": run_id, "tasks": len(ids), "statuses": dict(by_status), "wall_s": wall, "retried": len(retried)}
    finally:
        rt.shutdown(agents_timeout=5.0)
        if started_ray:
            ray.shutdown()


def print_report(console: Any, report: dict[str, Any]) -> None:
    """Print the final report's figures. File names and paths are printed literally (never as
    markup) and each on whole lines (``soft_wrap``: a long path is never broken or cut)."""
    from rich.text import Text

    totals = report["totals"]
    console.print(Text(
        f"report: {report['files']} files in {report['directories']} directories, "
        f"{totals.get('lines', 0)} lines, {totals.get('functions', 0)} functions, "
        f"{totals.get('classes', 0)} classes"
    ), soft_wrap=True)
    console.print(Text(f"largest files: {', '.join(f'{n} ({k})' for n, k in report['largest_files'])}"),
                  soft_wrap=True)
    console.print(Text(f"report written to {report['written_to']}"), soft_wrap=True)
