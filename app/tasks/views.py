"""What a rater is shown for an assignment: the prompt and the options in the stored display order.

Model names never leave this module: options carry only the completion id and its text.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Assignment, Completion, Prompt
from app.web import render_markdown

LABELS = "ABCDEFGHI"


def _load(db: Session, assignment: Assignment) -> tuple[Prompt, list[Completion]]:
    """The prompt and the completions in display order, in one query (the completions name their prompt)."""
    rows = db.execute(
        select(Completion, Prompt)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(Completion.id.in_(assignment.display_order))
    ).all()
    by_id = {completion.id: completion for completion, _ in rows}
    return rows[0][1], [by_id[i] for i in assignment.display_order]


def prompt_value(prompt: Prompt) -> str | list[dict]:
    return prompt.messages if prompt.is_chat else prompt.messages[0]["content"]


def task_json(db: Session, assignment: Assignment) -> dict:
    prompt, completions = _load(db, assignment)
    return {
        "assignment_id": assignment.id,
        "comparison_id": assignment.comparison_id,
        "prompt": prompt_value(prompt),
        "options": [{"id": c.id, "label": LABELS[i], "text": c.text} for i, c in enumerate(completions)],
        "expires_at": assignment.expires_at.isoformat(),
    }


def task_html_context(db: Session, assignment: Assignment) -> dict:
    prompt, completions = _load(db, assignment)
    return {
        "assignment_id": assignment.id,
        "comparison_id": assignment.comparison_id,
        "expires_at": assignment.expires_at.isoformat(),
        "prompt_messages": [
            {"role": m.get("role", "user"), "html": render_markdown(str(m.get("content", "")))} for m in prompt.messages
        ],
        "options": [{"id": c.id, "label": LABELS[i], "html": render_markdown(c.text)} for i, c in enumerate(completions)],
    }
