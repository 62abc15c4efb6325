"""What a rater is shown for an assignment: the prompt and the options in the stored display order.

Model names never leave this module: options carry only the completion id and its text.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.models import Assignment, Completion, Prompt
from app.web import CLIP_CHARS, LABELS, clipped_markdown  # noqa: F401 - CLIP_CHARS: read by callers


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
    return {
        "assignment_id": assignment.id,
        "comparison_id": assignment.comparison_id,
        "expires_at": assignment.expires_at.isoformat(),
        "prompt_messages": [
            {"role": m.get("role", "user"), "part": f"prompt-{i}"} | clipped_markdown(str(m.get("content", "")))
            for i, m in enumerate(prompt.messages)
        ],
        "options": [{"id": c.id, "label": LABELS[i], "part": f"option-{c.id}"} | clipped_markdown(c.text)
                    for i, c in enumerate(completions)],  # fmt: skip
    }


def full_text(db: Session, assignment: Assignment, part: str) -> str | None:
    """The whole text behind a clipped `part` of this assignment ("prompt-<index>" or "option-<completion id>")."""
    kind, _, index = part.partition("-")
    if not (index.isascii() and index.isdigit()):
        return None
    prompt, completions = _load(db, assignment)
    if kind == "prompt" and int(index) < len(prompt.messages):
        return str(prompt.messages[int(index)].get("content", ""))
    if kind == "option":
        return next((c.text for c in completions if c.id == int(index)), None)
    return None
