"""The ``omoi-ray`` command: demo, pattern runs, database migrations, events, runtime status and teardown.

Package: this module (argument parsing, the ``cmd_<name>`` functions, ``main``), ``__main__``
(``python -m omoi_ray.cli``) and ``demo`` (the demo's handlers, DAG and run). The CLI is the
outermost layer: it uses the client and the store, and no other package imports it (agents load
the demo's handlers by import path, ``omoi_ray.cli.demo:<name>``).

Rules:
- Exit statuses: 0 done; 1 the command ran and found something wrong (the schema behind head,
  demo tasks not all completed, a runtime error); 2 what it was given cannot be used (a bad
  argument, setting or ``RAY_ADDRESS``, a database or Ray it cannot reach, a schema not
  migrated); 3 no runtime runs in the namespace (``status``). Every error is one line on
  stderr naming the argument, setting or address, never a traceback.
- Arguments are checked before anything starts: argparse ``type=`` functions here, then the
  settings' own validation (flags and ``OMOI_*`` variables alike), then the Ray address. Errors
  raised later are turned into that one line in one place, ``_run`` (what ``main`` runs); what
  a command is given and cannot use it raises as ``ConfigurationError``.
- Read-only commands (``status``, ``events``) create nothing: they find the runtime's actors by
  name and read the database directly; a SQLite file that does not exist is reported, not made.
- Text that comes from users (ids, names, capabilities, paths, messages) is printed literally,
  never read as rich markup, and whole (``soft_wrap``: long lines are never cut).
- One ``cmd_<name>`` function per subcommand, registered in ``main``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from pydantic import SecretStr

from omoi_ray.errors import ConfigurationError

#: the largest number an event position can hold (positions are 64-bit integers in the database)
_MAX_POSITION = 2**63 - 1
# settings field -> (flag, attribute of the parsed arguments)
_FLAGS = {
    "database_url": ("--db", "db"),
    "namespace": ("--namespace", "namespace"),
    "home": ("--home", "home"),
    "redis_url": ("--redis", "redis"),
    "redis_prefix": ("--prefix", "prefix"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------ argument types


def _whole_number(low: int, high: int) -> Any:
    def whole_number(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]{1,12}", text):  # ASCII digits only: int() also takes "٣" and " 3"
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return whole_number


def _directory(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def _position(text: str) -> Any:
    from omoi_ray.errors import InvalidEventQueryError
    from omoi_ray.specs.events import Position

    try:
        pos = Position.parse(text)
    except InvalidEventQueryError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if max(pos) > _MAX_POSITION:
        raise argparse.ArgumentTypeError(f"event position {text!r} is beyond any position a database can hold")
    return pos


def _type_pattern(text: str) -> str:
    from omoi_ray.client.follow import check_types
    from omoi_ray.errors import InvalidEventQueryError

    try:
        return check_types([text])[0]
    except InvalidEventQueryError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _ray_address(text: str) -> str:
    """``host:port`` (the head node's GCS port), ``ray://host:port`` or ``auto``."""
    from omoi_ray.client import address as ray_address

    try:
        return ray_address.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------ settings, database, Ray


def _settings(args: argparse.Namespace):
    from omoi_ray.settings import Settings

    overrides = {}
    if getattr(args, "db", None):
        overrides["database_url"] = SecretStr(args.db)
    if getattr(args, "namespace", None):
        overrides["namespace"] = args.namespace
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    if getattr(args, "redis", None):
        overrides["redis_url"] = SecretStr(args.redis)
    if getattr(args, "prefix", None):
        overrides["redis_prefix"] = args.prefix
    return Settings(**overrides)


def _missing_database(settings: Any) -> str | None:
    """A message when the database is a SQLite file that does not exist (read-only commands must
    not create it), else None."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if Path(url.database).is_file():
        return None
    return f"the database {settings.safe_database_url()} does not exist (nothing has run with it yet)"


def _address(args: argparse.Namespace) -> str:
    """The Ray address to join (``--address``, else ``RAY_ADDRESS``), checked and reachable."""
    from omoi_ray.client import address as ray_address

    address = args.address
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if not env:
            raise ConfigurationError("set RAY_ADDRESS (or --address) to the Ray cluster the runtime runs on")
        try:
            address = _ray_address(env)
        except argparse.ArgumentTypeError as exc:
            raise ConfigurationError(f"RAY_ADDRESS: {exc}") from None
    ray_address.check_reachable(address)  # ray.init would retry for minutes, logging as it goes
    return address


def _find_runtime(settings: Any, address: str) -> dict[str, Any]:
    """Join the Ray cluster and return the runtime's singletons that exist, by name. Creates
    nothing: a namespace without a runtime gives an empty dict."""
    import logging

    import ray

    from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME

    if not ray.is_initialized():
        try:
            ray.init(address=address, namespace=settings.namespace, log_to_driver=False,
                     logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise ConfigurationError(f"cannot join Ray at {address}: {exc}") from None
    found = {}
    for name in (SCHEDULER_NAME, LOCKS_NAME, EVENTS_NAME):
        try:
            found[name] = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:  # no actor of that name
            pass
    return found


def _stored(settings: Any) -> str:
    """What the database holds, in one line (for when no runtime runs)."""
    import sqlalchemy as sa

    from omoi_ray.errors import DatabaseNotMigratedError
    from omoi_ray.store import migrate
    from omoi_ray.store.store import Store

    missing = _missing_database(settings)
    if missing:
        return missing
    url = settings.resolved_database_url()
    try:
        migrate.check(url)
        store = Store(url)
        try:
            counts = store.status_counts()
        finally:
            store.dispose()
    except DatabaseNotMigratedError as exc:
        return exc.message
    except sa.exc.SQLAlchemyError as exc:
        return f"the database {settings.safe_database_url()} cannot be read: {_first_line(exc)}"
    held = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
    total = sum(counts.values())
    return f"the database {settings.safe_database_url()} holds {total} task{'' if total == 1 else 's'}" + (
        f" ({held})" if held else "")


def _check_database_first(settings: Any, source: str) -> None:
    """Before a command that starts Ray (``demo``, ``run``): a database it cannot use fails now,
    in one line, not after Ray has started and logged. An existing SQLite file is opened, a
    missing one's folder must be one the run can make; a PostgreSQL server is connected to.
    Nothing is made or migrated here (``connect`` checks who owns the database first).
    ``source`` names where the URL came from (``--db``, ...), for the message.

    Raises:
        ConfigurationError: the SQLite file's folder cannot be made.
    """
    from sqlalchemy.engine import make_url

    from omoi_ray.store.store import make_engine

    url = settings.resolved_database_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return
        path = Path(parsed.database)
        if not path.exists():
            try:
                _check_creatable(path.parent)
            except OSError as exc:
                raise ConfigurationError(f"{source}: cannot create the database {settings.safe_database_url()}: "
                                         f"{exc.filename}: {exc.strerror or exc}") from None
            return  # the run creates it
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def _check_creatable(folder: Path) -> None:
    """Raise ``OSError`` naming ``folder`` unless it is a directory, or one that can be made
    (tried with a scratch folder in its nearest existing ancestor, removed at once)."""
    import tempfile

    missing = folder
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    if folder.exists() or missing.exists():
        if not folder.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(folder))
        return
    try:
        os.rmdir(tempfile.mkdtemp(dir=missing.parent))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(missing)) from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (``omoi_ray.cli.demo``); exit status 0 when every demo task completed, else 1."""
    from omoi_ray.cli.demo import run_demo

    settings = _settings(args)
    _check_database_first(settings, _database_source(args))
    result = run_demo(
        directory=Path(args.dir) if args.dir else None,
        files=args.files,
        settings=settings,
        ray_init={"num_cpus": args.num_cpus} if args.num_cpus else None,
        progress=not args.no_progress,
    )
    return 0 if result["statuses"].get("completed") == result["tasks"] else 1


def cmd_run(args: argparse.Namespace) -> int:
    """Apply a pattern and run it (``omoi_ray.cli.run``); exit status 0 when its final steps
    completed, else 1."""
    from omoi_ray.cli.run import run_pattern

    settings = _settings(args)
    _check_database_first(settings, _database_source(args))
    return run_pattern(args, settings)


def cmd_db(args: argparse.Namespace) -> int:
    """``db upgrade`` (migrate to head), ``db current`` (exit 1 when behind head) or ``db takeover``.

    Raises:
        ConfigurationError: ``current``/``takeover`` on a SQLite file that does not exist.
    """
    from omoi_ray.store import migrate

    settings = _settings(args)
    url = settings.resolved_database_url()
    if args.action == "upgrade":
        revision = migrate.upgrade(url)
        print(f"{settings.safe_database_url()} is at revision {revision} (head)")
        return 0
    missing = _missing_database(settings)  # current and takeover only read: they create nothing
    if missing:
        raise ConfigurationError(missing)
    if args.action == "takeover":
        return _db_takeover(settings, url)
    else:
        current = migrate.current_revision(url)
        head = migrate.head_revision()
        state = "up to date" if current == head else f"behind head {head}: run `omoi-ray db upgrade`"
        print(f"{settings.safe_database_url()}: revision {current or '(none)'}, {state}")
        return 0 if current == head else 1


def _db_takeover(settings, url: str) -> int:
    """End the current owner's claim on the database at once (its writers are fenced off); the
    next runtime to connect owns it."""
    from omoi_ray.core.ownership import describe_owner
    from omoi_ray.store import migrate, ownership
    from omoi_ray.store.store import make_engine

    migrate.check(url)
    engine = make_engine(url)
    try:
        removed = ownership.takeover(engine)
    finally:
        engine.dispose()
    where = settings.safe_database_url()
    if removed is None:
        print(f"{where} was owned by no runtime; the next runtime to connect owns it")
    else:
        print(f"{where} no longer belongs to the runtime in {describe_owner(removed)}; its writers "
              "can commit nothing more, and the next runtime to connect owns it")
    return 0


def _print_event(event, as_json: bool) -> None:
    import json

    if as_json:
        print(event.wire(), flush=True)
        return
    payload = json.dumps(event.payload, separators=(",", ":"), default=str) if event.payload else ""
    when = event.at.isoformat(timespec="milliseconds")
    print(f"{event.position:>14}  {when}  {event.type:<26} {event.entity_type}:{event.entity_id}  {payload}",
          flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    """Print recent events (from the database); with --follow keep printing new ones."""
    import asyncio

    from omoi_ray.client.follow import follow
    from omoi_ray.core.events import matches
    from omoi_ray.store import migrate
    from omoi_ray.store.events import EventLog
    from omoi_ray.store.store import make_engine

    settings = _settings(args)
    patterns = tuple(args.type or ())  # each checked by its argparse type
    missing = _missing_database(settings)
    if missing:
        raise ConfigurationError(missing)
    migrate.check(settings.resolved_database_url())
    engine = make_engine(settings.resolved_database_url())
    log = EventLog(engine)
    try:
        # The type filter is applied while reading, page by page, so ``--limit`` counts matches.
        if args.since is not None:
            events, start = [], args.since
            while len(events) < args.limit:
                page = log.read_after(start, args.limit)
                if not page:
                    break
                events += [e for e in page if matches(e.type, patterns)]
                start = page[-1].pos  # follow on after what was read
            if len(events) > args.limit:  # follow on after the last one printed
                events = events[: args.limit]
                start = events[-1].pos
        else:
            start = log.latest()  # follow on after it; the recent ones are read up to it
            wanted = args.limit
            while True:
                page = log.last(wanted, upto=start)
                events = [e for e in page if matches(e.type, patterns)]
                if len(events) >= args.limit or len(page) < wanted:
                    break
                wanted *= 4  # too few matches among the newest: look further back
            events = events[-args.limit:]
    finally:
        engine.dispose()
    for e in events:
        _print_event(e, args.json)
    if not args.follow:
        return 0

    async def run() -> None:
        async for e in follow(settings, since=start, types=patterns):
            _print_event(e, args.json)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show the runtime's tasks, agents and unclaimable work; creates nothing. Exit status 3 (and
    what the database holds) when no runtime runs in the namespace."""
    from rich.console import Console
    from rich.text import Text

    from omoi_ray.client.runtime import Runtime
    from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME

    settings = _settings(args)
    address = _address(args)
    found = _find_runtime(settings, address)
    console = Console(soft_wrap=True)
    if SCHEDULER_NAME not in found:
        console.print(Text(_stored(settings)))
        print(f"omoi-ray: no runtime is running in namespace '{settings.namespace}' on the Ray cluster at "
              f"{address}", file=sys.stderr)
        return 3
    rt = Runtime(settings, found[SCHEDULER_NAME], found.get(LOCKS_NAME), found.get(EVENTS_NAME))
    status = rt.status()
    relay = None if rt.relay is None else rt.relay_status()
    print_status(console, status, relay, settings.safe_database_url())
    return 0


def print_status(console: Any, status: Any, relay: dict[str, Any] | None, configured_database: str) -> None:
    """Print a ``RuntimeStatus`` and the relay's state (``Runtime.relay_status()``; None: no relay
    runs) on a rich console; every name and message is printed literally, and whole."""
    from rich.table import Table
    from rich.text import Text

    from omoi_ray.client.progress import unhandled_line

    console.print(Text(f"namespace {status.namespace}, database {status.database}, {status.ready} ready"),
                  soft_wrap=True)
    if status.database != configured_database:
        console.print(Text(f"note: this runtime's database is not the configured {configured_database}",
                           style="yellow"), soft_wrap=True)
    if relay is None:
        console.print(Text("events: the relay is not running", style="yellow"))
    elif relay["redis"] is None:
        console.print(Text("events: kept in the database (no OMOI_REDIS_URL)"))
    else:
        if relay["redis_up"]:
            state = Text("up")
        elif not relay["last_error"]:  # the relay has not reached Redis yet, nor failed to
            state = Text("connecting", style="yellow")
        else:
            state = Text.assemble(("unreachable", "red"), f" ({relay['last_error']})")
        console.print(Text.assemble(
            f"events: mirrored to {relay['redis']} stream {relay['stream']} (", state,
            f"), at {relay['cursor']}, lag {relay['lag_seconds']:.3f} s"), soft_wrap=True)
    tasks = Table(title="tasks")
    tasks.add_column("status", overflow="fold")  # fold, never cut: names are printed whole
    tasks.add_column("count", justify="right", overflow="fold")
    for name, n in sorted(status.tasks.items()):
        tasks.add_row(Text(name), str(n))
    console.print(tasks)
    agents = Table(title="agents")
    for col in ("agent", "status", "capabilities", "busy/capacity"):
        agents.add_column(col, overflow="fold")
    for a in status.agents:
        busy = f"{a.busy}/{a.capacity}" + (f" ({a.zombies} held by zombie handlers, draining)" if a.zombies else "")
        agents.add_row(Text(a.id), Text(a.status), Text(", ".join(a.capabilities)), busy)
    console.print(agents)
    for requires, count in status.unclaimable:
        console.print(Text(f"{count} ready tasks need [{', '.join(requires)}]: no live agent can run them",
                           style="yellow"), soft_wrap=True)
    for task_type, requires, count in status.unhandled:
        console.print(Text(unhandled_line(task_type, requires, count), style="yellow"), soft_wrap=True)


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the runtime's agents and singletons; with no runtime running there is nothing to do."""
    import ray

    from omoi_ray.client.runtime import Runtime
    from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME

    settings = _settings(args)
    found = _find_runtime(settings, _address(args))
    if not found:
        print(f"no runtime is running in namespace '{settings.namespace}': nothing to stop")
        return 0
    if len(found) == 3:
        Runtime(settings, found[SCHEDULER_NAME], found[LOCKS_NAME], found[EVENTS_NAME]).shutdown()
    else:  # a runtime half gone: end what is left of it
        for handle in found.values():
            ray.kill(handle)
    print("runtime stopped (its state stays in the database)")
    return 0


def _fail(message: str, code: int) -> NoReturn:
    print(f"omoi-ray: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code)


def _settings_error(exc: Any, args: argparse.Namespace) -> str:
    """A ``Settings`` ``ConfigurationError`` (its ``problems``) as one line naming the flag or variable."""
    problems = exc.problems
    field, message = problems[0]
    field = field.split(".")[0]
    flag, attr = _FLAGS.get(field, (None, None))
    name = flag if attr and getattr(args, attr, None) else f"OMOI_{field.upper()}"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{name}: {message}{more}"


def _database_source(args: argparse.Namespace) -> str:
    """Where the database URL came from: the flag or variable a user would change."""
    if getattr(args, "db", None):
        return "--db"
    if os.environ.get("OMOI_DATABASE_URL"):
        return "OMOI_DATABASE_URL"
    return "--home" if getattr(args, "home", None) else "OMOI_HOME"


def _run(args: argparse.Namespace) -> int:
    """Run the command; every error a user can cause becomes one line and exit status 2
    (see the module rules), other typed errors one line and exit status 1."""
    import sqlalchemy as sa

    from omoi_ray.errors import OmoiError

    try:
        return args.func(args)
    except sa.exc.ArgumentError as exc:  # a URL SQLAlchemy cannot use (driver missing, bad form)
        _fail(f"{_database_source(args)}: the database URL cannot be used: {_first_line(exc)}", 2)
    except sa.exc.DatabaseError as exc:  # cannot connect, or what is there is not a database it can use
        _fail(f"{_database_source(args)}: cannot use the database {_settings(args).safe_database_url()}: "
              f"{_first_line(exc)}", 2)
    except OmoiError as exc:
        if isinstance(exc, ConfigurationError) and getattr(exc, "problems", None):
            _fail(_settings_error(exc, args), 2)  # a bad setting: name the flag or variable to change
        _fail(exc.message, 2 if isinstance(exc, (ConfigurationError, ValueError)) else 1)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        return 1
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave
            raise
        _fail(f"{exc.filename}: {exc.strerror or exc}", 2)
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Run ``omoi-ray`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status of a
    command that ran (0, 1 or 3, see the module rules). Errors print one line on stderr and raise
    ``SystemExit`` with their status (2 for anything the command was given and cannot use)."""
    from omoi_ray.cli.demo import DEMO_NAMESPACE, MAX_DEMO_FILES
    from omoi_ray.cli.run import DEMO_HANDLERS, parse_set
    from omoi_ray.cli.run import DEMO_NAMESPACE as RUN_NAMESPACE
    from omoi_ray.core.storable import MAX_EVENTS_LIMIT

    parser = _Parser(prog="omoi-ray", description="Durable coordination of agent teams on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    from omoi_ray.settings import default_home

    embedded = str(default_home() / "omoi.db").replace("%", "%%")  # argparse formats help with %

    def common(p: argparse.ArgumentParser, namespace: str = "OMOI_NAMESPACE, default omoi") -> None:
        p.add_argument("--db", help="database URL (default: OMOI_DATABASE_URL, else the SQLite file omoi.db "
                                    f"under --home or OMOI_HOME: here {embedded})")
        p.add_argument("--home", help="directory for the embedded database and workspaces (OMOI_HOME)")
        p.add_argument("--namespace", help=f"Ray namespace of the runtime ({namespace})")

    demo = sub.add_parser("demo", help="run the demo DAG on a local Ray with three agents")
    common(demo, namespace=f"default {DEMO_NAMESPACE}")
    demo.add_argument("--dir", type=_directory,
                      help="directory of .py files to analyse (default: parts of the stdlib)")
    demo.add_argument("--files", type=_whole_number(1, MAX_DEMO_FILES), default=60,
                      help=f"at most this many files, 1 to {MAX_DEMO_FILES} (default 60)")
    demo.add_argument("--num-cpus", type=_whole_number(1, 1024), default=None,
                      help="CPUs for the local Ray, 1 to 1024 (default: all)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress bar")
    demo.set_defaults(func=cmd_demo, namespace=None)

    run = sub.add_parser("run", help="apply a pattern file and run it to its end, printing its outcome")
    common(run)
    run.add_argument("pattern", help="a shipped pattern's name (majority_vote) or a YAML file's path")
    run.add_argument("--set", action="append", type=parse_set, metavar="NAME=VALUE",
                     help="a parameter (repeatable); the value is JSON if it parses, else text")
    run.add_argument("--handlers", help="module whose HANDLERS (task type -> function) one agent runs")
    run.add_argument("--demo", action="store_true",
                     help=f"run with {DEMO_HANDLERS} on the embedded default (namespace {RUN_NAMESPACE})")
    run.add_argument("--ticket", help="ticket id every task carries")
    run.add_argument("--id-prefix", help="task id prefix (default: the pattern's name and 8 hex digits)")
    run.add_argument("--timeout", type=_whole_number(1, 10**6), default=None, help="seconds to wait (default: no limit)")
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database schema (upgrade, current) and ownership (takeover)",
                        description="upgrade: create the schema or migrate it to the newest revision. "
                        "current: print the database's revision; exit status 1 when it is behind. "
                        "takeover: free the database from the runtime that owns it, at once (when that "
                        "runtime is gone; its writers are fenced off).")
    db.add_argument("action", choices=["upgrade", "current", "takeover"],
                    help="upgrade: migrate to the newest revision; current: show the revision (exit 1 "
                    "when behind); takeover: free the database from the runtime that owns it")
    common(db)
    db.set_defaults(func=cmd_db)

    events = sub.add_parser("events", help="print recent events; --follow keeps printing new ones")
    common(events)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing events as they commit")
    events.add_argument("--type", "-t", action="append", default=None, type=_type_pattern,
                        help="only these types; shell patterns, repeatable (e.g. --type 'task.*')")
    events.add_argument("--since", type=_position,
                        help="start after this position, <major>-<minor> or a bare number N meaning 0-N "
                             "(e.g. 0-0 for everything retained)")
    events.add_argument("--limit", type=_whole_number(1, MAX_EVENTS_LIMIT), default=20,
                        help=f"how many past events to print, 1 to {MAX_EVENTS_LIMIT} (default 20; "
                             "with --since: how many to read)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--redis", help="Redis URL to follow (default OMOI_REDIS_URL; none: the database)")
    events.add_argument("--prefix", help="Redis key prefix (default OMOI_REDIS_PREFIX, else omoi)")
    events.set_defaults(func=cmd_events)

    for name, func, text in (
        ("status", cmd_status, "show tasks, agents and unclaimable work of a running runtime"),
        ("down", cmd_down, "stop a running runtime's agents and scheduler"),
    ):
        p = sub.add_parser(name, help=text)
        common(p)
        p.add_argument("--address", type=_ray_address,
                       help="Ray address: host:port, ray://host:port or auto (default RAY_ADDRESS)")
        p.set_defaults(func=func)

    args = parser.parse_args(argv)
    if args.command == "demo" and not args.namespace:
        args.namespace = DEMO_NAMESPACE
    if args.command == "run" and args.demo and not args.namespace:
        args.namespace = RUN_NAMESPACE
    return _run(args)

