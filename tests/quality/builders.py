"""Builders for the quality tests: import comparisons through the API, then write judgments straight into the
database (the statistics read rows, however they were made)."""

from __future__ import annotations

import json

from sqlalchemy import select

from tests.helpers import import_lines


def import_battles(client, admin, project_id: int, pairs: list[tuple[str, ...]], *, texts=None, gold_rankings=None):
    """One comparison per tuple of model names (completion texts from `texts` or made up)."""
    lines = []
    for i, models in enumerate(pairs):
        row = {"prompt": f"Question {i}?", "external_id": f"q{i}",
               "completions": [{"text": (texts[i][k] if texts else f"answer by {m} to {i}"), "model": m}
                               for k, m in enumerate(models)]}  # fmt: skip
        if gold_rankings is not None:
            row["ranking"] = gold_rankings[i]
        lines.append(json.dumps(row))
    response = import_lines(client, admin, project_id, ("\n".join(lines) + "\n").encode(),
                            gold=gold_rankings is not None)  # fmt: skip
    assert response.status_code == 200, response.text


def comparisons(session, project_id: int):
    """(comparison, [(completion id, model name, text)] in completion_ids order), by comparison id."""
    from app.models import Comparison, Completion

    out = []
    for comparison in session.scalars(select(Comparison).where(Comparison.project_id == project_id)
                                      .order_by(Comparison.id)):  # fmt: skip
        rows = {c.id: c for c in session.scalars(select(Completion).where(Completion.id.in_(comparison.completion_ids)))}
        out.append((comparison, [(cid, rows[cid].model_name, rows[cid].text) for cid in comparison.completion_ids]))
    return out


def add_judgment(session, comparison, rater_id: int, ranking: list[list[int]], *, display_order=None,
                 time_spent_ms: int | None = 8000, flags=(), attributes=None, rationale=None):  # fmt: skip
    from app.models import Judgment

    top = ranking[0]
    order = display_order or list(comparison.completion_ids)
    comparison.n_judgments += 1
    judgment = Judgment(comparison_id=comparison.id, project_id=comparison.project_id, rater_id=rater_id,
                        ranking=ranking, attributes=attributes or {}, flags=list(flags), time_spent_ms=time_spent_ms,
                        source="human", top_completion_id=top[0] if len(top) == 1 else None,
                        chosen_position=order.index(top[0]) if len(top) == 1 else None, rationale=rationale)  # fmt: skip
    session.add(judgment)
    return judgment
