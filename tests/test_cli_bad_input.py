"""The command line under bad input: one line on stderr, exit status 2, no traceback, nothing made.

Most cases run ``python -m omoi_ray.cli`` in a subprocess with no Ray anywhere: argument errors
must fail before Ray or a database is touched. The read-only test and the running-runtime test
join the session's Ray by address (each CLI process costs a few seconds there).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid

import pytest

from omoi_ray.core.model import Event, EventBatch
from omoi_ray.specs.events import Position
from omoi_ray.store import migrate
from omoi_ray.store.events import EventLog
from omoi_ray.store.store import Store, make_engine
from tests.conftest import ROOT

SECRET = "s3cr3t-Pa55"


def run_cli(*args: str, env: dict[str, str] | None = None, home=None, timeout: float = 60.0):
    """Run the CLI in a subprocess with a clean environment (no OMOI_* or RAY_ADDRESS unless given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_") and k != "RAY_ADDRESS"}
    base.update(PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", COLUMNS="80")
    if home is not None:
        base["OMOI_HOME"] = str(home)
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "omoi_ray.cli", *args], env=base, capture_output=True, check=False,
                          text=True, timeout=timeout)


def assert_one_line_error(out, names: str, code: int = 2) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert names in lines[0], lines[0]
    assert out.returncode == code, (out.returncode, out.stderr)
    return lines[0]


# (arguments, extra environment, the text the one line must hold)
BAD = [
    (["events", "--namespace", "bad ns"], {}, "--namespace"),
    (["status", "--namespace", "bad ns", "--address", "127.0.0.1:1"], {}, "--namespace"),
    (["events"], {"OMOI_NAMESPACE": "bad ns"}, "OMOI_NAMESPACE"),
    (["events"], {"OMOI_LEASE_TTL": "nan"}, "OMOI_LEASE_TTL"),
    (["events", "--db", "bogus://x"], {}, "--db"),
    (["events", "--db", "mysql://u@db.example/omoi"], {}, "--db"),
    (["db", "current", "--db", "bogus://x"], {}, "--db"),
    (["events"], {"OMOI_DATABASE_URL": "bogus://x"}, "OMOI_DATABASE_URL"),
    (["events", "--db", "sqlite:////nonexistent/dir/x.db"], {}, "/nonexistent/dir/x.db"),
    (["events", "--db", "postgresql://postgres@127.0.0.1:1/x"], {}, "127.0.0.1:1/x"),
    (["db", "current", "--db", "postgresql://postgres@127.0.0.1:1/x"], {}, "127.0.0.1:1/x"),
    (["events", "--db", f"postgresql://app:{SECRET}@127.0.0.1:1/x"], {}, "app:***@"),
    (["events", "--db", "postgresql://u@[bad/x"], {}, "--db"),
    (["events"], {"OMOI_DATABASE_URL": "postgresql://u@[bad/x"}, "OMOI_DATABASE_URL"),
    (["events", "--redis", "http://x"], {}, "--redis"),
    (["events", "--prefix", "a b"], {}, "--prefix"),
    (["events", "--type", "["], {}, "--type"),
    (["events", "--type", "task completed"], {}, "--type"),
    (["events", "--since", "abc"], {}, "--since"),
    (["events", "--since", "-1"], {}, "--since"),
    (["events", "--since", "0-100000000000000000000"], {}, "--since"),
    (["events", "--limit", "0"], {}, "--limit"),
    (["events", "--limit", "100001"], {}, "--limit"),
    (["events", "--limit", "1e3"], {}, "--limit"),
    (["events", "--limit", "\u0663"], {}, "--limit"),  # an Arabic-Indic 3: int() would take it
    (["events", "--limit", " 3"], {}, "--limit"),
    (["events"], {"OMOI_LOCK_TTL": "200000"}, "OMOI_LOCK_TTL"),  # past the longest lock lease
    (["events"], {"OMOI_EVENTS_BATCH": "1000000000000"}, "OMOI_EVENTS_BATCH"),  # past the most per read
    (["events"], {"OMOI_LEASE_TTL": "1e300"}, "OMOI_LEASE_TTL"),  # now + lease past any storable time
    (["events"], {}, "does not exist"),  # no database yet: reported, not created
    (["status", "--address", "garbage"], {}, "--address"),
    (["status", "--address", "127.0.0.1:99999"], {}, "--address"),
    (["status", "--address", "127.0.0.1:1"], {}, "cannot reach Ray at 127.0.0.1:1"),
    (["status", "--address", "ray://nohost.invalid:10001"], {}, "nohost.invalid"),
    (["status"], {}, "RAY_ADDRESS"),
    (["status"], {"RAY_ADDRESS": "garbage"}, "RAY_ADDRESS"),
    (["down", "--address", "garbage"], {}, "--address"),
    # a database the run cannot use fails before Ray starts (Ray would log a line of its own first)
    (["demo", "--files", "1", "--db", "postgresql://postgres@127.0.0.1:1/x"], {}, "--db: cannot use the database"),
    (["run", "majority_vote", "--demo", "--db", "postgresql://postgres@127.0.0.1:1/x"], {}, "127.0.0.1:1/x"),
    (["demo", "--files", "1", "--db", "sqlite:////proc/omoi-no-such-dir/x.db"], {},
     "--db: cannot create the database sqlite:////proc/omoi-no-such-dir/x.db: /proc/omoi-no-such-dir"),
    (["run", "majority_vote", "--demo", "--db", "sqlite:////proc/omoi-no-such-dir/x.db"], {},
     "--db: cannot create the database sqlite:////proc/omoi-no-such-dir/x.db: /proc/omoi-no-such-dir"),
    (["demo", "--files", "1"], {"OMOI_DATABASE_URL": "sqlite:////etc/passwd/x.db"},
     "OMOI_DATABASE_URL: cannot create the database sqlite:////etc/passwd/x.db: /etc/passwd: Not a directory"),
    # an in-memory SQLite database is one per process: refused before Ray starts
    (["run", "majority_vote", "--demo", "--db", "sqlite://"], {}, "--db: is an in-memory SQLite database"),
    (["demo", "--files", "1", "--db", "sqlite:///:memory:"], {}, "--db: is an in-memory SQLite database"),
    (["run", "majority_vote", "--demo"], {"OMOI_DATABASE_URL": "sqlite:///:memory:"}, "in-memory SQLite"),
    (["demo", "--num-cpus", "-1"], {}, "--num-cpus"),
    (["demo", "--files", "-1"], {}, "--files"),
    (["demo", "--files", "0"], {}, "--files"),
    (["demo", "--files", "many"], {}, "--files"),
    (["demo", "--dir", "/nonexistent/dir"], {}, "--dir"),
    (["db", "upgrade", "--home", "/proc/omoi-no-such-dir"], {}, "/proc/omoi-no-such-dir"),
    (["db", "upgrade", "--home", "/etc/passwd"], {}, "/etc/passwd"),
    (["db", "frob"], {}, "invalid choice"),
    (["nosuch"], {}, "invalid choice"),
]


@pytest.mark.parametrize("args,env,names", BAD, ids=[" ".join(a) + ("+env" if e else "") for a, e, _ in BAD])
def test_a_bad_argument_is_one_line_and_exit_status_2(args, env, names, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = run_cli(*args, env=env, home=home)
    line = assert_one_line_error(out, names)
    assert out.stdout == ""
    assert SECRET not in line
    assert list(home.iterdir()) == []  # no database, no workspace: nothing was made


@pytest.mark.parametrize("answer", [None, b"-ERR unknown command\r\n"], ids=["silent", "not-grpc"])
def test_status_gives_up_on_an_address_that_is_not_ray(answer, tmp_path):
    import socket
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        if answer is not None:
            def reply() -> None:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(answer)

            threading.Thread(target=reply, daemon=True).start()
        out = run_cli("status", "--address", f"127.0.0.1:{port}", home=tmp_path)
    assert_one_line_error(out, f"127.0.0.1:{port} does not answer as a Ray cluster")
    assert list(tmp_path.iterdir()) == []


def test_status_gives_up_at_once_on_a_grpc_server_that_is_not_rays_gcs(tmp_path):
    # e.g. Ray Client's port given without ray://, or another gRPC service: ray.init would retry
    # against it for half a minute, logging every second
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=1))  # no service: every call is UNIMPLEMENTED
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = run_cli("status", "--address", f"127.0.0.1:{port}", home=tmp_path)
    finally:
        server.stop(None)
    assert_one_line_error(out, f"127.0.0.1:{port} does not answer as a Ray cluster (no Ray GCS server there: "
                               "its gRPC server answered UNIMPLEMENTED)")
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_demo_on_a_directory_without_python_files_is_one_line_before_ray_starts(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli("demo", "--dir", str(empty), home=tmp_path / "home")
    assert_one_line_error(out, f"{empty}: no .py files found")
    assert not (tmp_path / "home").exists()


# ------------------------------------------------------------------ events past the end


def _write_events(url: str, n: int) -> None:
    store = Store(url)
    try:
        store.writer.apply(EventBatch([Event("task.created", "task", f"t{i}", time.time(), {"i": i})
                                       for i in range(n)]))
    finally:
        store.dispose()


def test_events_since_a_position_past_the_end_prints_nothing_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'omoi.db'}"
    migrate.upgrade(url)
    _write_events(url, 3)
    past = run_cli("events", "--db", url, "--since", "99999999-0")
    assert past.returncode == 0 and past.stdout == "" and past.stderr == ""
    everything = run_cli("events", "--db", url, "--since", "0-0")
    assert everything.returncode == 0, everything.stderr
    assert [line.split()[3] for line in everything.stdout.splitlines()] == ["task:t0", "task:t1", "task:t2"]


def _write_typed_events(url: str, types: list[str]) -> None:
    store = Store(url)
    try:
        store.writer.apply(EventBatch([Event(t, "task", f"t{i}", time.time(), {}) for i, t in enumerate(types)]))
    finally:
        store.dispose()


def test_events_type_filter_counts_matches_towards_the_limit(tmp_path):
    url = f"sqlite:///{tmp_path / 'omoi.db'}"
    migrate.upgrade(url)
    # 3 lock events among 100 task events, the last one far from the newest
    _write_typed_events(url, ["lock.granted"] + ["task.created"] * 40 + ["lock.granted"] * 2 + ["task.created"] * 60)
    since = run_cli("events", "--db", url, "--since", "0-0", "--type", "lock.*", "--limit", "2")
    assert since.returncode == 0, since.stderr
    assert [line.split()[3] for line in since.stdout.splitlines()] == ["task:t0", "task:t41"]
    recent = run_cli("events", "--db", url, "--type", "lock.*", "--limit", "3")
    assert recent.returncode == 0, recent.stderr
    assert [line.split()[3] for line in recent.stdout.splitlines()] == ["task:t0", "task:t41", "task:t42"]


def test_events_into_a_closed_pipe_ends_quietly(tmp_path):
    url = f"sqlite:///{tmp_path / 'omoi.db'}"
    migrate.upgrade(url)
    _write_events(url, 3000)
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    base.update(PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "omoi_ray.cli", "events", "--db", url, "--since", "0-0",
                             "--limit", "3000", "--json"], env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("args", [["events"], ["events", "--since", "0-0"], ["db", "current"], ["db", "upgrade"],
                                  ["db", "takeover"], ["demo", "--files", "1"], ["run", "majority_vote", "--demo"]],
                         ids=" ".join)
def test_a_database_url_naming_a_file_that_is_not_a_database_is_one_line(args, tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a database\n")
    out = run_cli(*args, "--db", f"sqlite:///{path}")
    assert_one_line_error(out, f"--db: cannot use the database sqlite:///{path}: file is not a database")
    assert out.stdout == ""  # refused before anything started
    assert path.read_text() == "these are notes, not a database\n"  # left as it was


@pytest.mark.parametrize("action", ["current", "takeover"])
def test_db_reading_commands_do_not_create_a_sqlite_file(action, tmp_path):
    path = tmp_path / "new.db"
    out = run_cli("db", action, "--db", f"sqlite:///{path}")
    assert_one_line_error(out, "does not exist")
    assert not path.exists()


def test_the_event_log_reads_nothing_after_a_position_past_the_end(db_url):
    _write_events(db_url, 3)
    engine = make_engine(db_url)
    try:
        log = EventLog(engine)
        written = log.latest(readable=False)
        # PostgreSQL shows rows once no older transaction on the server is open (other tests'
        # may be): wait, bounded, until the three are readable.
        deadline = time.monotonic() + 60
        while log.latest() != written:
            assert time.monotonic() < deadline, "the events never became readable"
            time.sleep(0.05)
        past = Position(written.major + 10**12, 0)
        assert log.read_after(past) == []
        assert [e.entity_id for e in log.read_after(Position(0, 0))] == ["t0", "t1", "t2"]
        assert [e.entity_id for e in log.read_after(Position(0, 0), before=past)] == ["t0", "t1", "t2"]
        assert [e.entity_id for e in log.last(10, upto=past)] == ["t0", "t1", "t2"]
    finally:
        engine.dispose()


# ------------------------------------------------------------------ literal text, 80 columns


def _console(width: int = 80):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)


def test_progress_shows_user_text_literally_and_every_count_whole_at_80_columns():
    from omoi_ray.client.progress import ProgressBar

    console = _console()
    bar = ProgressBar(12345, "12345 tasks [bold]", console=console)
    finished = {f"t{i}": "completed" for i in range(1000)} | {"x": "failed"}
    live = {"pending": 9000, "ready": 2000, "running": 300, "claimed": 44, "retry_wait": 3}
    bar.update(finished, live, [(["gpu"], 1), (["read", "write.disk:fast"], 12)], [("[red]x", ["gpu"], 5)])
    bar.close()
    text = console.file.getvalue()
    assert "12345 tasks [bold]" in text
    assert "1001/12345" in text
    for part in ("claimed 44", "pending 9000", "ready 2000", "retry_wait 3", "running 300", "not completed 1"):
        assert part in text
    assert "1 ready need [gpu]: no live agent can run them" in text
    assert "12 ready need [read, write.disk:fast]: no live agent can run them" in text
    assert "5 ready of type '[red]x': no live agent with [gpu] handles that type" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "\u2026" not in text  # nothing was cut with an ellipsis


def test_status_prints_names_capabilities_and_errors_literally():
    from omoi_ray.cli import print_status
    from omoi_ray.protocol import AgentView, RuntimeStatus

    status = RuntimeStatus(
        database="sqlite:////tmp/[x]/omoi.db", namespace="ns", tasks={"ready": 2},
        agents=[AgentView(id="gpu-1", status="alive", capabilities=["[gpu]", "red"], capacity=2, busy=1,
                          info={})],
        unclaimable=[(["gpu"], 2)], ready=2, unhandled=[("[review]", ["red"], 3), ("plain", [], 1)],
    )
    relay = {"redis": "redis://h:6379/0", "stream": "omoi:events", "redis_up": False,
             "last_error": "[bold]Error 111[/bold] connecting", "cursor": "0-3", "lag_seconds": 0.5}
    console = _console()
    print_status(console, status, relay, "sqlite:////tmp/[x]/omoi.db")
    text = console.file.getvalue()
    assert "database sqlite:////tmp/[x]/omoi.db" in text
    assert "unreachable ([bold]Error 111[/bold] connecting)" in text
    assert "[gpu], red" in text
    assert "2 ready tasks need [gpu]: no live agent can run them" in text
    assert "3 ready of type '[review]': no live agent with [red] handles that type" in text
    assert "1 ready of type 'plain': no live agent handles that type" in text
    assert "note:" not in text  # the configured database is the runtime's


def test_the_demo_report_prints_names_literally_and_the_path_whole_at_80_columns(tmp_path):
    from omoi_ray.cli.demo import print_report

    path = tmp_path / ("deep-" * 12) / "[gpu]" / "report.json"
    report = {"files": 3, "directories": 1, "totals": {"lines": 10, "functions": 2, "classes": 1},
              "largest_files": [("[red]a.py", 7), ("b.py", 3)], "written_to": str(path)}
    console = _console()
    print_report(console, report)
    lines = console.file.getvalue().splitlines()
    assert len(str(path)) > 80
    assert f"report written to {path}" in lines
    assert "largest files: [red]a.py (7), b.py (3)" in lines
    assert "report: 3 files in 1 directories, 10 lines, 2 functions, 1 classes" in lines


def test_demo_help_names_the_namespace_the_demo_uses():
    from omoi_ray.cli.demo import DEMO_NAMESPACE

    out = run_cli("demo", "--help")
    assert out.returncode == 0
    assert f"default {DEMO_NAMESPACE}" in " ".join(out.stdout.split())
    assert "default omoi)" not in out.stdout


def test_run_demo_refuses_a_bad_file_count_before_starting_anything():
    from omoi_ray.cli.demo import run_demo

    for bad in (-1, 0, True, 2.5):
        with pytest.raises(ValueError, match="files must be"):
            run_demo(files=bad, console=_console())


# ------------------------------------------------------------------ read-only commands (Ray)


def _named_actors() -> set[tuple[str, str]]:
    import ray

    return {(a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)}


@pytest.mark.ray
def test_status_on_a_namespace_without_a_runtime_creates_nothing(ray_session, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    namespace = f"cli-empty-{uuid.uuid4().hex[:6]}"
    before = _named_actors()
    out = run_cli("status", "--address", address, "--namespace", namespace, home=tmp_path, timeout=120)
    assert_one_line_error(out, f"no runtime is running in namespace '{namespace}'", code=3)
    assert "does not exist" in out.stdout
    assert _named_actors() == before
    assert list(tmp_path.iterdir()) == []  # no database file either


@pytest.mark.ray
def test_status_and_down_find_a_running_runtime_by_name(ray_session, tmp_path):
    import ray

    import omoi_ray as omoi
    from tests.conftest import make_settings

    address = ray.get_runtime_context().gcs_address
    namespace = f"cli-run-{uuid.uuid4().hex[:6]}"
    rt = omoi.connect(make_settings(tmp_path, None, namespace), migrate=True)
    try:
        rt.submit([{"id": "needs-gpu", "type": "x", "requires": ["gpu"]}])
        before = _named_actors()
        out = run_cli("status", "--address", address, "--namespace", namespace, home=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "1 ready tasks need [gpu]: no live agent can run them" in out.stdout
        assert _named_actors() == before
        down = run_cli("down", "--address", address, "--namespace", namespace, home=tmp_path, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "runtime stopped" in down.stdout
        assert not {name for ns, name in _named_actors() if ns == namespace}
        again = run_cli("status", "--address", address, "--namespace", namespace, home=tmp_path, timeout=120)
        assert again.returncode == 3
        assert "holds 1 task (ready 1)" in again.stdout
    finally:
        if {name for ns, name in _named_actors() if ns == namespace}:
            rt.shutdown(agents_timeout=2.0)


def test_status_prints_the_longest_names_whole_at_80_columns():
    from omoi_ray.cli import print_status
    from omoi_ray.protocol import AgentView, RuntimeStatus

    name = "agent-" + "a" * 122  # the longest agent name, 128 characters
    caps = ["c" * 64, "d" * 64]  # the longest capabilities
    status = RuntimeStatus(
        database="sqlite:////tmp/omoi.db", namespace="ns", tasks={"ready": 123456789}, ready=0, unclaimable=[],
        agents=[AgentView(id=name, status="alive", capabilities=caps, capacity=1024, busy=1000, info={}, zombies=3)],
    )
    console = _console()
    print_status(console, status, {"redis": None}, "sqlite:////tmp/omoi.db")
    text = console.file.getvalue()
    assert "\u2026" not in text  # nothing was cut with an ellipsis
    rows = [line.split("\u2502")[1:-1] for line in text.splitlines() if line.startswith("\u2502")]
    columns = ["".join("".join(row[i].split()) for row in rows if len(row) > i) for i in range(4)]
    assert name in columns[0] and "123456789" in columns[1]
    assert all(cap in columns[2] for cap in caps) and "1000/1024" in columns[3]


def test_status_shows_slots_held_by_zombie_handlers():
    from omoi_ray.cli import print_status
    from omoi_ray.protocol import AgentView, RuntimeStatus

    status = RuntimeStatus(
        database="sqlite:////tmp/omoi.db", namespace="ns", tasks={"running": 3},
        agents=[AgentView(id="a1", status="alive", capabilities=[], capacity=4, busy=3, info={}, zombies=1),
                AgentView(id="a2", status="alive", capabilities=[], capacity=1, busy=1, info={})],
        unclaimable=[], ready=0,
    )
    console = _console()
    print_status(console, status, {"redis": None}, "sqlite:////tmp/omoi.db")
    lines = console.file.getvalue().splitlines()
    assert any("a1" in line and "3/4 (1 held by zombie handlers, draining)" in line for line in lines)
    assert not any("a2" in line and "zombie" in line for line in lines)
