"""The one definition of a storable value: checks for user input, cleaning for runtime text."""

from __future__ import annotations

import pytest

from omoi_ray.core import storable


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("a\x00b", "unstorable"),
        ({"k": "a\x00"}, "['k']"),
        ({"a\x00": 1}, "key"),
        (["ok", "\ud800"], "[1]"),
        (float("nan"), "finite"),
        ([1, float("inf")], "finite"),
        ({1: "x"}, "keys must be strings"),
        ({"s": {1, 2}}, "not JSON"),
        (b"bytes", "not JSON"),
    ],
)
def test_check_json_names_the_bad_part(value, fragment):
    with pytest.raises(ValueError, match="payload") as info:
        storable.check_json(value, "payload")
    assert fragment in str(info.value)


def test_check_json_depth_is_bounded_and_deep_input_is_safe():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 64"):
        storable.check_json(deep, "payload")
    ok: list = []
    for _ in range(storable.MAX_JSON_DEPTH - 2):  # 63 lists inside one dict: depth 64
        ok = [ok]
    storable.check_json({"x": ok}, "payload")


def test_clean_text_replaces_unstorable_and_survives_broken_str():
    class Broken:
        def __str__(self):
            raise RuntimeError("no")

    assert storable.clean_text("a\x00b\nc\x1b") == "a\ufffdb\nc\ufffd"
    assert "whose str() failed" in storable.clean_text(Broken())
    assert len(storable.clean_text("x" * 10_000)) == storable.MAX_ERROR_CHARS


@pytest.mark.parametrize("value", [True, False, None, "1", float("nan"), float("inf"), -1, 0, 1e12])
def test_check_seconds_refuses_non_numbers_and_out_of_bounds(value):
    with pytest.raises(ValueError, match="timeout"):
        storable.check_seconds(value, "timeout", maximum=storable.MAX_TIMEOUT_S)


def test_check_seconds_accepts_bounds():
    assert storable.check_seconds(0, "wait", maximum=5, allow_zero=True) == 0.0
    assert storable.check_seconds(5, "wait", maximum=5) == 5.0


@pytest.mark.parametrize("value", ["a\nb", "tab\tok"])
def test_check_text_allows_line_breaks_in_free_text(value):
    assert storable.check_text(value, "reason", max_chars=100) == value


@pytest.mark.parametrize("value", ["a\x00", "bell\x07", "esc\x1b[31m", 5, None])
def test_check_text_refuses_control_characters_and_non_strings(value):
    with pytest.raises(ValueError, match="reason"):
        storable.check_text(value, "reason", max_chars=100)
