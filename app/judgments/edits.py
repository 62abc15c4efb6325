"""Edits: a rater's rewrite of the response they ranked best (or, where the project allows it, an answer written
from scratch), stored as a new completion of the prompt (`source: human_edit`). An edit implies edit > parent and
edit > everything the parent beat in its author's ranking (a new answer: edit > every option); the exports derive
those pairs (app.datasets.formats). Never commits."""

from __future__ import annotations

import difflib

from markupsafe import Markup
from pydantic import Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from app.audit import audit
from app.errors import NotFound, Unprocessable
from app.limits import Id, Input
from app.models import Comparison, Completion, Judgment, Project, Prompt, User, utcnow

EDIT_MAX_CHARS = 100_000
"""The longest edit accepted (Completion.text is unbounded text; an edit is bounded like a long completion)."""


class EditIn(Input):
    text: str = Field(min_length=1, max_length=EDIT_MAX_CHARS, description="The rewritten (or new) answer.")
    parent_id: Id | None = Field(default=None, description="The option rewritten (one ranked best); None: a new "
                                 "answer written from scratch, where the project allows it.")  # fmt: skip

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.replace("\r\n", "\n")
        if not value.strip():
            raise ValueError("the edit is empty")
        return value


def add_edit(db, judgment: Judgment, comparison: Comparison, project: Project, rater: User,
             edit: EditIn) -> Completion:  # fmt: skip
    """The edit as a completion of the comparison's prompt, linked to its parent, author and judgment."""
    if edit.parent_id is None:
        if not project.allow_new_answers:
            raise Unprocessable("This project takes rewrites of the best response only, not new answers.")
    else:
        if edit.parent_id not in comparison.completion_ids:
            raise Unprocessable(f"Option {edit.parent_id} is not in this comparison.")
        if edit.parent_id not in judgment.ranking[0]:
            raise Unprocessable("Only a response you ranked best can be rewritten.")
        parent_text = db.get(Completion, edit.parent_id).text
        if parent_text.strip() == edit.text.strip():
            raise Unprocessable("The edit is the same as the response: change it, or clear it to submit without one.")
    completion = Completion(prompt_id=comparison.prompt_id, text=edit.text, model_name=None, params={}, meta={},
                            source="human_edit", parent_id=edit.parent_id, author_id=rater.id,
                            judgment_id=judgment.id, guideline_version=project.guideline_version)  # fmt: skip
    db.add(completion)
    db.flush()
    return completion


# ---- admin review -----------------------------------------------------------------------------------------------


def diff_html(before: str, after: str, *, max_lines: int = 4000) -> Markup:
    """A line diff of `before` and `after` as escaped HTML (<del>/<ins> lines); untrusted text stays text."""
    a, b = before.splitlines(), after.splitlines()
    if len(a) + len(b) > max_lines:
        return Markup('<p class="muted">Too long to show line by line.</p>')
    out = [Markup('<pre class="edit-diff-lines">')]
    for line in difflib.unified_diff(a, b, "response", "edit", n=2, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        tag = "ins" if line.startswith("+") else "del" if line.startswith("-") else "span"
        css = "diff-hunk" if line.startswith("@@") else "diff-line"
        out.append(Markup('<{0} class="{1}">').format(Markup(tag), Markup(css)) + line + Markup("\n</{0}>").format(Markup(tag)))
    out.append(Markup("</pre>"))
    return Markup("").join(out)


def list_edits(db, project: Project, *, rejected: bool | None = None, limit: int = 200) -> list[dict]:
    """The project's edits, newest first, each with its author, parent and diff against the parent."""
    parent = aliased(Completion)
    query = (
        select(Completion, User.username, parent.text)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .outerjoin(User, User.id == Completion.author_id)
        .outerjoin(parent, parent.id == Completion.parent_id)
        .where(Prompt.project_id == project.id, Completion.source == "human_edit")
        .order_by(Completion.id.desc())
        .limit(limit)
    )
    if rejected is not None:
        query = query.where(Completion.rejected_at.is_not(None) if rejected else Completion.rejected_at.is_(None))
    return [{"id": edit.id, "author": author, "parent_id": edit.parent_id, "created_at": edit.created_at,
             "rejected_at": edit.rejected_at, "text": edit.text, "prompt_id": edit.prompt_id,
             "diff": diff_html(parent_text or "", edit.text)}
            for edit, author, parent_text in db.execute(query)]  # fmt: skip


def edit_counts(db, project: Project) -> list[dict]:
    """Per rater: edits written, and how many of them were rejected."""
    rows = db.execute(
        select(User.username, func.count(Completion.id), func.count(Completion.rejected_at))
        .join(Completion, Completion.author_id == User.id)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(Prompt.project_id == project.id, Completion.source == "human_edit")
        .group_by(User.username).order_by(User.username)
    ).all()  # fmt: skip
    return [{"username": name, "edits": total, "rejected": rejected} for name, total, rejected in rows]


def set_rejected(db, project: Project, completion_id: int, rejected: bool, actor: User | None) -> Completion:
    """Reject an edit (it leaves every export) or accept it again."""
    edit = db.get(Completion, completion_id)
    prompt = db.get(Prompt, edit.prompt_id) if edit is not None else None
    if edit is None or edit.source != "human_edit" or prompt is None or prompt.project_id != project.id:
        raise NotFound(f"No edit {completion_id} in this project.")
    edit.rejected_at = utcnow() if rejected else None
    edit.rejected_by_id = actor.id if (rejected and actor) else None
    audit(db, actor, "edit.reject" if rejected else "edit.accept", "completion", edit.id)
    return edit
