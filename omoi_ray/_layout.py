"""Where ``omoi_ray.actors``, ``omoi_ray.migrations``, ``omoi_ray.patterns`` and ``omoi_ray.examples``
come from when omoi-ray runs from a source tree.

Rules:
- In a checkout the folders ``actors/``, ``migrations/``, ``patterns/`` and ``examples/`` sit next to
  ``omoi_ray/``; an installed wheel has them inside ``omoi_ray/`` (setup.py). Their names are the
  same either way: ``omoi_ray.actors`` etc.; there is no top-level ``actors`` or ``migrations``.
- ``install_source_tree_finder`` adds one meta-path finder, and only when this ``omoi_ray/`` has
  no ``actors/`` of its own and its parent is an omoi-ray checkout (a ``pyproject.toml`` naming
  ``omoi-ray``). That covers ``python`` in a checkout, an editable install, and ``ray job submit
  --working-dir .`` (the working directory comes first on the import path, so the checkout's
  ``omoi_ray`` is the one imported, in the driver and in every worker).
- The finder resolves exactly the names in ``FOLDERS``; everything else is left to Python. A
  folder without ``__init__.py`` (``patterns/``, data only) becomes a namespace package, so
  ``importlib.resources.files("omoi_ray.patterns")`` works from a wheel and from a checkout.
- Pure standard library: ``import omoi_ray`` stays light.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

FOLDERS = {
    "omoi_ray.actors": "actors", "omoi_ray.migrations": "migrations", "omoi_ray.patterns": "patterns",
    "omoi_ray.examples": "examples",
}
# each folder is named as its package's last part (asserted at import: the finder relies on it)
assert all(name.rpartition(".")[2] == folder for name, folder in FOLDERS.items())


class SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Resolves the names in ``FOLDERS`` to the folders of the checkout at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec of ``omoi_ray.actors``/``.migrations``/``.patterns`` in the checkout, or None
        (any other name, or the folder is missing)."""
        folder = FOLDERS.get(fullname)
        if folder is None:
            return None
        # the folder's name is the package's last name: Python's own path finder does the rest
        # (a regular package, or a namespace package for a folder without __init__.py)
        return importlib.machinery.PathFinder.find_spec(fullname, [str(self.root)])


def source_root(package_dir: Path) -> Path | None:
    """The checkout ``package_dir`` (an ``omoi_ray/`` folder) belongs to, or None when it is an
    installed package (it holds ``actors/``) or its parent is not an omoi-ray checkout."""
    if (package_dir / "actors").is_dir():
        return None
    root = package_dir.parent
    try:
        ours = 'name = "omoi-ray"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if ours else None


def install_source_tree_finder() -> None:
    """Add a ``SourceTreeFinder`` for this ``omoi_ray`` when it runs from a checkout (once)."""
    root = source_root(Path(__file__).resolve().parent)
    if root is None or any(isinstance(f, SourceTreeFinder) and f.root == root for f in sys.meta_path):
        return
    # first: an editable install of another checkout must not answer for this one's folders
    sys.meta_path.insert(0, SourceTreeFinder(root))
