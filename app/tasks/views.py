"""What a rater is shown for an assignment: the prompt and the options in the stored display order.

Model names never leave this module: options carry only the completion id and its text.
"""

from __future__ import annotations

import re

from markupsafe import Markup
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.models import Assignment, Completion, Prompt
from app.web import render_markdown

LABELS = "ABCDEFGHI"
CLIP_CHARS = 20_000
"""Texts longer than this show their beginning and a "show all" that fetches the rest as plain text: a 1 MiB
completion of one character rendered whole kept Chromium from ever finishing the page."""


LONG_WORD = re.compile(r"\S{1000,}")
"""A run this long with no space is shown as plain monospace text (see .plain-text in static/app.css: Chromium
lays such a run out in quadratic time in the proportional font)."""


def clipped_markdown(text: str, limit: int = CLIP_CHARS) -> dict:
    """{html, clipped, length, shown}: the text as sanitized markdown, or only its first `limit` characters (cut
    at a line end when one is in the second half) when it is longer; plain text when it has a very long word."""
    head = text
    if len(text) > limit:
        head = text[:limit]
        line_end = head.rfind("\n", limit // 2)
        if line_end > 0:
            head = head[:line_end]
    if LONG_WORD.search(head):
        html = Markup('<pre class="plain-text">') + head + Markup("</pre>")  # escaped by Markup's +
    else:
        html = render_markdown(head)
    return {"html": html, "clipped": len(head) < len(text), "length": len(text), "shown": len(head)}


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
