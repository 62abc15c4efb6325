"""What a decision is about, for the staff pages that list decisions (review queue, practice items, the comparison
page): the prompt and the answers of a comparison, with answer letters in stored order and rankings in letters.

Staff see model names here (raters never do: app.tasks.views shows them only ids and texts).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Comparison, Completion, Judgment, Project, Prompt, User
from app.web import CLIP_CHARS, LABELS, clipped_markdown, garbled

LONG_CHARS = 400
"""A text longer than this (or of more than 6 lines) starts collapsed: its first line is the summary."""
PREVIEW_LIMIT = 4_000
"""Lists show at most this much of each text (the comparison page shows up to app.web.CLIP_CHARS)."""

def _text(text: str, limit: int) -> dict:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    long = len(text) > LONG_CHARS or text.count("\n") > 6
    return clipped_markdown(text, limit) | {"long": long, "summary": first_line[:120], "chars": len(text),
                                            "garbled": garbled(text)}

def comparison_contents(db: Session, project: Project, comparison_ids: list[int],
                        limit: int = PREVIEW_LIMIT) -> dict[int, dict]:  # fmt: skip
    """{comparison id: {id, href, prompt: [{role, ...text}], answers: [{id, label, model, ...text}], letters}}
    for the comparisons of `project` among `comparison_ids`; letters maps completion id -> answer letter."""
    ids = sorted({int(i) for i in comparison_ids})
    if not ids:
        return {}
    comparisons = db.scalars(
        select(Comparison).where(Comparison.project_id == project.id, Comparison.id.in_(ids))
    ).all()
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.id.in_({c.prompt_id for c in comparisons})))}
    completion_ids = {cid for c in comparisons for cid in c.completion_ids}
    completions = {c.id: c for c in db.scalars(select(Completion).where(Completion.id.in_(completion_ids)))}
    contents = {}
    for comparison in comparisons:
        prompt = prompts[comparison.prompt_id]
        answers = [
            {"id": cid, "label": LABELS[i] if i < len(LABELS) else str(i + 1),
             "model": completions[cid].model_name or completions[cid].source} | _text(completions[cid].text, limit)
            for i, cid in enumerate(comparison.completion_ids) if cid in completions
        ]  # fmt: skip
        contents[comparison.id] = {
            "id": comparison.id,
            "href": f"/projects/{project.slug}/comparisons/{comparison.id}",
            "prompt": [{"role": m.get("role", "user")} | _text(str(m.get("content", "")), limit) for m in prompt.messages],
            "answers": answers,
            "letters": {a["id"]: a["label"] for a in answers},
        }
    return contents

def ranking_in_letters(ranking: list[list[int]] | None, letters: dict[int, str]) -> str:
    """[[212], [211, 213]] -> 'B > A = C' (ids not in the comparison keep their number)."""
    if not ranking:
        return "–"
    return " > ".join(" = ".join(letters.get(cid, f"#{cid}") for cid in group) for group in ranking)

def rankings_in_letters(db: Session, judgments: list[dict], contents: dict[int, dict]) -> dict[int, str]:
    """{judgment id: its ranking in answer letters} for rows with judgment_id and comparison_id (a review queue)."""
    ids = [row["judgment_id"] for row in judgments]
    if not ids:
        return {}
    rankings = dict(db.execute(select(Judgment.id, Judgment.ranking).where(Judgment.id.in_(ids))).all())
    return {row["judgment_id"]: ranking_in_letters(rankings.get(row["judgment_id"]),
                                                   contents.get(row["comparison_id"], {}).get("letters", {}))
            for row in judgments}  # fmt: skip


def comparison_page_data(db: Session, project: Project, comparison_id: int) -> dict:
    """The comparison page: its content, gold ranking and every judgment on it (rater, ranking, flags, rationale)."""
    comparison = db.get(Comparison, comparison_id)
    if comparison is None or comparison.project_id != project.id:
        raise NotFound(f"No comparison {comparison_id} in this project.")

    content = comparison_contents(db, project, [comparison_id], limit=CLIP_CHARS)[comparison_id]
    rows = db.execute(
        select(Judgment, User.username).outerjoin(User, User.id == Judgment.rater_id)
        .where(Judgment.comparison_id == comparison_id).order_by(Judgment.id)
    ).all()
    judgments = [{"id": j.id, "rater": name or "–", "source": j.source, "created_at": j.created_at,
                  "ranking": ranking_in_letters(j.ranking, content["letters"]), "flags": j.flags or [],
                  "rationale": j.rationale} for j, name in rows]  # fmt: skip
    return {"comparison": comparison, "content": content, "judgments": judgments,
            "gold": ranking_in_letters(comparison.gold_ranking, content["letters"]) if comparison.is_gold else None}  # fmt: skip
