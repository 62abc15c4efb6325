"""What a rater is shown for an assignment: the prompt and the options in the stored display order.

Model names never leave this module: options carry only the completion id and its text.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.conversation_view import continuation_of, is_conversation, message_views, pretty_result
from app.models import Assignment, Completion, Prompt
from app.web import CLIP_CHARS, LABELS, clipped_markdown  # noqa: F401 - CLIP_CHARS: read by callers

TRAJECTORY_STEPS = 2
"""A continuation with this many tool-calling assistant turns is shown as numbered agent steps."""


def _load(db: Session, assignment: Assignment) -> tuple[Prompt, list[Completion]]:
    """The prompt and the completions in display order, in one query (the completions name their prompt)."""
    rows = db.execute(
        select(Completion, Prompt)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(Completion.id.in_(assignment.display_order))
    ).all()
    by_id = {completion.id: completion for completion, _ in rows}
    return rows[0][1], [by_id[i] for i in assignment.display_order]


_completion, _prompt = Completion.__table__, Prompt.__table__
_TASK_TEXTS = (
    select(_completion.c.id, _completion.c.text, _prompt.c.messages, _prompt.c.is_chat)
    .join(_prompt, _prompt.c.id == _completion.c.prompt_id)
    .where(_completion.c.id.in_(bindparam("ids", expanding=True)))
)
"""task_json's read, built once (it runs on every next-task): only the columns the answer shows."""


def task_json(db: Session, assignment: Assignment) -> dict:
    rows = db.execute(_TASK_TEXTS, {"ids": list(assignment.display_order)}).all()
    texts = {row.id: row.text for row in rows}
    messages, is_chat = rows[0].messages, rows[0].is_chat
    return {
        "assignment_id": assignment.id,
        "comparison_id": assignment.comparison_id,
        "prompt": messages if is_chat else messages[0]["content"],
        "options": [{"id": c, "label": LABELS[i], "text": texts[c]} for i, c in enumerate(assignment.display_order)],
        "expires_at": assignment.expires_at.isoformat(),
    }


def task_html_context(db: Session, assignment: Assignment) -> dict:
    prompt, completions = _load(db, assignment)
    continuations = {c.id: continuation_of(c.text, c.meta) for c in completions}
    conversation = is_conversation(prompt.messages, list(continuations.values()))
    context = {
        "assignment_id": assignment.id,
        "comparison_id": assignment.comparison_id,
        "expires_at": assignment.expires_at.isoformat(),
        "prompt_messages": [
            {"role": m.get("role", "user"), "part": f"prompt-{i}"} | clipped_markdown(str(m.get("content", "")))
            for i, m in enumerate(prompt.messages)
        ],
        "options": [{"id": c.id, "label": LABELS[i], "part": f"option-{c.id}"} | clipped_markdown(c.text)
                    for i, c in enumerate(completions)],  # fmt: skip
        "conversation": conversation,
    }
    if conversation:  # templates/_conversation.html: earlier turns collapsed, tool calls, reasoning
        context["history"] = message_views(prompt.messages, "prompt")
        for option in context["options"]:
            option["messages"] = message_views(continuations[option["id"]], f"option-{option['id']}")
        # Whole agent runs (several tool-calling steps) show as numbered steps.
        context["trajectory"] = any(sum(1 for m in c if m.get("tool_calls")) >= TRAJECTORY_STEPS
                                    for c in continuations.values())  # fmt: skip
    return context


def full_text(db: Session, assignment: Assignment, part: str) -> str | None:
    """The whole text behind a clipped `part` of this assignment: "prompt-<index>", "option-<completion id>", and in
    a conversation "option-<completion id>-<message index>"; "-reasoning" at the end names a message's reasoning."""
    part, reasoning = (part.removesuffix("-reasoning"), True) if part.endswith("-reasoning") else (part, False)
    kind, _, rest = part.partition("-")
    numbers = rest.split("-")
    if not all(n.isascii() and n.isdigit() for n in numbers) or len(numbers) > 2:
        return None
    prompt, completions = _load(db, assignment)
    key = "reasoning" if reasoning else "content"
    if kind == "prompt" and len(numbers) == 1 and int(numbers[0]) < len(prompt.messages):
        return _shown(prompt.messages[int(numbers[0])], key)
    if kind == "option":
        completion = next((c for c in completions if c.id == int(numbers[0])), None)
        if completion is None:
            return None
        if len(numbers) == 1:
            return None if reasoning else completion.text
        messages = continuation_of(completion.text, completion.meta)
        return _shown(messages[int(numbers[1])], key) if int(numbers[1]) < len(messages) else None
    return None


def _shown(message: dict, key: str) -> str:
    """A message's whole content (or reasoning) as "show all" shows it: a tool result that is JSON pretty-printed,
    as in its clipped view."""
    text = str(message.get(key) or "")
    if message.get("role") == "tool" and key == "content":
        return pretty_result(text) or text
    return text
