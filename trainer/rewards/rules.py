"""Verifiable reward rules: plain functions on one completion text, and batched reward functions built on them.

The per-text functions return a score for one completion:

    exact_match_score(text, answer, mode="final")            1.0 when the (final) answer equals `answer`
    numeric_match_score(text, answer, tolerance=1e-6)        1.0 when the answer's number is within tolerance
    regex_score(text, pattern, mode="search")                1.0 when the pattern matches
    json_schema_score(text, schema)                          1.0 when the text is JSON conforming to `schema`
    length_penalty_score(length, max_length)                 0.0 up to max_length, down to -1.0 at twice that

The batched classes (ExactMatch, NumericMatch, RegexMatch, JsonSchemaMatch, LengthPenalty) follow TRL's reward
function signature `f(prompts, completions, completion_ids=None, **columns) -> list[float | None]`: a per-row
value (the expected answer, a pattern, a schema) is read from a prompt-row column (`answer_field`, ...) or given
once as a constant param. A row whose column is null gets None ("not applicable"), which TRL leaves out of the
weighted sum. Torch-free.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from trainer.rewards.json_schema import check_schema, validate

# ---------------------------------------------------------------------------------------------------------------
# text helpers
# ---------------------------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is, a message list (conversational) as its messages' contents."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content", ""))
    if isinstance(completion, list):
        parts = []
        for item in completion:
            if isinstance(item, dict) and item.get("type") == "text":  # content blocks
                parts.append(str(item.get("text", "")))
            elif isinstance(item, dict) and "content" in item:
                parts.append(completion_text(item["content"]))
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    if completion is None:
        return ""
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def normalize_answer(text: str, *, case_sensitive: bool = False) -> str:
    """Compare answers loosely: unicode-normalised, whitespace collapsed, outer quotes and final period dropped."""
    text = unicodedata.normalize("NFKC", str(text))
    if not case_sensitive:
        text = text.casefold()
    text = " ".join(text.split())
    text = text.strip(" \"'`*")
    text = text.rstrip(".!;,")
    return text.strip(" \"'`*")


_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_ANSWER_MARKER = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*(.+)", re.IGNORECASE)


def extract_final_answer(text: str) -> str:
    """The part of a completion that states its answer.

    The last `\\boxed{...}` if any; else what follows the last "answer:" / "answer is" / "final answer is"
    up to the end of that line; else the last non-empty line.
    """
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    markers = _ANSWER_MARKER.findall(text)
    if markers:
        return markers[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# An optional sign, digits with optional thousands separators, an optional decimal part, an optional exponent.
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")


def _number_matches(text: str) -> list[float]:
    values = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if not any(ch.isdigit() for ch in token):
            continue
        token = token.replace(",", "").replace("−", "-")
        try:
            values.append(float(token))
        except ValueError:
            continue
    return values


def extract_number(text: str) -> float | None:
    """The number a completion answers with, None when it holds none.

    The first number of the last \\boxed{...} or of what follows the last "answer:"/"answer is" marker;
    without either, the last number of the text. Understands signs, decimals, exponents, thousands separators.
    """
    stated = _BOXED.findall(text) or _ANSWER_MARKER.findall(text)
    if stated:
        numbers = _number_matches(stated[-1])
        if numbers:
            return numbers[0]
    numbers = _number_matches(text)
    return numbers[-1] if numbers else None


def parse_number(value: Any) -> float:
    """An expected answer as a float (a number, or a string holding one); ValueError if it holds none."""
    if isinstance(value, bool):
        raise ValueError(f"expected a numeric answer, got a boolean {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    numbers = _number_matches(str(value))
    if len(numbers) != 1:
        raise ValueError(f"expected answer {value!r} is not a single number")
    return numbers[0]


def extract_json(text: str, *, strict: bool = True) -> Any:
    """Parse the JSON value a completion holds; raises ValueError when there is none.

    strict: the whole completion (surrounding whitespace and one ```json fence allowed) must be the JSON value;
    otherwise the first JSON object or array found anywhere in the text is taken.
    """
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*\n?(.*?)\n?\s*```", stripped, re.DOTALL)
    if fence:
        stripped = fence.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        if strict:
            raise ValueError(f"not valid JSON: {exc}") from exc
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON object or array found in the text")


# ---------------------------------------------------------------------------------------------------------------
# per-text scores
# ---------------------------------------------------------------------------------------------------------------

EXACT_MATCH_MODES = ("final", "full", "contains")


def exact_match_score(text: str, answer: Any, *, mode: str = "final", case_sensitive: bool = False) -> float:
    """1.0 when the completion gives `answer` (or any of a list of accepted answers), else 0.0.

    mode "final": the extracted final answer (see extract_final_answer) equals the answer;
    "full": the whole completion equals it; "contains": the answer appears as whole words anywhere.
    Comparison is after normalize_answer (case-insensitive unless case_sensitive).
    """
    if mode not in EXACT_MATCH_MODES:
        raise ValueError(f"exact_match mode must be one of {EXACT_MATCH_MODES}, got {mode!r}")
    answers = answer if isinstance(answer, (list, tuple)) else [answer]
    wanted = [normalize_answer(str(a), case_sensitive=case_sensitive) for a in answers]
    if mode == "contains":
        haystack = normalize_answer(text, case_sensitive=case_sensitive)
        return float(any(a and re.search(r"(?<!\w)" + re.escape(a) + r"(?!\w)", haystack) for a in wanted))
    given = extract_final_answer(text) if mode == "final" else text
    return float(normalize_answer(given, case_sensitive=case_sensitive) in wanted)


def numeric_match_score(
    text: str, answer: Any, *, tolerance: float = 1e-6, relative_tolerance: float = 0.0
) -> float:
    """1.0 when the completion's number (extract_number) is within tolerance of `answer`, else 0.0.

    Within tolerance: |given - answer| <= max(tolerance, relative_tolerance * |answer|). No number: 0.0.
    """
    expected = parse_number(answer)
    given = extract_number(text)
    if given is None or not math.isfinite(given):
        return 0.0
    return float(abs(given - expected) <= max(tolerance, relative_tolerance * abs(expected)))


REGEX_MODES = ("search", "fullmatch")


def regex_score(text: str, pattern: str | re.Pattern[str], *, mode: str = "search") -> float:
    """1.0 when `pattern` is found in the completion (mode "search") or matches all of it (mode "fullmatch")."""
    if mode not in REGEX_MODES:
        raise ValueError(f"regex mode must be one of {REGEX_MODES}, got {mode!r}")
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    if mode == "fullmatch":
        return float(compiled.fullmatch(text.strip()) is not None)
    return float(compiled.search(text) is not None)


def json_schema_score(
    text: str, schema: dict | bool | None = None, *, strict: bool = True, valid_json_score: float = 0.0
) -> float:
    """1.0 when the completion is JSON conforming to `schema` (any JSON if schema is None).

    Invalid JSON scores 0.0; valid JSON that breaks the schema scores `valid_json_score` (partial credit).
    """
    try:
        value = extract_json(text, strict=strict)
    except ValueError:
        return 0.0
    if schema is None or not validate(value, schema):
        return 1.0
    return float(valid_json_score)


def length_penalty_score(length: int, max_length: int) -> float:
    """0.0 up to `max_length`, then falling linearly to -1.0 at twice max_length (and staying there)."""
    if max_length <= 0:
        raise ValueError(f"length_penalty max_length must be positive, got {max_length}")
    if length <= max_length:
        return 0.0
    return -min(1.0, (length - max_length) / max_length)


# ---------------------------------------------------------------------------------------------------------------
# batched reward functions (TRL signature)
# ---------------------------------------------------------------------------------------------------------------

_UNSET = object()


def _row_values(
    columns: dict[str, Any], count: int, *, reward: str, field: str | None, constant: Any, param: str
) -> list[Any]:
    """Per-row values of a reward's parameter: a constant param, or a column of the prompt rows."""
    if constant is not _UNSET:
        return [constant] * count
    if field is None:
        raise ValueError(f"reward {reward!r}: set {param!r} or a column name in '{param}_field'")
    if field not in columns:
        available = sorted(k for k in columns if k not in {"trainer_state", "log_extra", "log_metric"})
        raise ValueError(
            f"reward {reward!r} reads the prompt-row field {field!r}, which the prompts do not have "
            f"(fields: {available}); add it to the prompts or set a constant {param!r}"
        )
    values = list(columns[field])
    if len(values) != count:
        raise ValueError(f"reward {reward!r}: {len(values)} values of {field!r} for {count} completions")
    return values


class RewardFunction:
    """Base of the batched rules: subclasses implement score(text, value, completion_ids)."""

    name = "reward"
    param = "value"  # the per-row parameter's name (answer, pattern, schema)

    def __init__(self, *, field: str | None = None, constant: Any = _UNSET):
        self.field = field
        self.constant = constant
        self.__name__ = self.name  # TRL names each reward function's metrics after __name__

    def score(self, text: str, value: Any, completion_ids: Sequence[int] | None) -> float:
        raise NotImplementedError

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any
    ) -> list[float | None]:
        count = len(completions)
        if self.param is None:
            values: list[Any] = [None] * count
        else:
            values = _row_values(
                columns, count, reward=self.name, field=self.field, constant=self.constant, param=self.param
            )
        scores: list[float | None] = []
        for i, completion in enumerate(completions):
            if self.param is not None and values[i] is None:
                scores.append(None)  # this row carries no expected value: the rule does not apply
                continue
            ids = completion_ids[i] if completion_ids is not None else None
            scores.append(self.score(completion_text(completion), values[i], ids))
        return scores


class ExactMatch(RewardFunction):
    """1.0 when the completion's answer equals the row's expected answer (see exact_match_score)."""

    name = "exact_match"
    param = "answer"

    def __init__(
        self,
        answer_field: str | None = "answer",
        answer: Any = _UNSET,
        mode: str = "final",
        case_sensitive: bool = False,
    ):
        if mode not in EXACT_MATCH_MODES:
            raise ValueError(f"exact_match mode must be one of {EXACT_MATCH_MODES}, got {mode!r}")
        super().__init__(field=answer_field, constant=answer)
        self.mode = mode
        self.case_sensitive = case_sensitive

    def score(self, text, value, completion_ids):
        return exact_match_score(text, value, mode=self.mode, case_sensitive=self.case_sensitive)


class NumericMatch(RewardFunction):
    """1.0 when the completion's number is within tolerance of the row's expected number."""

    name = "numeric_match"
    param = "answer"

    def __init__(
        self,
        answer_field: str | None = "answer",
        answer: Any = _UNSET,
        tolerance: float = 1e-6,
        relative_tolerance: float = 0.0,
    ):
        if tolerance < 0 or relative_tolerance < 0:
            raise ValueError("numeric_match tolerances must be >= 0")
        if answer is not _UNSET:
            parse_number(answer)  # fail at build time, not mid-training
        super().__init__(field=answer_field, constant=answer)
        self.tolerance = tolerance
        self.relative_tolerance = relative_tolerance

    def score(self, text, value, completion_ids):
        return numeric_match_score(
            text, value, tolerance=self.tolerance, relative_tolerance=self.relative_tolerance
        )


class RegexMatch(RewardFunction):
    """1.0 when a regular expression matches the completion."""

    name = "regex"
    param = "pattern"

    def __init__(
        self,
        pattern: str | object = _UNSET,
        pattern_field: str | None = None,
        mode: str = "search",
        ignore_case: bool = False,
    ):
        if mode not in REGEX_MODES:
            raise ValueError(f"regex mode must be one of {REGEX_MODES}, got {mode!r}")
        self.flags = re.IGNORECASE if ignore_case else 0
        if isinstance(pattern, str):
            try:
                re.compile(pattern, self.flags)
            except re.error as exc:
                raise ValueError(f"regex reward: invalid pattern {pattern!r}: {exc}") from exc
        super().__init__(field=pattern_field, constant=pattern)
        self.mode = mode

    def score(self, text, value, completion_ids):
        return regex_score(text, re.compile(value, self.flags), mode=self.mode)


class JsonSchemaMatch(RewardFunction):
    """1.0 when the completion is valid JSON that conforms to a JSON schema (a supported subset)."""

    name = "json_schema"
    param = "schema"

    def __init__(
        self,
        schema: dict | bool | None | object = _UNSET,
        schema_field: str | None = None,
        strict: bool = True,
        valid_json_score: float = 0.0,
    ):
        if schema is _UNSET and schema_field is None:
            schema = None  # no schema: any valid JSON scores 1.0
        if schema is not _UNSET and schema is not None:
            check_schema(schema)
        super().__init__(field=schema_field, constant=schema)
        self.strict = strict
        self.valid_json_score = valid_json_score

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        if self.constant is None:  # a null schema is "any JSON", not "not applicable"
            texts = [completion_text(c) for c in completions]
            return [json_schema_score(t, None, strict=self.strict) for t in texts]
        return super().__call__(prompts, completions, completion_ids, **columns)

    def score(self, text, value, completion_ids):
        if isinstance(value, str):  # a schema column may hold JSON text
            value = json.loads(value)
        check_schema(value)
        return json_schema_score(text, value, strict=self.strict, valid_json_score=self.valid_json_score)


LENGTH_UNITS = ("tokens", "words", "chars")


class LengthPenalty(RewardFunction):
    """0.0 up to max_length (tokens, words or characters), then down to -1.0 at twice max_length."""

    name = "length_penalty"
    param = None

    def __init__(self, max_length: int = 256, unit: str = "tokens"):
        if unit not in LENGTH_UNITS:
            raise ValueError(f"length_penalty unit must be one of {LENGTH_UNITS}, got {unit!r}")
        if max_length <= 0:
            raise ValueError(f"length_penalty max_length must be positive, got {max_length}")
        super().__init__()
        self.max_length = max_length
        self.unit = unit

    def score(self, text, value, completion_ids):
        if self.unit == "tokens":
            if completion_ids is None:
                raise ValueError(
                    "length_penalty with unit 'tokens' needs completion_ids (use 'words' or 'chars')"
                )
            length = len(completion_ids)
        elif self.unit == "words":
            length = len(text.split())
        else:
            length = len(text)
        return length_penalty_score(length, self.max_length)
