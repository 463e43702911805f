"""``omoi-ray run``: apply a pattern file, run it with a handler set, print progress and outcome.

    omoi-ray run patterns/majority_vote.yaml --set question="Ship it?" --handlers omoi_ray.examples.patterns
    omoi-ray run majority_vote --demo

Rules:
- ``--set name=value`` (repeatable): the value is read as JSON when it parses as JSON (``3``,
  ``true``, ``["a", "b"]``), else taken as the string itself (``--set question=Ship it?``); the
  pattern checks it against the parameter's declared type.
- ``--handlers MODULE``: a module (importable from the working directory) with ``HANDLERS``, a
  mapping of task type -> function; one agent (``pattern-runner``, 4 slots) runs them, loaded by
  import path. ``--demo`` is ``--handlers omoi_ray.examples.patterns`` on the embedded default (a local
  Ray, SQLite under ``OMOI_HOME``) in the namespace ``omoi-patterns``.
- The run waits for the pattern's final steps, prints the outcome as JSON and exits 0 when they
  completed, 1 otherwise; bad arguments, an unknown pattern or parameter exit 2 (one line).
- Its progress bar counts every task under the pattern's prefix: its items and the rounds its
  loops create as they run (the total grows with them), with a warning for ready tasks no live
  agent can run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from typing import Any

from omoi_ray.errors import ConfigurationError

#: the namespace of ``--demo`` runs
DEMO_NAMESPACE = "omoi-patterns"
DEMO_HANDLERS = "omoi_ray.examples.patterns"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SET = re.compile(r"([A-Za-z_][A-Za-z0-9_-]{0,63})=(.*)", re.DOTALL)


def parse_set(text: str) -> tuple[str, Any]:
    """One ``--set name=value``: the name and the value (JSON if it parses, else the text)."""
    found = _SET.fullmatch(text)
    if not found:
        raise argparse.ArgumentTypeError(f"--set takes name=value with a parameter name, not {text!r}")
    name, raw = found.groups()
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def handler_paths(module_name: str) -> dict[str, str]:
    """``{task type: "module:function"}`` from a module's ``HANDLERS``.

    Raises:
        ConfigurationError: not a module name, not importable, or without a ``HANDLERS`` mapping
            of task type to module-level function.
    """
    if not _MODULE.fullmatch(module_name):
        raise ConfigurationError(f"--handlers {module_name!r} is not a module name (e.g. omoi_ray.examples.patterns)")
    _import_from_working_directory()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--handlers {module_name}: cannot import it ({exc})") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code failed or exited on import
        reason = " ".join(str(exc).split())[:200]
        raise ConfigurationError(f"--handlers {module_name}: importing it raised {type(exc).__name__}"
                                 + (f": {reason}" if reason else "")) from None
    handlers = getattr(module, "HANDLERS", None)
    if not isinstance(handlers, dict) or not handlers:
        raise ConfigurationError(f"--handlers {module_name}: the module has no HANDLERS mapping of task type to function")
    from omoi_ray.specs.tasks import check_name

    out = {}
    for task_type, fn in handlers.items():
        try:  # the task type first, by the rule agents' handlers are held to (before Ray starts)
            check_name(task_type, "task type")
        except ValueError as exc:
            raise ConfigurationError(f"--handlers {module_name}: HANDLERS key: {exc}") from None
        name = getattr(fn, "__name__", None)
        if not callable(fn) or getattr(module, str(name), None) is not fn:
            raise ConfigurationError(f"--handlers {module_name}: HANDLERS[{task_type!r}] is not a function of the module")
        out[task_type] = f"{module_name}:{name}"
    return out


def _import_from_working_directory() -> None:
    """Let the handlers' module come from the working directory, as ``python -m`` would: on this
    process's import path, and on ``PYTHONPATH`` for the workers of the local Ray this run starts
    (they inherit its environment; on a cluster, ship the module with a runtime_env)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *paths])


def run_pattern(args: argparse.Namespace, settings: Any) -> int:
    """Apply ``args.pattern`` and run it to its end; 0 when its final steps completed, else 1."""
    from rich.console import Console
    from rich.text import Text

    import omoi_ray as omoi
    from omoi_ray.specs.patterns import load_pattern

    console = Console(soft_wrap=True)
    params = dict(args.set or [])
    load_pattern(args.pattern, params, prefix=args.id_prefix, ticket=args.ticket)  # every error before Ray starts
    given = args.handlers is not None  # an empty --handlers '' is refused, not taken as absent
    handlers = handler_paths(args.handlers if given else DEMO_HANDLERS) if (args.demo or given) else None
    if handlers is None and not os.environ.get("RAY_ADDRESS", "").strip():
        raise ConfigurationError(
            "no agent could run the pattern: the Ray this run starts is its own; pass --handlers MODULE or "
            "--demo, or set RAY_ADDRESS to a cluster whose agents run its task types")
    rt = omoi.connect(settings, migrate=True, ray_init={"log_to_driver": False})
    try:
        if handlers:
            rt.spawn_agent("pattern-runner", capacity=4, handlers=handlers, exist_ok=True)
        handle = rt.apply_pattern(args.pattern, ticket=args.ticket, params=params, prefix=args.id_prefix)
        console.print(Text(f"applied {handle.name} as {handle.prefix}: " + ", ".join(
            f"{step} ({len(ids)})" if len(ids) > 1 else step for step, ids in handle.ids.items())))
        _follow(rt, handle, args.timeout, progress=not args.no_progress)
        result = rt.pattern_result(handle)
        console.print(Text(f"{handle.name}: {result.status}"))
        for line in _failure_lines(result):
            console.print(Text(line))
        console.print(Text(json.dumps(result.outcome, indent=2, sort_keys=True, default=str)))
        return 0 if result.status == "completed" else 1
    finally:
        if handlers:  # the runner's own agent and runtime end with the run, as the demo's do
            rt.shutdown(agents_timeout=5.0)


#: tasks ``omoi-ray run`` lists when a pattern did not complete (the rest are counted)
FAILURES_SHOWN = 10
#: statuses of a task that ended without a result
_ENDED_BADLY = ("failed", "timed_out", "upstream_failed", "cancelled")


def _failure_lines(result: Any) -> list[str]:
    """One line per task of the pattern that ended without a result (its status and its error,
    else its reason), at most ``FAILURES_SHOWN`` of them, then how many more there are."""
    seen: dict[str, Any] = {}
    for infos in result.steps.values():
        for info in infos:
            if info.status in _ENDED_BADLY:
                seen.setdefault(info.id, info)
    lines = []
    for info in list(seen.values())[:FAILURES_SHOWN]:
        why = " ".join(str(info.error or info.reason or "").split())
        why = why[:297] + "..." if len(why) > 300 else why
        lines.append(f"  {info.id} {info.status}" + (f": {why}" if why else ""))
    if len(seen) > FAILURES_SHOWN:
        lines.append(f"  ... and {len(seen) - FAILURES_SHOWN} more")
    return lines


#: seconds each look at a running pattern waits for its final steps (the bar's refresh)
FOLLOW_STEP_S = 0.5


def _follow(rt: Any, handle: Any, timeout: float | None, *, progress: bool) -> None:
    """Wait for the pattern's final steps (``WaitTimeoutError`` after ``timeout`` seconds),
    drawing a bar over every task under its prefix unless ``progress`` is off."""
    import time

    from omoi_ray.client.progress import ProgressBar
    from omoi_ray.client.tasks import wait_timeout_error
    from omoi_ray.core.tasks import TERMINAL

    final = {s.value for s in TERMINAL}
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = ProgressBar(total=len(handle.all_ids), description=handle.name) if progress else None
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            step = FOLLOW_STEP_S if remaining is None else max(0.0, min(FOLLOW_STEP_S, remaining))
            now = rt.patterns.progress(handle, wait=step)
            if bar is not None:
                live: dict[str, int] = {}
                for s in now.statuses.values():
                    if s not in final:
                        live[s] = live.get(s, 0) + 1
                done = {tid: s for tid, s in now.statuses.items() if s in final}
                bar.update(done, live, now.unclaimable, now.unhandled, total=len(now.statuses), held=now.held)
            if now.finished:
                return
            if remaining is not None and remaining <= 0:
                pending = [i for name in handle.finals for i in handle.ids[name] if now.statuses.get(i) not in final]
                infos = rt.get_many(pending)
                if all(info.done for info in infos):
                    return  # final between the last step and this read
                raise wait_timeout_error(f"{handle.name}: its final steps were not final after {timeout:g}s", infos)
    finally:
        if bar is not None:
            bar.close()
