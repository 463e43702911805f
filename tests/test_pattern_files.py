"""Pattern files: the hardened YAML reader, the schema's errors (file, step, field), ``${name}``
substitution, and the exact expansion of the three shipped patterns (pure: no Ray)."""

from __future__ import annotations

import pytest

from omoi_ray.core.patterns import expand, substitute, variables_in
from omoi_ray.errors import (
    PatternCycleError,
    PatternError,
    PatternNotFoundError,
    UnknownStepError,
    UnknownVariableError,
)
from omoi_ray.specs.pattern_yaml import MAX_DEPTH, MAX_PATTERN_BYTES, load_yaml
from omoi_ray.specs.patterns import load_pattern, parse_pattern, shipped_patterns

# ------------------------------------------------------------------ the reader


def test_yaml_11_surprises_stay_strings():
    text = "a: NO\nb: 012\nc: 1_000\nd: on\ne: yes\nf: 0x1f\ng: 2024-01-01\nh: .inf\ni: 1:30\n"
    assert load_yaml(text, "f.yaml") == {
        "a": "NO", "b": "012", "c": "1_000", "d": "on", "e": "yes", "f": "0x1f", "g": "2024-01-01",
        "h": ".inf", "i": "1:30",
    }


def test_yaml_12_core_scalars_keep_their_types():
    assert load_yaml("a: true\nb: 12\nc: -3\nd: 1.5\ne: null\nf: ~\ng:\nh: '7'", "f.yaml") == {
        "a": True, "b": 12, "c": -3, "d": 1.5, "e": None, "f": None, "g": None, "h": "7",
    }


def test_billion_laughs_is_refused_at_the_first_anchor():
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(PatternError, match=r"pattern f.yaml: anchors and aliases are not allowed .*line 1"):
        load_yaml(bomb, "f.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", r"key 'a' appears twice in one mapping \(line 3"),
        ("steps:\n  s: {task: {type: x, type: y}}\n", "key 'type' appears twice"),
        ("x: &r [*r]\n", "anchors and aliases"),
        ("- 1\n- 2\n", "the top level must be a mapping, not list"),
        ("", "the file is empty"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("a: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
        ('a: "x\\0y"\n', "unstorable character"),
        ("a:\n\t- 1\n", "found character '\\\\t'"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nesting deeper than {MAX_DEPTH}"),
        ("a: " + "9" * 5000, "cannot be read"),
        ("1: x\n", "mapping keys must be strings"),
    ],
)
def test_the_reader_refuses(text, message):
    with pytest.raises(PatternError, match=message):
        load_yaml(text, "f.yaml")


def test_size_is_capped_before_parsing():
    with pytest.raises(PatternError, match=f"over the limit of {MAX_PATTERN_BYTES}"):
        load_yaml(b"a: 1\n" + b"#" * MAX_PATTERN_BYTES, "big.yaml")


def test_raw_nul_and_non_utf8_are_refused():
    with pytest.raises(PatternError, match="cannot be stored"):
        load_yaml(b"a: x\x00y", "f.yaml")
    with pytest.raises(PatternError, match="not UTF-8"):
        load_yaml(b"a: \xff", "f.yaml")


# ------------------------------------------------------------------ substitution

def test_whole_value_keeps_type_embedded_interpolates():
    variables = {"n": 3, "who": 'a "quoted"\\ name\n', "xs": [1, 2]}
    value = {"count": "${n}", "text": "hi ${who}!", "list": "${xs}", "mixed": "n=${n} xs=${xs}", "esc": "$${n}"}
    assert substitute(value, variables) == {
        "count": 3, "text": 'hi a "quoted"\\ name\n!', "list": [1, 2], "mixed": "n=3 xs=[1,2]", "esc": "${n}",
    }
    assert variables_in(value) == {"n", "who", "xs"}


PATTERN = """
name: demo
parameters:
  n: {type: integer, default: 2}
  label: {type: string}
steps:
  work:
    split: {count: "${n}", task: {type: work, payload: {label: "${label}", i: "${index}"}}}
  done:
    after: [work]
    join: {merge: union, task: {type: done}}
"""


def test_unknown_variables_are_listed_all_at_once():
    text = PATTERN.replace('"${label}"', '"${lable} ${other}"').replace("type: done", "type: done, payload: '${zzz}'")
    with pytest.raises(UnknownVariableError) as info:
        parse_pattern(text, "demo.yaml", {"label": "x"}, prefix="p")
    assert info.value.missing == ["lable", "other", "zzz"]
    assert "step 'work' uses lable, other; step 'done' uses zzz" in str(info.value)


def test_split_variables_only_inside_a_split_payload():
    text = PATTERN.replace("type: done}", "type: done, payload: '${index}'}")
    with pytest.raises(UnknownVariableError, match="step 'done' uses index"):
        parse_pattern(text, "demo.yaml", {"label": "x"}, prefix="p")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "required parameter\\(s\\) 'label' not given"),
        ({"label": "x", "m": 1}, "unknown parameter\\(s\\) 'm' \\(declared: n, label\\)"),
        ({"label": "x", "n": True}, "parameter 'n' must be an integer, not True"),
        ({"label": 5}, "parameter 'label' must be a string"),
        ("label=x", "params must be a mapping"),
    ],
)
def test_parameters_are_checked(params, message):
    with pytest.raises(PatternError, match=message):
        parse_pattern(PATTERN, "demo.yaml", params, prefix="p")


# ------------------------------------------------------------------ schema errors


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("union", "avg"), "pattern demo.yaml: step 'done': join.merge: merge.strategy must be one of"),
        (("count: \"${n}\"", "count: 0"), "step 'work': split.count: count must be an integer from 1"),
        (("type: work,", "type: 'bad id',"), "step 'work': split.task.type: type must be 1-128"),
        (("after: [work]", "after: work"), "step 'done': after: after must be a list, not the string 'work'"),
        (("after: [work]", "after: [work]\n    task: {type: x}"), "step 'done': \\(step\\): a step has exactly one of"),
        (("join: {merge", "join: {strategy: x, merge"), "step 'done': join.strategy: Extra inputs"),
        (("name: demo", "name: demo\nversion: 2"), "pattern demo.yaml: version: Extra inputs"),
    ],
)
def test_schema_errors_name_file_step_and_field(replace, message):
    with pytest.raises(PatternError, match=message):
        parse_pattern(PATTERN.replace(*replace), "demo.yaml", {"label": "x"}, prefix="p")


def test_unknown_step_and_cycle_are_named():
    with pytest.raises(UnknownStepError, match="step 'done' refers to step 'wrok'"):
        parse_pattern(PATTERN.replace("after: [work]", "after: [wrok]"), "demo.yaml", {"label": "x"}, prefix="p")
    steps = {
        "a": {"kind": "task", "after": ["c"], "task": {"type": "t"}},
        "b": {"kind": "task", "after": ["a"], "task": {"type": "t"}},
        "c": {"kind": "sync", "members": ["b"]},
    }
    with pytest.raises(PatternCycleError, match="steps form a cycle: a -> c -> b -> a") as info:
        expand(steps, "p")
    assert info.value.cycle == ["a", "c", "b", "a"]


@pytest.mark.parametrize("prefix", ["p.q", "p\n", "", 7])
def test_a_prefix_is_a_name_without_a_dot(prefix):
    # "p." must start the ids of this application only, never those of a pattern applied as "p.q"
    with pytest.raises(PatternError, match="pattern demo.yaml: prefix must be"):
        parse_pattern(PATTERN, "demo.yaml", {"label": "x"}, prefix=prefix)


def test_unknown_pattern_names_the_shipped_ones(tmp_path):
    with pytest.raises(PatternNotFoundError, match="majority_vote, parallel_implementation, review_feedback_loop"):
        load_pattern("nope", prefix="p")
    path = tmp_path / "mine.yaml"
    path.write_text(PATTERN)
    _, expansion = load_pattern(str(path), {"label": "x"}, prefix="p")
    assert expansion.ids == {"work": ["p.work.0", "p.work.1"], "done": ["p.done"]}


def test_values_with_quotes_backslashes_and_newlines_are_safe():
    label = 'say "hi"\\n\nthen ${n} }'
    _, expansion = parse_pattern(PATTERN, "demo.yaml", {"label": label, "n": 1}, prefix="p")
    assert expansion.items[0]["payload"] == {"label": label, "i": 0}


# ------------------------------------------------------------------ the shipped patterns, exactly


def test_three_patterns_ship():
    assert shipped_patterns() == ["majority_vote", "parallel_implementation", "review_feedback_loop"]


def test_parallel_implementation_expands_to_tasks_a_sync_and_a_join():
    _, e = load_pattern("parallel_implementation", {"modules": ["api", "db"], "feature": "login"}, prefix="p", ticket="T")
    assert e.items == [
        {"type": "implement", "payload": {"feature": "login", "module": "api", "index": 0}, "id": "p.implement.0",
         "depends_on": [], "ticket_id": "T"},
        {"type": "implement", "payload": {"feature": "login", "module": "db", "index": 1}, "id": "p.implement.1",
         "depends_on": [], "ticket_id": "T"},
        {"kind": "sync", "id": "p.implemented", "members": ["p.implement.0", "p.implement.1"], "k": None,
         "timeout": 7200.0, "ticket_id": "T"},
        {"type": "integrate", "payload": {"feature": "login"}, "priority": "HIGH", "id": "p.integrate",
         "depends_on": ["p.implemented"], "ticket_id": "T", "merge": {"strategy": "combine"}},
    ]
    assert e.ids == {"implement": ["p.implement.0", "p.implement.1"], "implemented": ["p.implemented"],
                     "integrate": ["p.integrate"]}


def test_review_feedback_loop_expands_to_a_real_loop():
    _, e = load_pattern("review_feedback_loop", {"max_rounds": 5}, prefix="r")
    assert e.items == [
        {"type": "implement", "payload": {"change": "the change"}, "id": "r.implement", "depends_on": []},
        {"type": "review", "payload": {"change": "the change"}, "id": "r.review", "depends_on": ["r.implement"]},
        {"kind": "loop", "id": "r.rounds", "check": "r.review", "until": {"key": "verdict", "equals": "approved"},
         "max_rounds": 5, "body": [
             {"type": "revise", "payload": {"change": "the change"}, "id": "revise", "depends_on": []},
             {"type": "review", "payload": {"change": "the change"}, "id": "review", "depends_on": ["revise"]},
         ]},
    ]


def test_majority_vote_expands_to_evaluators_a_quorum_sync_and_a_majority_join():
    _, e = load_pattern("majority_vote", {"question": "Merge #12?", "evaluators": 3, "wait_for": 2, "quorum": 2,
                                         "tie": "first"},
                        prefix="v")
    evaluators = [
        {"type": "evaluate", "payload": {"question": "Merge #12?", "evaluator": i}, "id": f"v.evaluate.{i}",
         "depends_on": []}
        for i in range(3)
    ]
    assert e.items == [
        *evaluators,
        {"kind": "sync", "id": "v.votes", "members": ["v.evaluate.0", "v.evaluate.1", "v.evaluate.2"], "k": 2,
         "timeout": 1800.0},
        {"type": "decide", "payload": {"question": "Merge #12?"}, "priority": "HIGH", "id": "v.decide",
         "depends_on": ["v.votes"], "merge": {"strategy": "majority", "key": "answer", "quorum": 2, "tie": "first"}},
    ]


def test_a_bad_tie_policy_parameter_is_a_schema_error():
    with pytest.raises(PatternError, match="step 'decide': join.merge: merge.tie must be one of fail, first, none"):
        load_pattern("majority_vote", {"tie": "coin"}, prefix="v")


# ------------------------------------------------------------------ the examples' handler set


def test_the_example_handlers_cover_every_task_type_of_the_shipped_patterns():
    from omoi_ray.examples.patterns import HANDLERS

    items = [item for name in shipped_patterns() for item in load_pattern(name, prefix="p")[1].items]
    types = {item["type"] for item in items if "type" in item} | {t["type"] for i in items for t in i.get("body", [])}
    assert types == set(HANDLERS)


def test_the_example_handlers_decide_review_and_integrate():
    from omoi_ray.testing import run_handler

    votes = {f"v.evaluate.{i}": run_handler("omoi_ray.examples.patterns:evaluate", {"evaluator": i}) for i in range(3)}
    decision = run_handler("omoi_ray.examples.patterns:decide", {"question": "q"}, upstream=votes,
                           merge={"strategy": "majority", "key": "answer", "quorum": 2})
    assert decision == {"question": "q", "decision": "yes",
                        "counts": [{"value": "yes", "votes": 2}, {"value": "no", "votes": 1}]}
    assert run_handler("omoi_ray.examples.patterns:review", task_id="r.review")["verdict"] == "changes_requested"
    assert run_handler("omoi_ray.examples.patterns:review", task_id="r.rounds.r2.review")["verdict"] == "approved"
    parts = {f"p.implement.{i}": run_handler("omoi_ray.examples.patterns:implement", {"module": m}) for i, m in enumerate("ab")}
    assert run_handler("omoi_ray.examples.patterns:integrate", {"feature": "f"}, upstream=parts, merge="combine") == {
        "feature": "f", "modules": ["a", "b"], "build": "passed"}


def _chain(n: int, reverse: bool = False) -> str:
    names = range(n - 1, -1, -1) if reverse else range(n)
    lines = [f" s{i}: {{task: {{type: t}}, after: [s{i - 1}]}}" if i else " s0: {task: {type: t}}" for i in names]
    return "name: chain\nsteps:\n" + "\n".join(lines) + "\n"


def test_a_long_chain_declared_in_reverse_orders_without_recursion():
    steps = {f"s{i}": {"kind": "task", "after": [f"s{i - 1}"] if i else [], "task": {"type": "t"}} for i in range(5000)}
    reverse = dict(reversed(list(steps.items())))
    expansion = expand(reverse, "p")
    assert [item["id"] for item in expansion.items][:3] == ["p.s0", "p.s1", "p.s2"]
    assert expansion.items[-1]["depends_on"] == ["p.s4998"]
    _, parsed = parse_pattern(_chain(1500, reverse=True), "chain.yaml", prefix="p")
    assert len(parsed.items) == 1500


def test_the_item_cap_is_checked_before_expanding():
    lines = "".join(f" s{i}: {{split: {{count: 10000, task: {{type: t}}}}}}\n" for i in range(60))
    with pytest.raises(PatternError, match="expands to 600000 items, over the limit of 10000"):
        parse_pattern("name: big\nsteps:\n" + lines, "big.yaml", prefix="p")


def test_a_sync_needing_more_than_its_member_tasks_names_the_step():
    text = (
        "name: q\nsteps:\n a: {task: {type: t}}\n b: {split: {count: 2, task: {type: t}}}\n"
        " s: {sync: {members: [a, b], k: 4}}\n"
    )
    with pytest.raises(PatternError, match="step 's': sync.k is 4, more than its 3 member tasks"):
        parse_pattern(text, "q.yaml", prefix="p")
    _, ok = parse_pattern(text.replace("k: 4", "k: 3"), "q.yaml", prefix="p")
    assert ok.items[-1]["k"] == 3
