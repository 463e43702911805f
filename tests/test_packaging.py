"""The documented ways of running work with the packaging (setup.py, ``omoi_ray/_layout.py``).

A wheel built from a copy of the repository installs, non-editable, into a fresh virtualenv (its
dependencies come from the test environment, so nothing is downloaded but the build backend),
and then:
(a) a driver run from a user's project that has its own ``actors/`` and ``migrations/`` packages
    runs a task through the runtime, and both sides keep their own packages;
(b) the same driver submitted with ``ray job submit --working-dir <the repository copy>`` runs
    there too: the working directory comes first on the import path, so the checkout's
    ``omoi_ray`` (and its sibling ``actors/``) is what the job imports.
Both run on one local Ray head started for this test, on free ports and its own temp dir, and
stopped by its process group (never ``ray stop``). Slow (a wheel build, a Ray head): it runs
when ``OMOI_TEST_PACKAGING=1`` (CI does, see .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, until

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(os.environ.get("OMOI_TEST_PACKAGING") != "1",
                       reason="builds a wheel and starts a Ray head: set OMOI_TEST_PACKAGING=1"),
]

DRIVER = '''\
"""Run one task through omoi-ray and print where each package came from."""
import json
import sys
from pathlib import Path

import omoi_ray as omoi
import omoi_ray.actors
import omoi_ray.migrations

if "--user-project" in sys.argv:  # the user's own packages are theirs, and ours stay ours
    import actors  # the user's folder, not ours
    import migrations
    assert (actors.OWNER, migrations.OWNER) == ("user", "user"), (actors.__file__, migrations.__file__)


def double(task):
    return task.payload * 2


task_id = sys.argv[1]
rt = omoi.connect(migrate=True)
try:
    rt.spawn_agent("packaging-agent", capabilities=["packaging"], capacity=1, handlers={"double": double},
                   exist_ok=True)
    info = rt.run([omoi.TaskSpec(id=task_id, type="double", requires=["packaging"], payload=21)], timeout=120)[task_id]
    print("RESULT " + json.dumps({
        "status": getattr(info.status, "value", info.status), "result": info.result, "omoi_ray": omoi.__file__,
        "actors": omoi_ray.actors.__file__, "migrations": omoi_ray.migrations.__file__,
    }))
finally:
    rt.shutdown()
'''


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _copy_repository(dest: Path) -> None:
    """The repository's files as git sees them (tracked and new, minus ignored), else the tree
    minus virtualenvs and caches."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        return
    shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis"))


def _result(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the driver printed no RESULT line:\n{output[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


class Head:
    """A local Ray head in its own process group, on free ports and its own temp dir."""

    def __init__(self, python: Path, temp_dir: Path, env: dict[str, str]) -> None:
        self.gcs, self.dashboard, *others = _free_ports(9)
        self.temp_dir = temp_dir
        command = [
            str(python), "-m", "ray.scripts.scripts", "start", "--head", "--num-cpus=2",
            f"--port={self.gcs}", f"--dashboard-port={self.dashboard}", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={others[0]}", f"--dashboard-agent-listen-port={others[1]}",
            f"--dashboard-agent-grpc-port={others[2]}", f"--metrics-export-port={others[3]}",
            f"--runtime-env-agent-port={others[4]}", f"--node-manager-port={others[5]}",
            f"--object-manager-port={others[6]}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]
        self.process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.pgid = self.process.pid
        out, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, f"ray start failed:\n{out[-4000:]}"
        until(self._dashboard_answers, "the Ray dashboard answering", timeout=90)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _dashboard_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    def _ours(self) -> list[int]:
        """Pids of this head's processes: its process group, and anything naming its temp dir."""
        marker = str(self.temp_dir).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) == self.pgid or marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
        return pids

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 20.0)):
            for pid in self._ours():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                until(lambda: not self._ours(), "the Ray head's processes gone", timeout=grace)
                return
            except AssertionError:
                continue


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("packaging")
    repo = base / "repo"
    _copy_repository(repo)
    (repo / "packaging_driver.py").write_text(DRIVER)
    wheels = base / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(repo)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = wheels.glob("omoi_ray-*.whl")
    shutil.rmtree(repo / "build", ignore_errors=True)

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: the test environment's site-packages, after the venv's own (a plain
    # path line: its .pth files, such as an editable omoi-ray's, are not processed)
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr[-4000:]

    user = base / "user-project"  # a user's project with its own actors/ and migrations/
    for package in ("actors", "migrations"):
        (user / package).mkdir(parents=True)
        (user / package / "__init__.py").write_text('OWNER = "user"\n')
    (user / "driver.py").write_text(DRIVER)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "PYTHONPATH", "OMOI_DATABASE", "OMOI_REDIS"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               OMOI_HOME=str(base / "home-job"), VIRTUAL_ENV=str(venv))
    temp_dir = Path(tempfile.mkdtemp(prefix="omoi-pk-", dir="/tmp"))  # short: Ray's socket paths
    head = Head(python, temp_dir, env)
    try:
        yield {"python": python, "site": site, "repo": repo, "user": user, "env": env, "head": head, "base": base}
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_wheel_installs_only_omoi_ray_at_the_top_level(installed):
    site = installed["site"]
    ours = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth", "__pycache__"))}
    assert ours == {"omoi_ray"}
    for module in ("actors/scheduler.py", "actors/agent.py", "migrations/env.py", "migrations/script.py.mako",
                   "migrations/versions", "patterns/README.md"):
        assert (site / "omoi_ray" / module).exists(), module


def test_a_driver_in_a_project_with_its_own_actors_and_migrations_runs(installed):
    env = dict(installed["env"], RAY_ADDRESS=installed["head"].address, OMOI_HOME=str(installed["base"] / "home-user"))
    run = subprocess.run([str(installed["python"]), "driver.py", "user-task", "--user-project"], cwd=installed["user"],
                         env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    result = _result(run.stdout)
    assert (result["status"], result["result"]) == ("completed", 42)
    site = str(installed["site"])
    assert all(result[name].startswith(site) for name in ("omoi_ray", "actors", "migrations")), result


def test_ray_job_submit_with_the_repository_as_working_dir_runs(installed):
    head = installed["head"]
    run = subprocess.run(
        [str(installed["python"]), "-m", "ray.scripts.scripts", "job", "submit", f"--address={head.dashboard_url}",
         f"--working-dir={installed['repo']}", "--", "python", "packaging_driver.py", "job-task"],
        env=installed["env"], capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    result = _result(run.stdout)
    assert (result["status"], result["result"]) == ("completed", 42)
    checkout = Path(result["omoi_ray"]).parent.parent  # the job's copy of the working directory
    assert not str(checkout).startswith(str(installed["site"])), result
    assert Path(result["actors"]) == checkout / "actors" / "__init__.py"
    assert Path(result["migrations"]) == checkout / "migrations" / "__init__.py"
