"""The import layers hold (pyproject.toml [tool.importlinter], checked by .ci/lint-imports), and
the check catches a break: a copy of the package whose core imports SQLAlchemy fails it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")


def _lint(root) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / ".ci" / "lint-imports")], capture_output=True, text=True, timeout=300, check=False)


def test_the_layers_hold():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_a_core_module_importing_sqlalchemy_breaks_them(tmp_path):
    for name in ("omoi_ray", "actors", "migrations", ".ci"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    dag = tmp_path / "omoi_ray" / "core" / "dag.py"
    dag.write_text(dag.read_text() + "\nimport sqlalchemy  # noqa\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert "omoi_ray.core.dag -> sqlalchemy" in run.stdout
