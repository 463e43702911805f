"""The ``omoi-ray`` command: demo, database migrations, events, runtime status and teardown."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import SecretStr


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


def cmd_demo(args: argparse.Namespace) -> int:
    from omoi_ray.demo import run_demo

    settings = _settings(args)
    result = run_demo(
        directory=Path(args.dir) if args.dir else None,
        files=args.files,
        settings=settings,
        ray_init={"num_cpus": args.num_cpus} if args.num_cpus else None,
        progress=not args.no_progress,
    )
    return 0 if result["statuses"].get("completed") == result["tasks"] else 1


def cmd_db(args: argparse.Namespace) -> int:
    from omoi_ray.store import migrate

    settings = _settings(args)
    url = settings.resolved_database_url()
    if args.action == "upgrade":
        revision = migrate.upgrade(url)
        print(f"{settings.safe_database_url()} is at revision {revision} (head)")
    elif args.action == "takeover":
        return _db_takeover(settings, url)
    else:
        current = migrate.current_revision(url)
        head = migrate.head_revision()
        state = "up to date" if current == head else f"behind head {head}: run `omoi-ray db upgrade`"
        print(f"{settings.safe_database_url()}: revision {current or '(none)'}, {state}")
        return 0 if current == head else 1
    return 0


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

    from omoi_ray.errors import InvalidEventQueryError
    from omoi_ray.events import Position
    from omoi_ray.follow import check_types, follow
    from omoi_ray.store import migrate
    from omoi_ray.store.event_log import EventLog
    from omoi_ray.store.store import make_engine

    from omoi_ray.core.event_types import matches

    settings = _settings(args)
    patterns = check_types(args.type)
    if args.limit <= 0:
        raise InvalidEventQueryError("--limit must be a positive number of events")
    migrate.check(settings.resolved_database_url())
    engine = make_engine(settings.resolved_database_url())
    log = EventLog(engine)
    try:
        if args.since is not None:
            page = log.read_after(Position.parse(args.since), args.limit)
            start = page[-1].pos if page else Position.parse(args.since)  # follow on after the page
        else:
            start = log.latest()  # follow on after it; the recent ones are read up to it
            page = log.last(args.limit * 20 if patterns else args.limit, upto=start)
        events = [e for e in page if matches(e.type, patterns)]
        if args.since is None:
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


def _connect(args: argparse.Namespace):
    import omoi_ray as omoi

    if not os.environ.get("RAY_ADDRESS") and not args.address:
        print("set RAY_ADDRESS (or --address) to the Ray cluster the runtime runs on", file=sys.stderr)
        raise SystemExit(2)
    return omoi.connect(_settings(args), address=args.address)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rt = _connect(args)
    status = rt.status()
    console = Console()
    console.print(f"namespace {status.namespace}, database {status.database}, {status.ready} ready")
    relay = rt.relay_status()
    if relay["redis"] is None:
        console.print("events: kept in the database (no OMOI_REDIS_URL)")
    else:
        state = "up" if relay["redis_up"] else f"[red]unreachable[/red] ({relay['last_error']})"
        console.print(f"events: mirrored to {relay['redis']} stream {relay['stream']} ({state}), "
                      f"at {relay['cursor']}, lag {relay['lag_seconds']:.3f} s")
    tasks = Table(title="tasks")
    tasks.add_column("status")
    tasks.add_column("count", justify="right")
    for name, n in sorted(status.tasks.items()):
        tasks.add_row(name, str(n))
    console.print(tasks)
    agents = Table(title="agents")
    for col in ("agent", "status", "capabilities", "busy/capacity"):
        agents.add_column(col)
    for a in status.agents:
        agents.add_row(a.id, a.status, ", ".join(a.capabilities), f"{a.busy}/{a.capacity}")
    console.print(agents)
    for requires, count in status.unclaimable:
        console.print(f"[yellow]{count} ready tasks need [{', '.join(requires)}]: no live agent can run them[/yellow]")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _connect(args).shutdown()
    print("runtime stopped (its state stays in the database)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omoi-ray", description="Durable coordination of agent teams on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="database URL (default: OMOI_DATABASE_URL, else ~/.omoi-ray/omoi.db)")
        p.add_argument("--home", help="directory for the embedded database and workspaces (OMOI_HOME)")
        p.add_argument("--namespace", help="Ray namespace of the runtime (OMOI_NAMESPACE, default omoi)")

    demo = sub.add_parser("demo", help="run the demo DAG on a local Ray with three agents")
    common(demo)
    demo.add_argument("--dir", help="directory of .py files to analyse (default: parts of the stdlib)")
    demo.add_argument("--files", type=int, default=60, help="at most this many files (default 60)")
    demo.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    demo.add_argument("--no-progress", action="store_true", help="no live progress bar")
    demo.set_defaults(func=cmd_demo, namespace=None)

    db = sub.add_parser("db", help="database schema: upgrade to head, or show the current revision")
    db.add_argument("action", choices=["upgrade", "current", "takeover"],
                    help="takeover: free the database from the runtime that owns it (when that "
                    "runtime is gone), at once")
    common(db)
    db.set_defaults(func=cmd_db)

    events = sub.add_parser("events", help="print recent events; --follow keeps printing new ones")
    common(events)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing events as they commit")
    events.add_argument("--type", "-t", action="append", default=None,
                        help="only these types; shell patterns, repeatable (e.g. --type 'task.*')")
    events.add_argument("--since", help="start after this position (e.g. 0-0 for everything retained)")
    events.add_argument("--limit", type=int, default=20,
                        help="how many past events to print (default 20; with --since: how many to read)")
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
        p.add_argument("--address", help="Ray address (default RAY_ADDRESS)")
        p.set_defaults(func=func)

    args = parser.parse_args(argv)
    if args.command == "demo" and not args.namespace:
        args.namespace = "omoi-demo"
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - show typed errors as one line, not a traceback
        from omoi_ray.errors import OmoiError

        if isinstance(exc, OmoiError):
            print(f"omoi-ray: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
