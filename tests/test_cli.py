"""The command line, the demo and the example driver, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import ray

from omoi_ray.cli import main
from omoi_ray.store import migrate
from tests.conftest import ROOT, make_settings


def test_db_upgrade_then_current(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(SystemExit) as exit_info:  # reading a revision creates no database
        main(["db", "current", "--db", url])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
    migrate.upgrade(url, revision="0001")
    assert main(["db", "current", "--db", url]) == 1
    assert "run `omoi-ray db upgrade`" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"is at revision {migrate.head_revision()} (head)" in capsys.readouterr().out
    assert main(["db", "current", "--db", url]) == 0
    assert "up to date" in capsys.readouterr().out


def test_status_without_a_ray_address_says_what_to_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--home", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "RAY_ADDRESS" in capsys.readouterr().err


@pytest.mark.ray
def test_the_demo_runs_its_dag_to_completion(ray_session, tmp_path, capsys):
    from omoi_ray.cli.demo import run_demo

    settings = make_settings(tmp_path, None, "demo-test")
    result = run_demo(files=20, settings=settings, progress=False)
    assert result["statuses"] == {"completed": result["tasks"]}
    assert result["retried"] == 1
    out = capsys.readouterr().out
    assert "report: 20 files" in out and "report written to" in out
    assert str(tmp_path) in out  # the store's location is printed


@pytest.mark.ray
def test_the_example_driver_runs_against_a_running_cluster(ray_session, tmp_path):
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, OMOI_HOME=str(tmp_path),
               OMOI_NAMESPACE="example-test", PYTHONPATH=str(ROOT))
    env.pop("OMOI_DATABASE_URL", None)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "driver.py")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "example.digest: completed" in out.stdout
    assert "example.flaky: completed (attempt 2)" in out.stdout
    assert "example.after-hopeless: upstream_failed" in out.stdout
