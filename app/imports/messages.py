"""The one shape of a chat message in Rankforge, checked in one place (imports, exports and the API read it here).

A message is ``{"role", "content"}`` plus, only where they apply:

- ``tool_calls`` (assistant): ``[{"id", "type": "function", "function": {"name", "arguments"}}]``; ``arguments`` is a
  JSON object, stored parsed (OpenAI files carry it as a JSON string, chat templates in transformers take a dict).
- ``tool_call_id`` (tool): the id of the call this message is the result of; ``name`` (tool, optional): the tool.
- ``reasoning`` (assistant): the model's thinking, kept apart from the answer in ``content``.

A conversation's history is the prompt's messages; a continuation (one option of a comparison at a turn) is the
assistant's messages after the last user turn: maybe tool calls, their results, then the answer. Its final answer's
``content`` is the completion's text; the whole continuation is kept in the completion's metadata under
`CONTINUATION_KEY` when it is more than one plain assistant message.
"""

from __future__ import annotations

import json
from typing import Any

from app.limits import find_bad_character

ROLES = ("system", "user", "assistant", "tool")
CONTINUATION_KEY = "messages"
"""The completion metadata key holding a continuation's messages (only when it is more than plain text)."""
MAX_CONTENT_CHARS = 200_000
"""Longest content or reasoning of one message: a long tool result fits; a runaway log does not."""
MAX_TOOL_CALLS = 64
MAX_NAME_CHARS = 200
MAX_ARGUMENTS_CHARS = 50_000
MAX_MESSAGES = 1_000

Message = dict[str, Any]


class MessageError(ValueError):
    """A message that does not have the shape above; the text says where and why."""


def _type_name(value: Any) -> str:
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _string(value: Any, what: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise MessageError(f"{what} must be a string, got {_type_name(value)}")
    if len(value) > limit:
        raise MessageError(f"{what} is {len(value):,} characters long; the limit is {limit:,}")
    if not empty and not value.strip():
        raise MessageError(f"{what} must not be empty")
    return value


def check_tool_call(value: Any, where: str) -> Message:
    if not isinstance(value, dict):
        raise MessageError(f"{where} must be an object, got {_type_name(value)}")
    function = value.get(
        "function", value
    )  # OpenAI nests name/arguments under "function"; some exports do not
    if not isinstance(function, dict):
        raise MessageError(f"{where}.function must be an object, got {_type_name(function)}")
    name = _string(function.get("name"), f"{where}.function.name", MAX_NAME_CHARS, empty=False)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        if len(arguments) > MAX_ARGUMENTS_CHARS:
            raise MessageError(f"{where}.function.arguments is {len(arguments):,} characters; the limit is "
                               f"{MAX_ARGUMENTS_CHARS:,}")  # fmt: skip
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise MessageError(
                f"{where}.function.arguments is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
    if not isinstance(arguments, dict):
        raise MessageError(f"{where}.function.arguments must be a JSON object, got {_type_name(arguments)}")
    if len(json.dumps(arguments, ensure_ascii=False)) > MAX_ARGUMENTS_CHARS:
        raise MessageError(f"{where}.function.arguments is longer than {MAX_ARGUMENTS_CHARS:,} characters")
    call_id = value.get("id")
    call: Message = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call = {"id": _string(call_id, f"{where}.id", MAX_NAME_CHARS, empty=False), **call}
    return call


def check_message(value: Any, where: str) -> Message:
    """One message in the shape above (normalised: tool-call arguments parsed, null optional fields dropped)."""
    if not isinstance(value, dict):
        raise MessageError(f"{where} must be an object, got {_type_name(value)}")
    role = value.get("role")
    if role not in ROLES:
        shown = repr(role) if isinstance(role, str) else _type_name(role)
        raise MessageError(f"{where}.role is {shown}; expected one of {', '.join(ROLES)}")
    allowed = {"role", "content", "name"} | {
        "assistant": {"tool_calls", "reasoning"},
        "tool": {"tool_call_id"},
    }.get(role, set())
    unknown = sorted(key for key in set(value) - allowed if value[key] is not None)
    if unknown:
        raise MessageError(f"{where} ({role}) has unknown field(s) {', '.join(unknown)} "
                           f"(allowed: {', '.join(sorted(allowed))})")  # fmt: skip
    tool_calls = [
        check_tool_call(call, f"{where}.tool_calls[{i}]")
        for i, call in enumerate(_list(value, "tool_calls", where))
    ]
    if len(tool_calls) > MAX_TOOL_CALLS:
        raise MessageError(f"{where} has {len(tool_calls)} tool calls; the limit is {MAX_TOOL_CALLS}")
    content = value.get("content")
    if content is None and tool_calls:
        content = ""  # an assistant message that only calls tools
    content = _string(content, f"{where}.content", MAX_CONTENT_CHARS)
    message: Message = {"role": role, "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if value.get("reasoning") is not None:
        message["reasoning"] = _string(value["reasoning"], f"{where}.reasoning", MAX_CONTENT_CHARS)
    if role == "tool":
        message["tool_call_id"] = _string(value.get("tool_call_id"), f"{where}.tool_call_id", MAX_NAME_CHARS,
                                          empty=False)  # fmt: skip
    if value.get("name") is not None:
        message["name"] = _string(value["name"], f"{where}.name", MAX_NAME_CHARS, empty=False)
    problem = find_bad_character(message, where)
    if problem:
        raise MessageError(problem)
    return message


def _list(value: dict, key: str, where: str) -> list:
    items = value.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise MessageError(f"{where}.{key} must be an array, got {_type_name(items)}")
    return items


def check_messages(value: Any, what: str) -> list[Message]:
    """A non-empty list of messages; every tool result answers a tool call made earlier in the list."""
    if not isinstance(value, list):
        raise MessageError(f"{what} must be an array of messages, got {_type_name(value)}")
    if not value:
        raise MessageError(f"{what} must not be an empty list")
    if len(value) > MAX_MESSAGES:
        raise MessageError(f"{what} has {len(value):,} messages; the limit is {MAX_MESSAGES:,}")
    messages = [check_message(item, f"{what}[{index}]") for index, item in enumerate(value)]
    check_tool_results(messages, what)
    return messages


def check_tool_results(messages: list[Message], what: str, *, earlier: list[Message] = ()) -> None:
    """Each tool message's tool_call_id names a call made before it (in `earlier` or in `messages`)."""
    made = {call["id"] for message in earlier for call in message.get("tool_calls", ()) if "id" in call}
    for index, message in enumerate(messages):
        made.update(call["id"] for call in message.get("tool_calls", ()) if "id" in call)
        if message["role"] == "tool" and message["tool_call_id"] not in made:
            raise MessageError(
                f"{what}[{index}].tool_call_id {message['tool_call_id']!r} answers no earlier tool call"
            )


def is_plain(messages: list[Message]) -> bool:
    """Whether the messages carry nothing but role and content (a plain chat, as before tool calls)."""
    return all(set(message) <= {"role", "content"} for message in messages)


def split_continuation(messages: list[Message], what: str) -> tuple[list[Message], list[Message]]:
    """(history, continuation): the continuation is every message after the last user message, and must end with
    an assistant answer; the history is everything before it and must not be empty."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise MessageError(f"{what} has no user message")
    history, continuation = messages[: last_user + 1], messages[last_user + 1 :]
    if not continuation or continuation[-1]["role"] != "assistant":
        raise MessageError(f"{what} must end with an assistant message after the last user message")
    return history, continuation


def request_tools(tools) -> list[dict] | None:
    """A prompt's tools (its metadata.tools) as the request's `tools`: OpenAI's [{"type": "function", "function":
    {name, description?, parameters?}}]; a bare function (ShareGPT exports) is wrapped. None: no tools."""
    if not isinstance(tools, list) or not tools:
        return None
    return [tool if isinstance(tool.get("function"), dict) else {"type": "function", "function": tool}
            for tool in tools if isinstance(tool, dict)] or None  # fmt: skip
