"""``omoi-ray run``: bad input fails before Ray starts (one line, exit 2); a pattern runs to its
outcome with a handler set (exit 0)."""

from __future__ import annotations

import json

import pytest

from omoi_ray.cli import main
from tests.test_cli_bad_input import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "nope"], "pattern 'nope': no shipped pattern of that name"),
        (["run", "majority_vote", "--set", "novar=1"], "unknown parameter(s) 'novar'"),
        (["run", "majority_vote", "--set", "evaluators=three"], "parameter 'evaluators' must be a integer"),
        (["run", "majority_vote", "--set", "=1"], "--set takes name=value"),
        (["run", "majority_vote", "--set", "tie=coin"], "step 'decide': join.merge: merge.tie must be one of"),
        (["run", "majority_vote", "--handlers", "no.such.module"], "--handlers no.such.module: cannot import it"),
        (["run", "majority_vote", "--handlers", "json"], "--handlers json: the module has no HANDLERS"),
        (["run", "majority_vote", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_runs_fail_in_one_line_before_ray(args, names, tmp_path):
    assert_one_line_error(run_cli(*args, home=tmp_path), names)


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


def test_a_run_with_no_handlers_on_its_own_ray_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert_one_line_error(run_cli("run", "majority_vote", home=tmp_path), "pass --handlers MODULE or --demo")
