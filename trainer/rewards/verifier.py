"""Verifiers: a verdict on one completion of a verifiable prompt (one with a `reference` and/or `tests`).

    reference = {"answer": "18", "rule": "numeric", "tolerance": 1e-6}      rules: exact, normalized, numeric,
                {"pattern": "^B$", "rule": "regex", "mode": "fullmatch"}             regex, json_schema
                {"schema": {...}, "rule": "json_schema"}
    tests     = {"code": "def check(candidate): ...", "entry_point": "f", "prefix": "def f(x):\\n    \\"\\"\\"...\\"\\"\\"\\n"}

    verify(text, reference, tests) -> {"passed", "reason", "failed_tests", "detail", "rule", "output_tail", ...}

Rules run here (they only read the text); tests run in the sandbox (trainer.rewards.sandbox). A prompt with both
passes when both do. `VerifierReward` is the GRPO/RLOO reward ("verifier": 1.0 pass, 0.0 fail, None for a row
with neither). `python -m trainer.rewards.verifier TASKS.jsonl VERDICTS.jsonl` is the batch the app's `verify`
job runs as a child (JSON-lines progress on stdout). Torch-free, standard library only.
"""

from __future__ import annotations

import json
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trainer.rewards.json_schema import SchemaError, check_schema, validate
from trainer.rewards.rules import (
    completion_text,
    extract_final_answer,
    extract_json,
    extract_number,
    normalize_answer,
    parse_number,
)
from trainer.rewards.sandbox import Limits, SandboxUnavailable, env_limits, run_tests

RULE_NAMES = ("exact", "normalized", "numeric", "regex", "json_schema")
REFERENCE_FIELDS = {
    "exact": {"answer"},
    "normalized": {"answer", "case_sensitive"},
    "numeric": {"answer", "tolerance", "relative_tolerance"},
    "regex": {"pattern", "mode", "ignore_case"},
    "json_schema": {"schema"},
}
TESTS_FIELDS = {"code", "entry_point", "prefix"}
NEAR_TOLERANCE_FACTOR = 10.0
"""A numeric answer within this many tolerances of the reference (right or wrong) is "near the tolerance"."""


def check_reference(reference: Any) -> dict:
    """A reference as stored: a dict with a known rule and its fields; ValueError with a clear message."""
    if not isinstance(reference, dict):
        raise ValueError(f"reference must be an object, got {type(reference).__name__}")
    rule = reference.get("rule", "numeric" if _is_number(reference.get("answer")) else "normalized")
    if rule not in RULE_NAMES:
        raise ValueError(f"reference.rule must be one of {', '.join(RULE_NAMES)}, got {rule!r}")
    unknown = sorted(set(reference) - REFERENCE_FIELDS[rule] - {"rule"})
    if unknown:
        raise ValueError(f"reference has field(s) {', '.join(unknown)} that rule {rule!r} does not use "
                         f"(it reads: {', '.join(sorted(REFERENCE_FIELDS[rule]))})")  # fmt: skip
    if rule in ("exact", "normalized", "numeric"):
        answer = reference.get("answer")
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise ValueError(f"reference.answer is required for rule {rule!r}")
        if isinstance(answer, (dict, list, bool)):
            raise ValueError("reference.answer must be a string or a number")
    if rule == "numeric":
        parse_number(reference["answer"])
        for name in ("tolerance", "relative_tolerance"):
            value = reference.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ValueError(f"reference.{name} must be a number >= 0")
    if rule == "regex":
        pattern = reference.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("reference.pattern (a regular expression) is required for rule 'regex'")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"reference.pattern is not a valid regular expression: {error}") from error
        if reference.get("mode", "fullmatch") not in ("search", "fullmatch"):
            raise ValueError("reference.mode must be 'search' or 'fullmatch'")
    if rule == "json_schema":
        try:
            check_schema(reference.get("schema", True))
        except SchemaError as error:
            raise ValueError(f"reference.schema: {error}") from error
    return {"rule": rule, **{k: v for k, v in reference.items() if k != "rule"}}


def check_tests(tests: Any) -> dict:
    """Tests as stored: {"code": str, "entry_point"?: str, "prefix"?: str}; ValueError with a clear message."""
    if isinstance(tests, str):
        tests = {"code": tests}
    if not isinstance(tests, dict):
        raise ValueError(f"tests must be Python code or an object with 'code', got {type(tests).__name__}")
    unknown = sorted(set(tests) - TESTS_FIELDS)
    if unknown:
        raise ValueError(f"tests has unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(TESTS_FIELDS))})")
    code = tests.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ValueError("tests.code (Python test code) is required")
    try:
        compile(code, "tests", "exec")
    except SyntaxError as error:
        raise ValueError(f"tests.code does not compile: line {error.lineno}: {error.msg}") from error
    entry = tests.get("entry_point")
    if entry is not None and (not isinstance(entry, str) or not entry.isidentifier()):
        raise ValueError("tests.entry_point must be a Python identifier")
    if tests.get("prefix") is not None and not isinstance(tests["prefix"], str):
        raise ValueError("tests.prefix must be a string")
    return {k: v for k, v in tests.items() if v is not None}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loads(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value


# --------------------------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------------------------


def check_rule(text: str, reference: dict) -> dict:
    """The verdict of a reference rule on a completion text (see the module docstring)."""
    rule = reference.get("rule", "numeric" if _is_number(reference.get("answer")) else "normalized")
    if rule == "exact":
        given = extract_final_answer(text).strip()
        ok = given == str(reference["answer"]).strip()
        return _rule_verdict(rule, ok, "wrong_answer", f"answered {given[:200]!r}", given=given)
    if rule == "normalized":
        given = extract_final_answer(text)
        case = bool(reference.get("case_sensitive", False))
        ok = normalize_answer(given, case_sensitive=case) == normalize_answer(str(reference["answer"]), case_sensitive=case)
        return _rule_verdict(rule, ok, "wrong_answer", f"answered {given[:200]!r}", given=given)
    if rule == "numeric":
        expected = parse_number(reference["answer"])
        given = extract_number(text)
        if given is None or not math.isfinite(given):
            return _rule_verdict(rule, False, "format", "no number in the answer")
        tolerance = max(float(reference.get("tolerance", 1e-6)), float(reference.get("relative_tolerance", 0.0)) * abs(expected))
        distance = abs(given - expected)
        verdict = _rule_verdict(rule, distance <= tolerance, "wrong_answer", f"answered {given:g}, expected {expected:g}",
                                given=given)  # fmt: skip
        verdict["near_tolerance"] = bool(distance > 0 and distance <= NEAR_TOLERANCE_FACTOR * max(tolerance, 1e-12)
                                         and tolerance > 0)  # fmt: skip
        return verdict
    if rule == "regex":
        flags = re.IGNORECASE if reference.get("ignore_case") else 0
        pattern = re.compile(reference["pattern"], flags)
        mode = reference.get("mode", "fullmatch")
        target = text.strip()
        ok = (pattern.fullmatch(target) if mode == "fullmatch" else pattern.search(target)) is not None
        return _rule_verdict(rule, ok, "wrong_answer", f"does not match {reference['pattern']!r}")
    if rule == "json_schema":
        try:
            value = extract_json(text, strict=True)
        except ValueError as error:
            return _rule_verdict(rule, False, "format", str(error))
        errors = validate(value, _loads(reference.get("schema", True)))
        verdict = _rule_verdict(rule, not errors, "wrong_answer", "; ".join(errors[:5]))
        verdict["failed_tests"] = [{"test": "schema", "error": e} for e in errors[:50]]
        return verdict
    raise ValueError(f"unknown rule {rule!r}")


def _rule_verdict(rule: str, ok: bool, reason: str, detail: str, **extra) -> dict:
    return {"passed": ok, "reason": "passed" if ok else reason, "rule": rule, "failed_tests": [],
            "detail": "" if ok else detail, **extra}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# code
# --------------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The code of an answer: the longest fenced block (```python ... ```), else the whole text."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    return max(blocks, key=len) if blocks else text


def program_for(text: str, tests: dict) -> str:
    """What runs before the tests: the prompt's prefix (signature, imports) and the answer's code. An answer
    that defines the entry point itself follows the prefix (redefining its stub); one that does not is read as
    the function body continuing the prefix (HumanEval style)."""
    code = extract_code(text)
    prefix = tests.get("prefix") or ""
    entry = tests.get("entry_point")
    if not prefix:
        return code
    if entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        return prefix + "\n" + code
    return prefix + code


def check_tests_verdict(text: str, tests: dict, limits: Limits | None = None) -> dict:
    code = extract_code(text)
    if not code.strip():
        return {"passed": False, "reason": "format", "rule": "tests", "failed_tests": [], "detail": "no code"}
    verdict = run_tests(program_for(text, tests), tests["code"], tests.get("entry_point"), limits)
    verdict["rule"] = "tests"
    verdict["detail"] = verdict.pop("error", "") or ""
    return verdict


# --------------------------------------------------------------------------------------------------------------
# one completion
# --------------------------------------------------------------------------------------------------------------


def verify(completion: Any, reference: Any = None, tests: Any = None, limits: Limits | None = None) -> dict:
    """The verdict on one completion: the reference rule and/or the tests (both must pass)."""
    text = completion_text(completion)
    reference, tests = _loads(reference), _loads(tests)
    if reference is None and tests is None:
        raise ValueError("nothing to verify: the prompt has neither a reference nor tests")
    verdicts = []
    if reference is not None:
        verdicts.append(check_rule(text, reference))
    if tests is not None:
        verdicts.append(check_tests_verdict(text, tests if isinstance(tests, dict) else {"code": tests}, limits))
    failed = [v for v in verdicts if not v["passed"]]
    verdict = dict(failed[0] if failed else verdicts[-1])
    if len(verdicts) > 1:
        verdict["rule"] = "+".join(v["rule"] for v in verdicts)
        verdict["failed_tests"] = [t for v in verdicts for t in v.get("failed_tests", [])]
        verdict["near_tolerance"] = any(v.get("near_tolerance") for v in verdicts)
    verdict.setdefault("output_tail", "")
    verdict.setdefault("near_tolerance", False)
    return verdict


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    result = 1.0
    for i in range(n - c + 1, n + 1):  # the numerically stable product form
        result *= 1.0 - k / i
    return 1.0 - result


# --------------------------------------------------------------------------------------------------------------
# the GRPO / RLOO reward
# --------------------------------------------------------------------------------------------------------------


class VerifierReward:
    """1.0 when a completion passes its prompt's verifier, 0.0 when it fails, None when the row has neither
    a reference nor tests. Reads the prompt rows' `reference` and `tests` columns (objects or JSON text);
    code tests run in the sandbox, `workers` at a time."""

    def __init__(self, reference_field: str = "reference", tests_field: str = "tests", workers: int = 2,
                 cpu_seconds: int = 5, wall_seconds: float = 10.0, memory_mb: int = 512):  # fmt: skip
        self.__name__ = "verifier"
        self.reference_field = reference_field
        self.tests_field = tests_field
        self.workers = max(1, int(workers))
        self.limits = env_limits(cpu_seconds=cpu_seconds, wall_seconds=wall_seconds, memory_mb=memory_mb)
        self.last_verdicts: list[dict | None] = []

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any):
        count = len(completions)
        references = list(columns.get(self.reference_field) or [None] * count)
        tests = list(columns.get(self.tests_field) or [None] * count)
        if self.reference_field not in columns and self.tests_field not in columns:
            raise ValueError(f"reward 'verifier' reads the prompt-row fields {self.reference_field!r} / "
                             f"{self.tests_field!r}, which the prompts do not have: use a verifiable project")  # fmt: skip

        def one(i: int) -> dict | None:
            if references[i] is None and tests[i] is None:
                return None
            return verify(completions[i], references[i], tests[i], self.limits)

        with ThreadPoolExecutor(self.workers) as pool:
            self.last_verdicts = list(pool.map(one, range(count)))
        return [None if v is None else float(v["passed"]) for v in self.last_verdicts]


# --------------------------------------------------------------------------------------------------------------
# batch: python -m trainer.rewards.verifier TASKS.jsonl VERDICTS.jsonl [--workers N]
# --------------------------------------------------------------------------------------------------------------


def _event(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def run_batch(tasks_path: str, out_path: str, workers: int = 2) -> dict:
    """Verify every task ({id, text, reference?, tests?}) into a JSONL of {id, verdict}; JSON-lines events."""
    with open(tasks_path, encoding="utf-8") as handle:
        tasks = [json.loads(line) for line in handle if line.strip()]
    limits = env_limits()
    done = 0

    def one(task: dict) -> dict:
        try:
            verdict = verify(task["text"], task.get("reference"), task.get("tests"), limits)
        except SandboxUnavailable:
            raise
        except Exception as error:  # a broken reference must not stop the batch: this one is a sandbox error
            verdict = {"passed": False, "reason": "sandbox_error", "rule": "", "failed_tests": [],
                       "detail": f"{type(error).__name__}: {error}", "output_tail": ""}  # fmt: skip
        return {"id": task["id"], "verdict": verdict}

    counts = {"passed": 0, "failed": 0}
    with open(out_path + ".partial", "w", encoding="utf-8") as out, ThreadPoolExecutor(max(1, workers)) as pool:
        for row in pool.map(one, tasks):
            out.write(json.dumps(row) + "\n")
            done += 1
            counts["passed" if row["verdict"]["passed"] else "failed"] += 1
            if done % 10 == 0 or done == len(tasks):
                _event(event="progress", progress=done / max(1, len(tasks)), message=f"verified {done}/{len(tasks)}")
    import os

    os.replace(out_path + ".partial", out_path)
    return counts


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--workers")]
    workers = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--workers=")), 2)
    if len(args) != 2:
        print("usage: python -m trainer.rewards.verifier TASKS.jsonl VERDICTS.jsonl [--workers=N]", file=sys.stderr)
        return 2
    try:
        counts = run_batch(args[0], args[1], workers)
    except SandboxUnavailable as error:
        _event(event="error", message=str(error))
        return 1
    _event(event="done", **counts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
