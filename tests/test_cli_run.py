"""``omoi-ray run``: bad input fails before Ray starts (one line, exit 2); a pattern runs to its
outcome with a handler set (exit 0)."""

from __future__ import annotations

import json
import os

import pytest

from omoi_ray.cli import main
from tests.conftest import ROOT
from tests.test_cli_bad_input import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "nope"], "pattern 'nope': no shipped pattern of that name"),
        (["run", "majority_vote", "--set", "novar=1"], "unknown parameter(s) 'novar'"),
        (["run", "majority_vote", "--set", "evaluators=three"], "parameter 'evaluators' must be an integer"),
        (["run", "majority_vote", "--set", "=1"], "--set takes name=value"),
        (["run", "majority_vote", "--set", "tie=coin"], "step 'decide': join.merge: merge.tie must be one of"),
        (["run", "majority_vote", "--handlers", "no.such.module"], "--handlers no.such.module: cannot import it"),
        (["run", "majority_vote", "--handlers", "json"], "--handlers json: the module has no HANDLERS"),
        (["run", "majority_vote", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_runs_fail_in_one_line_before_ray(args, names, tmp_path):
    assert_one_line_error(run_cli(*args, home=tmp_path), names)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("raise RuntimeError('boom')\n", "--handlers mods_{n}: importing it raised RuntimeError: boom"),
        ("raise SystemExit(3)\n", "--handlers mods_{n}: importing it raised SystemExit: 3"),
        ("import sys\nsys.exit(0)\n", "--handlers mods_{n}: importing it raised SystemExit: 0"),
        ("1/0\n", "--handlers mods_{n}: importing it raised ZeroDivisionError: division by zero"),
        ("HANDLERS = {'evaluate': lambda t, c: 1}\n", "--handlers mods_{n}: HANDLERS['evaluate'] is not a function"),
        ("HANDLERS = 'evaluate'\n", "--handlers mods_{n}: the module has no HANDLERS mapping"),
        ("def f(t, c):\n    return {}\nHANDLERS = {'bad type': f}\n",
         "--handlers mods_{n}: HANDLERS key: task type must be 1-128 characters"),
        ("HANDLERS = {'bad type': print}\n", "not 'bad type'"),
        ("HANDLERS = {3: print}\n", "task type must be 1-128 characters"),
        ("HANDLERS = {'evaluate': 5}\n", "--handlers mods_{n}: HANDLERS['evaluate'] is not a function"),
    ],
    ids=["raises", "exits-3", "exits-0", "zero-division", "lambda", "string", "bad-type", "bad-type-builtin",
         "int-type", "not-callable"],
)
def test_a_handlers_module_that_cannot_be_used_is_one_line_before_ray(source, names, tmp_path):
    n = tmp_path.name[-12:].replace("-", "_")  # a module name of its own: the import system caches names
    (tmp_path / f"mods_{n}.py").write_text(source)
    home = tmp_path / "home"
    home.mkdir()
    out = run_cli("run", "majority_vote", "--handlers", f"mods_{n}", home=home,
                  env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert_one_line_error(out, names.format(n=n))
    assert out.stdout == ""
    assert list(home.iterdir()) == []  # nothing was made


def test_an_empty_handlers_argument_is_refused_as_such(tmp_path):
    out = run_cli("run", "majority_vote", "--handlers", "", home=tmp_path)
    assert_one_line_error(out, "--handlers '' is not a module name")


VOTE = """
name: quick_vote
parameters:
  question: {type: string, default: "Ship it?"}
steps:
  evaluate:
    split: {count: 3, task: {type: evaluate, payload: {question: "${question}", evaluator: "${index}"}}}
  decide:
    after: [evaluate]
    join: {merge: {strategy: majority, key: answer}, task: {type: decide, payload: {question: "${question}"}}}
"""


@pytest.mark.ray
def test_a_pattern_runs_to_its_outcome_with_a_handler_set(ray_session, tmp_path, capsys):
    path = tmp_path / "quick_vote.yaml"
    path.write_text(VOTE)
    code = main(["run", str(path), "--handlers", "omoi_ray.examples.patterns", "--set", "question=Merge #12?",
                 "--home", str(tmp_path), "--namespace", f"run-{tmp_path.name[-8:]}", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "quick_vote: completed" in out
    outcome = json.loads(out[out.index("{"):])
    assert outcome == {"question": "Merge #12?", "decision": "yes",
                       "counts": [{"value": "yes", "votes": 2}, {"value": "no", "votes": 1}]}


TIE = """
name: tied_vote
steps:
  evaluate:
    split: {count: 2, task: {type: evaluate, payload: {evaluator: "${index}"}}}
  decide:
    after: [evaluate]
    join: {merge: {strategy: majority, key: answer, quorum: 1}, task: {type: decide}}
"""


@pytest.mark.ray
def test_a_failed_run_names_each_failed_task_and_its_error(ray_session, tmp_path, capsys):
    path = tmp_path / "tied_vote.yaml"
    path.write_text(TIE)
    code = main(["run", str(path), "--handlers", "omoi_ray.examples.patterns", "--id-prefix", "tie",
                 "--home", str(tmp_path), "--namespace", f"run-{tmp_path.name[-8:]}", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    lines = out.splitlines()
    at = lines.index("tied_vote: failed")
    assert lines[at + 1].startswith("  tie.decide failed: ") and "tie" in lines[at + 1].lower()
    assert lines[at + 2] == "null"


def test_a_run_with_no_handlers_on_its_own_ray_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert_one_line_error(run_cli("run", "majority_vote", home=tmp_path), "pass --handlers MODULE or --demo")
