"""From a checkout, ``omoi_ray.actors``/``.migrations``/``.patterns`` resolve to the top-level
folders (``omoi_ray/_layout.py``), and a user's own top-level ``actors``/``migrations`` stay
theirs. The wheel side is tests/test_packaging.py."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import omoi_ray.actors
import omoi_ray.migrations

from omoi_ray import _layout
from tests.conftest import ROOT


def test_the_subpackages_resolve_to_the_checkouts_folders():
    assert Path(omoi_ray.actors.__file__) == ROOT / "actors" / "__init__.py"
    assert Path(omoi_ray.migrations.__file__) == ROOT / "migrations" / "__init__.py"
    assert (importlib.resources.files("omoi_ray.patterns") / "README.md").is_file()


def test_only_a_checkout_gets_the_finder(tmp_path):
    assert _layout.source_root(ROOT / "omoi_ray") == ROOT
    installed = tmp_path / "site" / "omoi_ray"
    (installed / "actors").mkdir(parents=True)
    assert _layout.source_root(installed) is None  # a wheel: the subpackages are inside
    alone = tmp_path / "vendored" / "omoi_ray"
    alone.mkdir(parents=True)
    (alone.parent / "actors").mkdir()
    assert _layout.source_root(alone) is None  # not an omoi-ray checkout: leave their actors/ alone
    assert _layout.SourceTreeFinder(ROOT).find_spec("omoi_ray.specs") is None  # only its three names


def test_a_users_own_actors_and_migrations_are_not_shadowed(tmp_path):
    for package in ("actors", "migrations"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('OWNER = "user"\n')
    code = (
        "import json, actors, migrations, omoi_ray.actors.group_commit as gc, omoi_ray.migrations as m\n"
        "print(json.dumps([actors.OWNER, migrations.OWNER, gc.__file__, m.__file__]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    owner_a, owner_m, ours_a, ours_m = json.loads(run.stdout.splitlines()[-1])
    assert (owner_a, owner_m) == ("user", "user")
    assert Path(ours_a) == ROOT / "actors" / "group_commit.py"
    assert Path(ours_m) == ROOT / "migrations" / "__init__.py"
