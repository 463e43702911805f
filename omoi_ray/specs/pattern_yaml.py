"""The hardened YAML reader of pattern files.

Rules (``reliability.md`` §5-6):
- Safe construction only (PyYAML's ``SafeLoader``): no ``!!python/...`` tags.
- The file is capped before parsing (``MAX_PATTERN_BYTES``) and nesting while composing
  (``MAX_DEPTH``); one document, a mapping at the top.
- Anchors, aliases and merge keys (``<<``) are refused: no billion laughs, no self-reference.
- A key given twice in one mapping is refused (PyYAML would keep the last silently).
- Implicit types follow YAML 1.2's core schema, narrowed: ``true``/``false`` are booleans,
  ``null``/``~``/empty is null, decimal integers without leading zeros or ``_`` are ints,
  plain decimal floats are floats. Everything else stays a string: YAML 1.1's ``NO``, ``on``,
  ``yes``, ``012``, ``0x1f``, ``1_000``, ``1:30``, dates, ``.inf`` and ``.nan``.
- NUL or other unstorable characters are refused (``core.storable``), as is text that is not UTF-8.
- Every failure is a ``PatternError`` naming the file and, where PyYAML gives one, the line.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml

from omoi_ray.core import storable
from omoi_ray.errors import PatternError

#: largest pattern file read, in bytes
MAX_PATTERN_BYTES = 256 * 1024
#: deepest nesting of mappings and lists in a pattern file
MAX_DEPTH = 32

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
#: the implicit resolvers kept: (tag, pattern, first characters)
_RESOLVERS = (
    (_BOOL, r"true|True|TRUE|false|False|FALSE", "tTfF"),
    (_INT, r"[-+]?(?:0|[1-9][0-9]*)", "-+0123456789"),
    (_FLOAT, r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+", "-+0123456789."),
    (_NULL, r"~|null|Null|NULL|", ["~", "n", "N", ""]),
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with the narrowed resolvers and the checks above."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}  # empty: only _RESOLVERS below
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("anchors and aliases are not allowed in pattern files", event.start_mark)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused("merge keys ('<<') are not allowed in pattern files", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(f"mapping keys must be strings, not {key!r}", key_node.start_mark)
            if key in seen:
                raise _Refused(f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: Any) -> None:
        """Merge keys are refused in ``construct_mapping``; nothing to flatten."""


for _tag, _pattern, _first in _RESOLVERS:
    # PyYAML calls regexp.match: anchored at the start; \Z (not $) anchors the very end
    _Loader.add_implicit_resolver(_tag, re.compile(rf"(?:{_pattern})\Z"), list(_first))


class _Refused(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def load_yaml(data: bytes | str, source: str) -> dict[str, Any]:
    """Parse one pattern file.

    Args:
        data: the file's bytes (or text).
        source: the file's name or path, for messages.

    Returns:
        The top-level mapping, as plain dicts, lists, strings, ints, floats, bools and None.

    Raises:
        PatternError: over ``MAX_PATTERN_BYTES``, not UTF-8, unstorable characters, not exactly
            one document, not a mapping, an anchor/alias/merge key, a duplicate key, nesting
            over ``MAX_DEPTH``, an explicit tag PyYAML's safe loader refuses, or a YAML syntax
            error (the message names ``source`` and the line).
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_PATTERN_BYTES:
        raise PatternError(f"pattern {source}: {len(raw)} bytes, over the limit of {MAX_PATTERN_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PatternError(f"pattern {source}: not UTF-8 text (byte {exc.start})") from None
    bad = storable.unstorable_char(text)
    if bad is not None:
        raise PatternError(f"pattern {source}: contains the character {bad!r}, which cannot be stored")
    try:
        value = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except _Refused as exc:
        raise PatternError(f"pattern {source}: {exc}{_where(exc.mark)}") from None
    except yaml.MarkedYAMLError as exc:
        what = "; ".join(p.strip() for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise PatternError(f"pattern {source}: {what}{_where(exc.problem_mark)}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise PatternError(f"pattern {source}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if value is None:
        raise PatternError(f"pattern {source}: the file is empty")
    if not isinstance(value, dict):
        raise PatternError(f"pattern {source}: the top level must be a mapping, not {type(value).__name__}")
    try:
        storable.check_json(value, "pattern", max_depth=MAX_DEPTH)
    except ValueError as exc:  # e.g. a string holding an escaped NUL ("\0")
        raise PatternError(f"pattern {source}: {exc}") from None
    return value
