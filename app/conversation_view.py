"""What templates/_conversation.html shows of a conversation: each message (app.imports.messages shape) as a view dict.

`message_views(messages, part_prefix)` -> one dict a message:

- ``role``, ``role_label`` ("User", "Assistant", "System", "Tool"), ``index`` (position in the list), ``part``
  (``f"{part_prefix}-{index}"``: the name "show all" asks the page's full-text route for; ``part + "-reasoning"`` for
  the reasoning);
- ``text``: `clipped_markdown` of the content (tool results: pretty-printed JSON as plain text when the result is
  JSON, cut at `RESULT_CLIP_CHARS`); ``empty``: the content is blank (an assistant turn that only calls tools);
- ``summary``: one line (at most `SUMMARY_CHARS`) for a collapsed turn;
- ``reasoning``: `clipped_markdown` of the reasoning, or None; ``tool_calls``: ``[{id, name, arguments (pretty JSON),
  short (one line)}]``; ``tool_name`` (tool results: the name of the call answered, looked up in earlier messages);
  ``step``: the agent step the message belongs to (an assistant message starts one, its tool results join it).

`steps(views)` groups a continuation's views into agent steps: an assistant message with the tool results that follow
it (reasoning, action, observation). `is_conversation(prompt_messages, continuations)` says whether a comparison is
shown the conversation way (earlier turns collapsed, tool calls), not as one prompt and plain answers.
All text stays untrusted: markdown goes through app.web.render_markdown, plain text through Markup escaping.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from app.imports.messages import CONTINUATION_KEY
from app.web import CLIP_CHARS, clipped_markdown

ROLE_LABELS = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
SUMMARY_CHARS = 110
RESULT_CLIP_CHARS = 1_500
"""A tool result longer than this shows its beginning and "show all": logs and search results are long."""
ARGUMENTS_CLIP_CHARS = 4_000


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _plain(text: str, limit: int) -> dict:
    """clipped_markdown's shape for text shown as-is (JSON, logs): escaped, in a <pre>."""
    head = text[:limit]
    html = Markup('<pre class="plain-text tool-text">') + head + Markup("</pre>")
    return {"html": html, "clipped": len(head) < len(text), "length": len(text), "shown": len(head)}


def pretty_result(content: str) -> str | None:
    """A tool result that is JSON (an object or an array), pretty-printed; None when it is not JSON."""
    stripped = content.strip()
    if stripped[:1] not in ("[", "{"):
        return None
    try:
        return _pretty_json(json.loads(stripped))
    except ValueError:
        return None


def _result_text(content: str) -> dict:
    pretty = pretty_result(content)
    if pretty is not None:
        return _plain(pretty, RESULT_CLIP_CHARS)
    stripped = content.strip()
    if "\n" in stripped and len(stripped) > 200:  # a log or a listing: keep its lines as they are
        return _plain(content, RESULT_CLIP_CHARS)
    return clipped_markdown(content, RESULT_CLIP_CHARS)


def _summary(message: dict, tool_name: str | None) -> str:
    content = str(message.get("content") or "")
    calls = message.get("tool_calls") or []
    if calls:
        called = ", ".join(f"{c['function']['name']}({one_line(json.dumps(c['function'].get('arguments', {}), ensure_ascii=False), 40)})"
                           for c in calls)  # fmt: skip
        return one_line(f"{content} → {called}" if content.strip() else f"calls {called}")
    if message.get("role") == "tool":
        return one_line(f"{tool_name or 'tool'} returned: {content}")
    if not content.strip() and message.get("reasoning"):
        return one_line(f"(reasoning) {message['reasoning']}")
    return one_line(content) or "(empty)"


def message_views(messages: list[dict], part_prefix: str) -> list[dict]:
    names: dict[str, str] = {}
    views: list[dict] = []
    step = -1
    for index, message in enumerate(messages):
        role = str(message.get("role", "user"))
        content = str(message.get("content") or "")
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            arguments = function.get("arguments", {})
            if call.get("id"):
                names[call["id"]] = function.get("name", "")
            pretty = _pretty_json(arguments)
            calls.append({"id": call.get("id"), "name": function.get("name", ""),
                          "arguments": pretty[:ARGUMENTS_CLIP_CHARS] + ("\n…" if len(pretty) > ARGUMENTS_CLIP_CHARS else ""),
                          "short": one_line(json.dumps(arguments, ensure_ascii=False), 60)})  # fmt: skip
        tool_name = (message.get("name") or names.get(message.get("tool_call_id", ""))) if role == "tool" else None
        reasoning = message.get("reasoning")
        if not (role == "tool" and views and views[-1]["role"] in ("assistant", "tool") and step >= 0):
            step += 1
        views.append({
            "role": role,
            "role_label": ROLE_LABELS.get(role, role),
            "index": index,
            "part": f"{part_prefix}-{index}",
            "text": _result_text(content) if role == "tool" else clipped_markdown(content, CLIP_CHARS),
            "empty": not content.strip(),
            "summary": _summary(message, tool_name),
            "reasoning": clipped_markdown(str(reasoning), CLIP_CHARS) if reasoning else None,
            "tool_calls": calls,
            "tool_name": tool_name,
            "step": step,
        })  # fmt: skip
    return views


def steps(views: list[dict]) -> list[list[dict]]:
    """Agent steps: each assistant message with the tool results after it; other messages stand alone."""
    grouped: list[list[dict]] = []
    for view in views:
        if view["role"] == "tool" and grouped and grouped[-1][0]["role"] == "assistant":
            grouped[-1].append(view)
        else:
            grouped.append([view])
    return grouped


def continuation_of(text: str, meta: dict | None) -> list[dict]:
    """A completion's messages: the stored continuation (tool calls, results, answer), or one assistant message."""
    stored = (meta or {}).get(CONTINUATION_KEY)
    if isinstance(stored, list) and stored:
        return stored
    return [{"role": "assistant", "content": text}]


def is_conversation(prompt_messages: list[dict], continuations: list[list[dict]]) -> bool:
    """More than one turn before the answers, or answers that are more than one plain assistant message."""
    turns = [m for m in prompt_messages if m.get("role") != "system"]
    return len(turns) > 1 or any(len(c) > 1 or set(c[0]) - {"role", "content"} for c in continuations if c)


def last_user_index(messages: list[dict]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
