"""Verifiers against hand-computed cases, pass@k against a direct computation, and HumanEval's own solutions."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.conftest import SHARED_DATA
from trainer.rewards.sandbox import Limits
from trainer.rewards.verifier import (
    VerifierReward,
    check_reference,
    check_rule,
    check_tests,
    pass_at_k,
    program_for,
    verify,
)


def rule(text, **reference):
    return check_rule(text, check_reference(reference))


def test_numeric_tolerance_edges():
    assert rule("The answer is 18.", answer="18", rule="numeric")["passed"]
    assert rule("so 1,234 eggs", answer=1234, rule="numeric")["passed"]
    assert rule("x = 0.30000000000000004", answer=0.3, rule="numeric", tolerance=1e-9)["passed"]
    assert rule("3.15", answer=3.14, rule="numeric", tolerance=0.01)["passed"]  # |diff| = 0.01: inside (<=)
    assert not rule("3.16", answer=3.14, rule="numeric", tolerance=0.01)["passed"]
    near = rule("3.16", answer=3.14, rule="numeric", tolerance=0.01)
    assert near["reason"] == "wrong_answer" and near["near_tolerance"]
    assert not rule("31.4", answer=3.14, rule="numeric", tolerance=0.01)["near_tolerance"]
    assert rule("105", answer=100, rule="numeric", tolerance=0, relative_tolerance=0.05)["passed"]
    assert rule("no number here", answer=1, rule="numeric")["reason"] == "format"
    assert rule("first 5 then \\boxed{7} and 9", answer=7, rule="numeric")["passed"]


def test_exact_and_normalized():
    assert rule("Answer: Paris", answer="Paris", rule="exact")["passed"]
    assert not rule("Answer: paris", answer="Paris", rule="exact")["passed"]
    assert rule("Answer: \"paris.\"", answer="Paris", rule="normalized")["passed"]
    assert not rule("Answer: paris", answer="Paris", rule="normalized", case_sensitive=True)["passed"]


def test_regex_anchors():
    assert rule("B", pattern="[A-D]", rule="regex")["passed"]  # fullmatch by default
    assert not rule("B and C", pattern="[A-D]", rule="regex")["passed"]
    assert rule("B and C", pattern="[A-D]", rule="regex", mode="search")["passed"]
    assert not rule("xB", pattern="^B", rule="regex", mode="search")["passed"]


def test_json_schema_errors_are_listed():
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer", "minimum": 0}}}
    assert rule('{"name": "a", "age": 3}', schema=schema, rule="json_schema")["passed"]
    bad = rule('{"age": -1}', schema=schema, rule="json_schema")
    assert bad["reason"] == "wrong_answer" and len(bad["failed_tests"]) == 2
    assert rule("not json", schema=schema, rule="json_schema")["reason"] == "format"


def test_bad_references_and_tests_are_refused_clearly():
    for reference, message in [({"answer": "x", "rule": "numeric"}, "not a single number"),
                               ({"answer": 1, "rule": "cosine"}, "rule must be one of"),
                               ({"pattern": "(", "rule": "regex"}, "not a valid regular expression"),
                               ({"answer": 1, "tolerance": -1}, "tolerance"),
                               ({"answer": "1", "pattern": "x", "rule": "exact"}, "does not use")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            check_reference(reference)
    with pytest.raises(ValueError, match="does not compile"):
        check_tests({"code": "assert ("})
    with pytest.raises(ValueError, match="identifier"):
        check_tests({"code": "assert True", "entry_point": "not valid"})


def test_pass_at_k_matches_a_direct_computation():
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 2), (6, 3, 3), (4, 4, 2), (7, 1, 5), (10, 3, 10)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        direct = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(direct)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_code_answers_are_read_like_humaneval_completions():
    tests = {"code": "def check(candidate):\n    assert candidate(2) == 4\n", "entry_point": "double",
             "prefix": "def double(x):\n    \"\"\"Twice x.\"\"\"\n"}
    assert "return x * 2" in program_for("    return x * 2\n", tests)  # a body continuing the stub
    fenced = "Here:\n```python\ndef double(x):\n    return x + x\n```\nDone."
    assert verify(fenced, None, tests, Limits(wall_seconds=5))["passed"]
    assert verify("    return x + 1\n", None, tests, Limits(wall_seconds=5))["reason"] == "wrong_answer"


def test_reference_and_tests_both_must_pass():
    tests = {"code": "assert answer() == 3\n"}
    code = "def answer():\n    return 3\n# the answer is 3"
    assert verify(code, {"answer": 3, "rule": "numeric"}, tests, Limits(wall_seconds=5))["passed"]
    failed = verify(code, {"answer": 4, "rule": "numeric"}, tests, Limits(wall_seconds=5))
    assert not failed["passed"] and failed["rule"] == "numeric+tests"


def test_the_verifier_reward_reads_prompt_rows():
    reward = VerifierReward(workers=2, wall_seconds=5)
    scores = reward(prompts=["q1", "q2", "q3"], completions=["It is 4", "It is 5", "whatever"],
                    reference=[json.dumps({"answer": 4, "rule": "numeric"}), {"answer": 4, "rule": "numeric"}, None],
                    tests=[None, None, None])  # fmt: skip
    assert scores == [1.0, 0.0, None]


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    path = SHARED_DATA / "humaneval_first_82.jsonl"
    if not path.is_file():
        from tests.conftest import missing

        missing(f"reference data {path.name} not found in {SHARED_DATA}")
    rows = [json.loads(line) for line in path.read_text().splitlines()][:12]  # every one: bench/rlvr.py
    reward = VerifierReward(workers=2)
    columns = {"tests": [{"code": r["test"], "entry_point": r["entry_point"], "prefix": r["prompt"]} for r in rows]}
    good = reward([r["prompt"] for r in rows], [r["canonical_solution"] for r in rows], **columns)
    assert good == [1.0] * len(rows)
    bad = reward([r["prompt"] for r in rows], ["    return None\n"] * len(rows), **columns)
    assert bad == [0.0] * len(rows)
