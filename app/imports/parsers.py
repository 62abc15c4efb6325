"""Parse import files into `ImportRecord`s: pure functions, no database.

`parse_import(data, fmt)` reads a whole JSON-lines file and either returns every record or raises
`ImportValidationError` listing what is wrong, line by line: a file is imported entirely or not at all.
`ImportReader(lines, fmt)` does the same one line at a time (a spooled upload, a local file): see its docstring.

Formats (one JSON object a line; blank lines are skipped; UTF-8 with or without BOM):

- ``native``: ``{"prompt": str | [{"role", "content"}], "completions": [{"text", "model"?, "metadata"?}],
  "external_id"?: str, "metadata"?: {}, "ranking"?: [[0], [1, 2]]}`` (ranking: tie groups of completion
  indexes, best first; it makes a gold item or an imported judgment).
- ``trl``: TRL's preference format ``{"prompt", "chosen", "rejected"}``, either standard (three strings) or
  conversational (message lists; chosen/rejected one assistant message each). Rows without ``prompt`` are
  accepted when chosen/rejected are message lists sharing a prefix (TRL's "implicit prompt"): the shared
  prefix becomes the prompt. Other fields of the row go to the record's metadata.
- ``hh-rlhf``: Anthropic HH-RLHF ``{"chosen", "rejected"}``, two full transcripts
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. See `split_hh_pair` for how the prompt is split off.
- ``oasst``: Open-Assistant message trees (``{"message_tree_id", "prompt": {message, "replies": [...]}}``).
  Each prompter message with two or more ranked, non-deleted assistant replies becomes one record.

Decisions worth knowing:
- Two completions with the same text in one record reject the file: a preference between identical
  texts is noise, and a pair whose chosen equals its rejected teaches a trainer nothing.
- Unknown top-level fields in native rows reject the file (a misspelt ``ranking`` must not silently
  drop a gold answer); extra data belongs in ``metadata``.
- Line 0 in an error means the whole file (size, emptiness, unknown format).

- ``openai-chat``, ``hf-messages``, ``sharegpt``, ``swe-agent``: conversations (see the section below): lines that
  share a history are one comparison at that turn; ``swe-agent`` reads SWE-agent ``.traj`` trajectories, one a line.

Verifiable prompts (a ``reference`` and/or ``tests``, see trainer.rewards.verifier) need no completions:
- ``native`` rows may carry ``"reference": {"answer", "rule"?, ...}`` and ``"tests": {"code", "entry_point"?,
  "prefix"?}``; with either one, ``completions`` is optional.
- ``gsm8k``: ``{"question", "answer"}`` where the answer's worked solution ends with ``#### N``: N becomes a
  numeric reference, the solution goes to metadata.
- ``humaneval``: ``{"prompt", "test", "entry_point", "task_id"?}``: the prompt (a function stub) is the prompt
  and the tests' prefix, ``check(candidate)`` in ``test`` is called with the answer's ``entry_point``.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from app.errors import ImportValidationError
from app.imports.messages import (
    CONTINUATION_KEY,
    MAX_ARGUMENTS_CHARS,
    ROLES,
    Message,
    MessageError,
    check_messages,
    is_plain,
    split_continuation,
)
from app.limits import INT4_MAX, INT4_MIN, column_length, find_bad_character
from app.models import Comparison, Completion, Prompt
from trainer.rewards.verifier import check_reference, check_tests

FORMATS = ("native", "trl", "hh-rlhf", "oasst", "gsm8k", "humaneval", "openai-chat", "hf-messages", "sharegpt",
           "swe-agent")  # fmt: skip
MESSAGE_ROLES = ROLES
MAX_REPORTED_ERRORS = ImportValidationError.MAX_REPORTED
DEFAULT_MAX_BYTES = 50 * 2**20
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a line may have: far beyond any real record, far below the recursion
that parsing (and every later walk of the row) would need."""
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


@dataclass
class ImportRecord:
    """One prompt with its completions (and maybe a human preference), ready to be stored."""

    line: int
    """1-based line of the file this record came from (an OASST tree line gives several records)."""
    external_id: str | None
    """Stable id from the file (native ``external_id``, OASST prompter ``message_id``); None when absent."""
    prompt: str | list[dict[str, str]]
    """Plain text, or a chat: a list of ``{"role", "content"}``."""
    completions: list[dict[str, Any]]
    """``[{"text": str, "model": str | None, "metadata": dict}]``, two or more, distinct texts."""
    ranking: list[list[int]] | None
    """Human preference from the file: tie groups of indexes into completions, best first; None if none."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form data carried along (source ids, extra columns)."""
    reference: dict[str, Any] | None = None
    """Verifiable prompts: the answer and its rule (trainer.rewards.verifier.check_reference)."""
    tests: dict[str, Any] | None = None
    """Verifiable prompts: Python tests for the answer's code (trainer.rewards.verifier.check_tests)."""


@dataclass(frozen=True)
class LineError:
    line: int
    """1-based line number; 0 means the file as a whole."""
    message: str


class _RowError(Exception):
    """A problem with one row; collected into the file's error list."""


class _Errors:
    """Collects line errors, keeping the first MAX_REPORTED_ERRORS but counting all."""

    def __init__(self) -> None:
        self.kept: list[LineError] = []
        self.total = 0

    def add(self, line: int, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_ERRORS:
            self.kept.append(LineError(line, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise ImportValidationError(self.kept, self.total)


def parse_import(data: bytes, fmt: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[ImportRecord]:
    """Parse a whole import file; return all records or raise `ImportValidationError` (nothing partial)."""
    check_file_size(len(data), max_bytes, fmt)
    return list(ImportReader(data.split(b"\n"), fmt))


def spooled_size(source: BinaryIO) -> int:
    """The size of a seekable upload (a spooled temporary file), left at its start to be read."""
    source.seek(0, 2)
    size = source.tell()
    source.seek(0)
    return size


def check_file_size(size: int, max_bytes: int, fmt: str) -> None:
    """An unknown format, then a file over the limit: refused whole (line 0), before any line is read."""
    check_format(fmt)
    if size > max_bytes:
        raise ImportValidationError(
            [LineError(0, f"file is {size:,} bytes, larger than the limit of {max_bytes:,} bytes")]
        )


def check_format(fmt: str) -> None:
    if fmt not in ROW_PARSERS and fmt not in CONVERSATION_PARSERS:
        raise ImportValidationError(
            [LineError(0, f"unknown import format {fmt!r}: expected one of {', '.join(FORMATS)}")]
        )


class ImportReader:
    """The records of an import file read line by line: iterate it once.

    `lines` is any iterable of byte lines (a binary file opened for reading, ``data.split(b"\\n")``, a generator):
    it is read one line at a time and never joined. Row formats (native, trl, hh-rlhf, oasst, gsm8k, humaneval)
    yield each line's records as soon as the line is read; the conversation formats (openai-chat, hf-messages,
    sharegpt, swe-agent) group lines that share a history across the whole file, so they hold the file's
    conversations until its end (their size is bounded by the import limit) and yield then.

    A bad line does not stop the iteration: its error is recorded (`failed` turns true) and the next lines are
    still read, so that every problem is reported; when the lines run out, the iteration raises
    `ImportValidationError` with the first `MAX_REPORTED_ERRORS` problems and the count of all of them. A consumer
    that writes what it is given must stop writing once `failed` is true and let the error roll its transaction
    back. What is kept across lines is bounded: the reported errors and, per external id, a 64-bit hash and the
    line it was first seen on (for duplicates)."""

    def __init__(self, lines: Iterable[bytes], fmt: str):
        check_format(fmt)
        self.fmt = fmt
        self.lines = lines
        self.errors = _Errors()

    @property
    def failed(self) -> bool:
        return self.errors.total > 0

    def __iter__(self) -> Iterator[ImportRecord]:
        if self.fmt in CONVERSATION_PARSERS:
            yield from _parse_conversations(self.lines, CONVERSATION_PARSERS[self.fmt], self.errors)
        else:
            yield from self._rows()
        self.errors.raise_if_any()

    def _rows(self) -> Iterator[ImportRecord]:
        parse_row = ROW_PARSERS[self.fmt]
        first_line_of: dict[int, int] = {}  # hash of an external id: the line it was first seen on
        for line_no, row in _json_lines(self.lines, self.errors):
            try:
                new_records = parse_row(row, line_no)
                for record in new_records:
                    _check_record(record)
            except _RowError as exc:
                self.errors.add(line_no, str(exc))
                continue
            for record in new_records:
                if record.external_id is not None:
                    key = _id_hash(record.external_id)
                    if key in first_line_of:
                        self.errors.add(
                            line_no,
                            f"duplicate external_id {record.external_id!r} (first seen on line {first_line_of[key]})",
                        )
                        continue
                    first_line_of[key] = line_no
                yield record


def _id_hash(external_id: str) -> int:
    """64 bits of an external id's BLAKE2b: what duplicate detection keeps instead of the id itself."""
    return int.from_bytes(hashlib.blake2b(external_id.encode(), digest_size=8).digest(), "little")


def _json_lines(lines: Iterable[bytes], errors: _Errors) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line that holds a JSON object free of bad characters;
    record the other lines' errors and go on, and that the file is empty where it has no line at all.

    Lines are split on b"\\n" only (a binary file's iteration does that, as does ``bytes.split``): safe for UTF-8 (no
    multi-byte sequence contains 0x0A) and, unlike str.splitlines, no break at U+2028 or other separators allowed
    inside JSON strings. A UTF-8 BOM before the first line is skipped."""
    saw_a_row = False
    for line_no, raw in enumerate(lines, start=1):
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.add(line_no, f"invalid UTF-8 at byte {exc.start} of the line")
            continue
        if not text.strip():
            continue
        depth = _nesting_depth(text)
        if depth > MAX_JSON_DEPTH:
            errors.add(line_no, f"nested {depth} levels deep; at most {MAX_JSON_DEPTH} levels of arrays and objects")
            continue
        try:
            row = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            column = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            errors.add(line_no, f"malformed JSON: {message}{column}")
            continue
        if not isinstance(row, dict):
            errors.add(line_no, f"expected a JSON object, got {_type_name(row)}")
            continue
        saw_a_row = True
        problem = find_bad_character(row)
        if problem:
            errors.add(line_no, problem)
            continue
        yield line_no, row
    if not saw_a_row and not errors.total:
        errors.add(0, "file is empty: expected one JSON object a line")


def _nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects on a line, brackets inside strings not counted; computed before
    parsing, so a line of 10,000 `[` is refused instead of exhausting the parser's recursion."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: not worth a scan
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# ----------------------------------------------------------------------------------------------------
# Shared field checks


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _require(row: dict, name: str, where: str = "") -> Any:
    if name not in row:
        raise _RowError(f"missing field {name!r}{where}")
    return row[name]


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int subclass in Python but never a valid index or count here
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        expected = {str: "a string", list: "an array", dict: "an object", int: "an integer"}.get(kind, kind)
        raise _RowError(f"{what} must be {expected}, got {_type_name(value)}")
    return value


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    _expect(value, list, what)
    if not value:
        raise _RowError(f"{what} must not be an empty list")
    messages = []
    for index, message in enumerate(value):
        where = f"{what}[{index}]"
        _expect(message, dict, where)
        role = _expect(_require(message, "role", f" in {where}"), str, f"{where}.role")
        content = _expect(_require(message, "content", f" in {where}"), str, f"{where}.content")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise _RowError(f"{where} has unknown field(s) {', '.join(extra)} (expected role and content)")
        if role not in MESSAGE_ROLES:
            raise _RowError(f"{where}.role is {role!r}; expected one of {', '.join(MESSAGE_ROLES)}")
        messages.append({"role": role, "content": content})
    return messages


def _prompt(value: Any, what: str = "prompt") -> str | list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise _RowError(f"{what} must not be empty")
        return value
    if isinstance(value, list):
        return _messages(value, what)
    raise _RowError(f"{what} must be a string or a list of messages, got {_type_name(value)}")


def _completion(text: str, model: str | None = None, metadata: dict | None = None) -> dict[str, Any]:
    return {"text": text, "model": model, "metadata": metadata or {}}


def _check_record(record: ImportRecord) -> None:
    """Checks every format shares: two or more distinct completions, a valid ranking."""
    count = len(record.completions)
    if count < 2 and record.reference is None and record.tests is None:
        raise _RowError(f"needs at least 2 completions, got {count} (a prompt with a reference or tests needs none)")
    first_index_of: dict[str, int] = {}
    for index, completion in enumerate(record.completions):
        # Two continuations ending in the same answer by different tool calls are different options.
        text = json.dumps([completion["text"], (completion.get("metadata") or {}).get(CONTINUATION_KEY)])
        if text in first_index_of:
            raise _RowError(
                f"completions {first_index_of[text]} and {index} have the same text "
                "(identical options cannot be ranked)"
            )
        first_index_of[text] = index
    if record.ranking is not None:
        _check_ranking(record.ranking, count)
    _check_storable(record)


@functools.cache
def _column_limits() -> tuple[int, int, int]:
    """(external_id, model name, batch) lengths: read once, not per line (a model attribute lookup is not free)."""
    return (column_length(Prompt.external_id), column_length(Completion.model_name),
            min(column_length(Prompt.batch), column_length(Comparison.batch)))  # fmt: skip


def _check_storable(record: ImportRecord) -> None:
    """What the database would refuse: values longer than their columns, priorities outside int4."""
    limit, model_limit, batch_limit = _column_limits()
    if record.external_id is not None and len(record.external_id) > limit:
        raise _RowError(f"external_id is {len(record.external_id)} characters long; the limit is {limit}")
    for index, completion in enumerate(record.completions):
        model = completion.get("model")
        if model is not None and len(model) > model_limit:
            raise _RowError(f"completions[{index}].model is {len(model)} characters long; the limit is {model_limit}")
    metadata = record.metadata or {}
    batch = metadata.get("batch")
    if batch is not None and not isinstance(batch, str):
        raise _RowError(f"metadata.batch must be a string, got {_type_name(batch)}")
    if batch is not None and len(batch) > batch_limit:
        raise _RowError(f"metadata.batch is {len(batch)} characters long; the limit is {batch_limit}")
    record_priority(record)


def record_priority(record: ImportRecord) -> int:
    """The record's ``metadata.priority`` (higher is served first): an integer within int4, 0 when absent."""
    priority = (record.metadata or {}).get("priority")
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _RowError(f"metadata.priority must be an integer, got {_type_name(priority)}")
    if not INT4_MIN <= priority <= INT4_MAX:
        raise _RowError(f"metadata.priority must be between {INT4_MIN} and {INT4_MAX}, got {priority}")
    return priority


def _check_ranking(ranking: Any, count: int) -> list[list[int]]:
    _expect(ranking, list, "ranking")
    seen: list[int] = []
    for group_index, group in enumerate(ranking):
        _expect(group, list, f"ranking[{group_index}]")
        if not group:
            raise _RowError(f"ranking[{group_index}] is an empty tie group")
        for index in group:
            _expect(index, int, f"ranking[{group_index}] entries")
            seen.append(index)
    if sorted(seen) != list(range(count)):
        raise _RowError(
            f"ranking must list every completion index 0..{count - 1} exactly once, got {sorted(seen)}"
        )
    return ranking


def _optional_external_id(row: dict) -> str | None:
    if row.get("external_id") is None:
        return None
    external_id = _expect(row["external_id"], str, "external_id")
    if not external_id.strip():
        raise _RowError("external_id must not be empty")
    return external_id


# ----------------------------------------------------------------------------------------------------
# native

NATIVE_FIELDS = ("prompt", "completions", "external_id", "metadata", "ranking", "reference", "tests")
NATIVE_COMPLETION_FIELDS = ("text", "model", "metadata")


def parse_native_row(row: dict, line: int) -> list[ImportRecord]:
    unknown = sorted(set(row) - set(NATIVE_FIELDS))
    if unknown:
        raise _RowError(
            f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(NATIVE_FIELDS)}; "
            "put extra data in metadata)"
        )
    prompt = _prompt(_require(row, "prompt"))
    reference, tests = _verifier_fields(row)
    verifiable = reference is not None or tests is not None
    raw_completions = _expect(row.get("completions", []) if verifiable else _require(row, "completions"), list,
                              "completions")  # fmt: skip
    completions = []
    for index, raw in enumerate(raw_completions):
        where = f"completions[{index}]"
        _expect(raw, dict, where)
        unknown = sorted(set(raw) - set(NATIVE_COMPLETION_FIELDS))
        if unknown:
            raise _RowError(
                f"{where} has unknown field(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(NATIVE_COMPLETION_FIELDS)})"
            )
        text = _expect(_require(raw, "text", f" in {where}"), str, f"{where}.text")
        model = raw.get("model")
        if model is not None:
            _expect(model, str, f"{where}.model")
        metadata = _expect(raw.get("metadata") or {}, dict, f"{where}.metadata")
        completions.append(_completion(text, model, metadata))
    ranking = row.get("ranking")
    if ranking is not None:
        ranking = _check_ranking(ranking, len(completions))
    metadata = _expect(row.get("metadata") or {}, dict, "metadata")
    return [ImportRecord(line, _optional_external_id(row), prompt, completions, ranking, metadata, reference, tests)]


def _verifier_fields(row: dict) -> tuple[dict | None, dict | None]:
    """A row's reference and tests, checked (None when absent)."""
    reference = tests = None
    try:
        if row.get("reference") is not None:
            reference = check_reference(row["reference"])
        if row.get("tests") is not None:
            tests = check_tests(row["tests"])
    except ValueError as error:
        raise _RowError(str(error)) from error
    return reference, tests


# ----------------------------------------------------------------------------------------------------
# gsm8k, humaneval: the common shapes of math and code sets

GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def parse_gsm8k_row(row: dict, line: int) -> list[ImportRecord]:
    question = _prompt(_require(row, "question"), "question")
    solution = _expect(_require(row, "answer"), str, "answer")
    found = GSM8K_ANSWER.search(solution)
    if not found:
        raise _RowError("answer must end with '#### N', the final answer")
    final = found.group(1).strip().replace(",", "")
    try:
        reference = check_reference({"answer": final, "rule": "numeric", "tolerance": 1e-6})
    except ValueError as error:
        raise _RowError(f"the final answer after '####' is not a number: {final!r}") from error
    extra = {k: v for k, v in row.items() if k not in ("question", "answer", "external_id", "id")}
    external_id = _optional_external_id(row) or (str(row["id"]) if row.get("id") is not None else None)
    metadata = {"solution": solution[: found.start()].strip(), **extra}
    return [ImportRecord(line, external_id, question, [], None, metadata, reference, None)]


def parse_humaneval_row(row: dict, line: int) -> list[ImportRecord]:
    prompt = _expect(_require(row, "prompt"), str, "prompt")
    if not prompt.strip():
        raise _RowError("prompt must not be empty")
    test = _expect(_require(row, "test"), str, "test")
    entry_point = _expect(_require(row, "entry_point"), str, "entry_point")
    try:
        tests = check_tests({"code": test, "entry_point": entry_point, "prefix": prompt})
    except ValueError as error:
        raise _RowError(str(error)) from error
    task_id = row.get("task_id")
    if task_id is not None:
        _expect(task_id, str, "task_id")
    external_id = _optional_external_id(row) or task_id
    metadata = {k: v for k, v in row.items() if k not in ("prompt", "test", "entry_point", "external_id")}
    return [ImportRecord(line, external_id, prompt, [], None, metadata, None, tests)]


# ----------------------------------------------------------------------------------------------------
# trl

TRL_FIELDS = ("prompt", "chosen", "rejected", "external_id")


def parse_trl_row(row: dict, line: int) -> list[ImportRecord]:
    chosen = _require(row, "chosen")
    rejected = _require(row, "rejected")
    if "prompt" in row:
        prompt = _prompt(row["prompt"])
        if isinstance(prompt, str):
            chosen_text = _expect(chosen, str, "chosen (with a string prompt)")
            rejected_text = _expect(rejected, str, "rejected (with a string prompt)")
        else:
            chosen_text = _single_assistant_reply(_messages(chosen, "chosen"), "chosen")
            rejected_text = _single_assistant_reply(_messages(rejected, "rejected"), "rejected")
    else:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise _RowError(
                "missing field 'prompt' (rows without a prompt need chosen and rejected as message lists "
                "sharing a prefix)"
            )
        chosen_messages = _messages(chosen, "chosen")
        rejected_messages = _messages(rejected, "rejected")
        shared = 0
        while (
            shared < min(len(chosen_messages), len(rejected_messages))
            and chosen_messages[shared] == rejected_messages[shared]
        ):
            shared += 1
        if shared == 0:
            raise _RowError("missing field 'prompt' and chosen/rejected share no leading messages")
        prompt = chosen_messages[:shared]
        chosen_text = _single_assistant_reply(chosen_messages[shared:], "chosen after the shared prompt")
        rejected_text = _single_assistant_reply(
            rejected_messages[shared:], "rejected after the shared prompt"
        )
    extra = {key: value for key, value in row.items() if key not in TRL_FIELDS}
    return [
        ImportRecord(
            line,
            _optional_external_id(row),
            prompt,
            [_completion(chosen_text), _completion(rejected_text)],
            [[0], [1]],
            extra,
        )
    ]


def _single_assistant_reply(messages: list[dict[str, str]], what: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [message["role"] for message in messages]
        raise _RowError(f"{what} must be exactly one assistant message, got roles {roles}")
    return messages[0]["content"]


# ----------------------------------------------------------------------------------------------------
# hh-rlhf

HH_SPEAKERS = {"Human": "user", "Assistant": "assistant"}
HH_ROLE_NAMES = {role: speaker for speaker, role in HH_SPEAKERS.items()}
# The space after the colon is part of the marker so that rendering "\n\n{Speaker}: {content}" rebuilds
# every transcript exactly (in the real data every marker is followed by a space).
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_turns(transcript: str) -> list[tuple[str, str]]:
    """Split an HH transcript into (role, content) turns, roles "user"/"assistant"."""
    parts = HH_TURN.split(transcript)
    if parts[0] != "":
        raise _RowError("transcript must start with '\\n\\nHuman: '")
    return [(HH_SPEAKERS[parts[i]], parts[i + 1]) for i in range(1, len(parts), 2)]


def hh_transcript(prompt_messages: list[dict[str, str]], reply: str) -> str:
    """Rebuild the original HH transcript from a record's prompt and one completion text (exact inverse)."""
    turns = "".join(f"\n\n{HH_ROLE_NAMES[m['role']]}: {m['content']}" for m in prompt_messages)
    return f"{turns}\n\nAssistant: {reply}"


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Split two HH transcripts into (prompt messages, chosen reply, rejected reply).

    The prompt is the longest run of turns the two transcripts share that is followed, in both, by an
    Assistant turn; each reply is everything after that turn's ``"\\n\\nAssistant: "`` marker, kept exact.
    For ordinary rows this is the usual split at the last ``"\\n\\nAssistant:"``. In the few real rows
    where one transcript has an extra Assistant turn after the point where they diverge, the reply for
    that side spans several turns and keeps its ``"\\n\\nAssistant: "`` markers inside its text; nothing is
    dropped, and ``hh_transcript(prompt, reply)`` rebuilds both transcripts exactly either way.
    An empty final reply is kept as an empty completion text (it is the rater's chosen answer in some rows).
    """
    chosen_turns = hh_turns(chosen)
    rejected_turns = hh_turns(rejected)
    if chosen_turns == rejected_turns:
        raise _RowError("chosen and rejected transcripts are identical")
    shared = 0
    while (
        shared < min(len(chosen_turns), len(rejected_turns))
        and chosen_turns[shared] == rejected_turns[shared]
    ):
        shared += 1
    # The first differing turn (or, if one transcript extends the other, the one right after the
    # shared part) must be an assistant turn in both; otherwise back up to the last one that is.
    split = min(shared, len(chosen_turns) - 1, len(rejected_turns) - 1)
    while split > 0 and not (chosen_turns[split][0] == rejected_turns[split][0] == "assistant"):
        split -= 1
    if split == 0:
        raise _RowError("chosen and rejected share no prompt before an Assistant turn")
    prompt = [{"role": role, "content": content} for role, content in chosen_turns[:split]]
    chosen_reply = chosen[len(hh_transcript(prompt, "")) :]
    rejected_reply = rejected[len(hh_transcript(prompt, "")) :]
    return prompt, chosen_reply, rejected_reply


def parse_hh_row(row: dict, line: int) -> list[ImportRecord]:
    chosen = _expect(_require(row, "chosen"), str, "chosen")
    rejected = _expect(_require(row, "rejected"), str, "rejected")
    prompt, chosen_reply, rejected_reply = split_hh_pair(chosen, rejected)
    metadata = {key: value for key, value in row.items() if key not in ("chosen", "rejected")}
    if HH_TURN.search(chosen_reply) or HH_TURN.search(rejected_reply):
        metadata["hh_multi_turn_completion"] = True
    return [
        ImportRecord(
            line,
            None,
            prompt,
            [_completion(chosen_reply), _completion(rejected_reply)],
            [[0], [1]],
            metadata,
        )
    ]


# ----------------------------------------------------------------------------------------------------
# oasst

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def parse_oasst_row(row: dict, line: int) -> list[ImportRecord]:
    """One message tree -> one record per prompter message with two or more ranked assistant replies."""
    root = _expect(_require(row, "prompt"), dict, "prompt")
    tree_metadata = {key: row[key] for key in ("message_tree_id", "tree_state") if key in row}
    records: list[ImportRecord] = []
    # Iterative depth-first walk, in file order, carrying the conversation path to each message.
    stack: list[tuple[dict, list[dict[str, str]]]] = [(root, [])]
    while stack:
        message, parents = stack.pop()
        message_id, role, text = _oasst_message(message)
        if message.get("deleted") is True:
            continue  # a deleted message takes its whole subtree with it
        path = [*parents, {"role": OASST_ROLES[role], "content": text}]
        replies = _expect(message.get("replies") or [], list, f"message {message_id} replies")
        for reply in replies:
            _expect(reply, dict, f"a reply of message {message_id}")
        if role == "prompter":
            record = _oasst_record(message_id, path, replies, line, tree_metadata, message)
            if record is not None:
                records.append(record)
        stack.extend((reply, path) for reply in reversed(replies))
    return records


def _oasst_message(message: dict) -> tuple[str, str, str]:
    message_id = _expect(_require(message, "message_id", " in a message"), str, "message_id")
    role = _expect(_require(message, "role", f" in message {message_id}"), str, f"message {message_id} role")
    if role not in OASST_ROLES:
        raise _RowError(f"message {message_id} has role {role!r}; expected prompter or assistant")
    text = _expect(_require(message, "text", f" in message {message_id}"), str, f"message {message_id} text")
    return message_id, role, text


def _oasst_record(
    prompter_id: str,
    path: list[dict[str, str]],
    replies: list[dict],
    line: int,
    tree_metadata: dict,
    prompter: dict,
) -> ImportRecord | None:
    ranked = []
    for reply in replies:
        reply_id, role, text = _oasst_message(reply)
        if role != "assistant" or reply.get("deleted") is True or reply.get("rank") is None:
            continue
        rank = _expect(reply["rank"], int, f"message {reply_id} rank")
        if rank < 0:
            raise _RowError(f"message {reply_id} rank must be >= 0, got {rank}")
        ranked.append((reply_id, text, rank, reply))
    if len(ranked) < 2:
        return None
    completions = [
        _completion(
            text,
            reply.get("model_name") if isinstance(reply.get("model_name"), str) else None,
            {
                "message_id": reply_id,
                "rank": rank,
                **({"synthetic": reply["synthetic"]} if "synthetic" in reply else {}),
            },
        )
        for reply_id, text, rank, reply in ranked
    ]
    # Ranks can have gaps once deleted siblings are skipped; equal ranks (hand-made trees) tie.
    distinct_ranks = sorted({rank for _, _, rank, _ in ranked})
    ranking = [[i for i, (_, _, rank, _) in enumerate(ranked) if rank == level] for level in distinct_ranks]
    metadata = {**tree_metadata, **({"lang": prompter["lang"]} if "lang" in prompter else {})}
    return ImportRecord(line, prompter_id, path, completions, ranking, metadata)


ROW_PARSERS: dict[str, Callable[[dict, int], list[ImportRecord]]] = {
    "native": parse_native_row,
    "trl": parse_trl_row,
    "hh-rlhf": parse_hh_row,
    "oasst": parse_oasst_row,
    "gsm8k": parse_gsm8k_row,
    "humaneval": parse_humaneval_row,
}


SNIFF_LINES = 5
SNIFF_BYTES = 200_000
"""What format detection reads of a file: its first lines, within this many bytes."""


def detect_formats(data: bytes, tried: str) -> list[str]:
    """The import formats other than `tried` that read the file's first lines without a problem: what to suggest
    when a whole file fails in the chosen format (one wrong choice otherwise reads as a hundred broken lines)."""
    head = b"\n".join([line for line in data[:SNIFF_BYTES].splitlines() if line.strip()][:SNIFF_LINES])
    fitting = []
    for fmt in FORMATS:
        if fmt == tried or not head:
            continue
        try:
            parse_import(head, fmt)
        except ImportValidationError:
            continue
        fitting.append(fmt)
    return fitting


# ----------------------------------------------------------------------------------------------------
# Conversation formats: one conversation a line; lines sharing a history become one comparison at that turn
#
# A line's continuation is its messages after the last user message (tool calls, their results, the answer; see
# app.imports.messages); its history is everything before, with the tools the model was offered. Lines with the same
# history and tools make one comparison whose options are their continuations (file order), unranked: raters rank
# them. A history with a single continuation refuses the file (a comparison needs two options).

MAX_TOOLS_CHARS = 10 * MAX_ARGUMENTS_CHARS


@dataclass
class Conversation:
    """One line of a conversation format, checked."""

    history: list[Message]
    continuation: list[Message]
    tools: list[dict[str, Any]] | None
    model: str | None
    metadata: dict[str, Any]


def _tools(value: Any) -> list[dict[str, Any]] | None:
    """The tools offered to the model (OpenAI's ``[{"type": "function", "function": {name, ...}}]``), or None."""
    if value is None:
        return None
    if isinstance(value, str):  # ShareGPT exports carry them as a JSON string
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise _RowError(f"tools is not valid JSON: {exc.msg} (column {exc.colno})") from exc
    _expect(value, list, "tools")
    for index, tool in enumerate(value):
        _expect(tool, dict, f"tools[{index}]")
        function = tool.get("function", tool)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise _RowError(f"tools[{index}] must name its function (function.name)")
    if len(json.dumps(value, ensure_ascii=False)) > MAX_TOOLS_CHARS:
        raise _RowError(f"tools is longer than {MAX_TOOLS_CHARS:,} characters")
    return value or None


def _conversation(messages: list[Message], row: dict, used: set[str], model: str | None = None) -> Conversation:
    checked = check_messages(messages, "messages")
    history, continuation = split_continuation(checked, "messages")
    metadata = {key: value for key, value in row.items() if key not in used}
    return Conversation(history, continuation, _tools(row.get("tools")), model, metadata)


def _model(row: dict) -> str | None:
    model = row.get("model")
    return _expect(model, str, "model") if model is not None else None


def parse_openai_chat_line(row: dict) -> Conversation:
    """OpenAI chat fine-tuning JSONL: ``{"messages", "tools"?, "parallel_tool_calls"?, "model"?}``; tool-call
    arguments are JSON strings; the ``developer`` role is OpenAI's name for system."""
    messages = _expect(_require(row, "messages"), list, "messages")
    renamed = [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m for m in messages]
    return _conversation(renamed, row, {"messages", "tools", "model"}, _model(row))


HF_REASONING_KEYS = ("reasoning_content", "thinking")
"""Where chat templates in transformers keep reasoning (Qwen3: reasoning_content; gpt-oss: thinking)."""


def parse_hf_messages_line(row: dict) -> Conversation:
    """Hugging Face ``messages`` rows (TRL's conversational language-modelling shape), ``tools`` optional; reasoning
    under ``reasoning_content`` or ``thinking`` is read as ``reasoning``."""
    messages = _expect(_require(row, "messages"), list, "messages")
    renamed = []
    for message in messages:
        if isinstance(message, dict):
            message = dict(message)
            for key in HF_REASONING_KEYS:
                if key in message and "reasoning" not in message:
                    message["reasoning"] = message.pop(key)
        renamed.append(message)
    return _conversation(renamed, row, {"messages", "tools", "model"}, _model(row))


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}  # fmt: skip
"""ShareGPT speakers (as in LLaMA-Factory's sharegpt format: function_call holds ``{"name", "arguments"}`` as JSON,
observation is the tool's result)."""


def parse_sharegpt_line(row: dict) -> Conversation:
    turns = _expect(_require(row, "conversations"), list, "conversations")
    messages: list[dict] = []
    if row.get("system") is not None:
        messages.append({"role": "system", "content": _expect(row["system"], str, "system")})
    last_call_id = None
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        _expect(turn, dict, where)
        speaker = _expect(_require(turn, "from", f" in {where}"), str, f"{where}.from")
        value = _expect(_require(turn, "value", f" in {where}"), str, f"{where}.value")
        if speaker not in SHAREGPT_ROLES:
            raise _RowError(f"{where}.from is {speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}")
        if speaker == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError as exc:
                raise _RowError(f"{where}.value (a function call) is not valid JSON: {exc.msg}") from exc
            calls = call if isinstance(call, list) else [call]
            tool_calls = []
            for number, one in enumerate(calls):
                _expect(one, dict, f"{where}.value")
                last_call_id = f"call_{index}_{number}"
                tool_calls.append({"id": last_call_id, "function": one})
            messages.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        elif SHAREGPT_ROLES[speaker] == "tool":
            if last_call_id is None:
                raise _RowError(f"{where} is a tool result with no function call before it")
            messages.append({"role": "tool", "content": value, "tool_call_id": last_call_id})
        else:
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": value})
    return _conversation(messages, row, {"conversations", "system", "tools", "model"}, _model(row))


# ----------------------------------------------------------------------------------------------------
# swe-agent: an agent trajectory, one SWE-agent ``.traj`` file a line (``jq -c . trajectories/*/*.traj``)
#
# A .traj file is ``{"trajectory": [{"thought", "action", "observation", "response"?, "state"?, ...}], "history",
# "info": {"exit_status", "submission"?, ...}, "replay_config"?, ...}``. It becomes a conversation whose assistant
# turns are the agent's steps: each step is one assistant message (reasoning = the thought, one tool call named by
# the action's first word, arguments {"command": the action}) and the tool message with its observation; the
# trajectory ends with an assistant message stating the exit status and the submitted patch. The task is the
# row's ``problem_statement`` (a string or {"text"}) or else the last user message of ``history`` before the first
# step (SWE-agent's instance template, which quotes the issue); the system message of ``history`` is kept. Lines
# with the same task are the options of one comparison of whole trajectories.

SWE_AGENT_METADATA = ("instance_id", "environment")


def _swe_agent_task(row: dict) -> tuple[list[dict], str]:
    """(system messages, task text) of a .traj row."""
    history = row.get("history")
    history = _expect(history, list, "history") if history is not None else []
    system = []
    for index, message in enumerate(history):
        _expect(message, dict, f"history[{index}]")
        if message.get("role") == "system" and not system:
            system = [{"role": "system", "content": _history_text(message, f"history[{index}]")}]
    statement = row.get("problem_statement")
    if isinstance(statement, dict):
        statement = statement.get("text")
    if statement is not None:
        return system, _expect(statement, str, "problem_statement")
    task = None
    for index, message in enumerate(history):
        if message.get("role") == "assistant":
            break
        if message.get("role") == "user":
            task = _history_text(message, f"history[{index}]")
    if task is None or not task.strip():
        raise _RowError("no task: give problem_statement, or history with a user message before the first step")
    return system, task


def _history_text(message: dict, where: str) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text"}]
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return _expect(content, str, f"{where}.content")


def _swe_agent_model(row: dict) -> str | None:
    config = row.get("replay_config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError:
            return None
    model = config.get("agent", {}).get("model", {}) if isinstance(config, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name else None


def parse_swe_agent_line(row: dict) -> Conversation:
    steps = _expect(_require(row, "trajectory"), list, "trajectory")
    if not steps:
        raise _RowError("trajectory has no steps")
    system, task = _swe_agent_task(row)
    continuation: list[dict] = []
    for index, step in enumerate(steps):
        where = f"trajectory[{index}]"
        _expect(step, dict, where)
        action = _expect(_require(step, "action", f" in {where}"), str, f"{where}.action")
        thought = step.get("thought")
        thought = _expect(thought, str, f"{where}.thought") if thought is not None else ""
        observation = step.get("observation")
        observation = _expect(observation, str, f"{where}.observation") if observation is not None else ""
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if thought.strip():
            message["reasoning"] = thought
        if action.strip():
            call_id = f"step_{index}"
            message["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": action.split()[0][:200], "arguments": {"command": action}}}]  # fmt: skip
            continuation += [message, {"role": "tool", "tool_call_id": call_id, "content": observation}]
        else:  # a step without an action (a format error the agent was told about): its thought is the content
            continuation.append({"role": "assistant", "content": thought or step.get("response") or "(no action)"})
    info = row.get("info")
    info = _expect(info, dict, "info") if info is not None else {}
    exit_status = info.get("exit_status")
    submission = info.get("submission")
    outcome = f"Exit status: {exit_status if isinstance(exit_status, str) and exit_status else 'unknown'}"
    if isinstance(submission, str) and submission.strip():
        outcome += "\n\nSubmitted patch:\n\n```diff\n" + submission.strip("\n") + "\n```"
    continuation.append({"role": "assistant", "content": outcome})
    messages = check_messages([*system, {"role": "user", "content": task}, *continuation], "trajectory")
    history, checked = messages[: len(system) + 1], messages[len(system) + 1 :]
    metadata = {key: row[key] for key in SWE_AGENT_METADATA if isinstance(row.get(key), str)}
    if isinstance(exit_status, str):
        metadata["exit_status"] = exit_status
    metadata["steps"] = len(steps)
    return Conversation(history, checked, None, _swe_agent_model(row), metadata)


CONVERSATION_PARSERS: dict[str, Callable[[dict], Conversation]] = {
    "openai-chat": parse_openai_chat_line,
    "hf-messages": parse_hf_messages_line,
    "sharegpt": parse_sharegpt_line,
    "swe-agent": parse_swe_agent_line,
}


def _parse_conversations(lines: Iterable[bytes], parse_line: Callable[[dict], Conversation],
                         errors: _Errors) -> Iterator[ImportRecord]:  # fmt: skip
    groups: dict[str, list[tuple[int, Conversation]]] = {}
    for line_no, row in _json_lines(lines, errors):
        try:
            conversation = parse_line(row)
        except (_RowError, MessageError) as exc:
            errors.add(line_no, str(exc))
            continue
        key = json.dumps([conversation.history, conversation.tools], sort_keys=True, ensure_ascii=False)
        groups.setdefault(key, []).append((line_no, conversation))
    while groups:
        group = groups.pop(next(iter(groups)))  # file order; each group let go once yielded
        first_line, first = group[0]
        line_numbers = [line for line, _ in group]
        if len(group) < 2:
            errors.add(first_line, "the only continuation of its history: a comparison needs two or more lines with "
                       "the same messages up to the last user message (and the same tools)")  # fmt: skip
            continue
        completions = [
            _completion(c.continuation[-1]["content"], c.model,
                        {**c.metadata, **({} if is_plain(c.continuation) and len(c.continuation) == 1
                                          else {CONTINUATION_KEY: c.continuation}), "line": line})
            for line, c in group
        ]  # fmt: skip
        metadata = {"lines": line_numbers, **({"tools": first.tools} if first.tools else {})}
        record = ImportRecord(first_line, None, first.history, completions, None, metadata)
        try:
            _check_record(record)
        except _RowError as exc:
            errors.add(first_line, f"{exc} (lines {', '.join(map(str, line_numbers))})")
            continue
        yield record
