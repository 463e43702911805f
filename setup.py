"""Packaging of omoi-ray: which folders install as which packages (metadata is in pyproject.toml).

Rules:
- The repository keeps ``omoi_ray/``, ``actors/``, ``migrations/`` and ``patterns/`` at its top
  level, but only ``omoi_ray`` is installed at the top level: ``actors/`` installs as
  ``omoi_ray.actors``, ``migrations/`` as ``omoi_ray.migrations`` and ``patterns/`` (YAML data, no
  code) as ``omoi_ray.patterns`` and ``examples/`` (the shipped patterns' demo handlers, run by
  ``omoi-ray run <pattern> --demo`` from any directory) as ``omoi_ray.examples``, so a user's own ``actors/`` or ``migrations/`` folder never
  shadows ours, nor ours theirs.
- Packages are found, not listed: a new subpackage under any of these folders installs with no
  edit here.
- Running from a source tree (editable install, ``ray job submit --working-dir .``) resolves the
  same names through the small finder in ``omoi_ray/__init__.py``.
"""

from setuptools import find_packages, setup

HOMES = {"actors": "omoi_ray.actors", "migrations": "omoi_ray.migrations"}
DATA = {"patterns": "omoi_ray.patterns", "examples": "omoi_ray.examples"}

packages = find_packages(include=["omoi_ray", "omoi_ray.*"])
package_dir = {}
for folder, name in HOMES.items():
    package_dir[name] = folder
    packages += [name + found[len(folder):] for found in find_packages(include=[folder, folder + ".*"])]
for folder, name in DATA.items():
    package_dir[name] = folder
    packages.append(name)

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "omoi_ray.migrations": ["script.py.mako"],
        "omoi_ray.patterns": ["*.yaml", "*.yml", "*.md"],
    },
)
