"""Battle tallies (`battle_tally` rows): the model leaderboard's sufficient statistics, kept current as judgments
are written or excluded, so the leaderboard reads a few hundred rows instead of every judgment.

One row per (project, rater, source, model a, model b, outcome) with its count, for the judgments the
leaderboard counts (app.judgments.selections: LEADERBOARD sources, a rater, neither voided nor excluded). Battles
are those of `app.quality.service.battle_rows`: a two-option comparison gives one battle between the models of its
first and second stored completion (outcome from the judgment's top completion; no single top: a tie); a ranking
of three or more options gives one battle per pair of its completions in completion-id order; completions without
a model, or two of the same model, are no battle.

Writers, all in the transaction that writes the judgment or its review:
- the rating submit's bulk INSERT calls `add_judgment` itself (the rating loop's one extra statement);
- every judgment the ORM inserts (a battle vote, judges, imports, tests' builders) is counted by a mapper event
  here, a `flag_review` row with resolution `excluded` takes its judgment out, and setting `voided_at` too;
- `rebuild` recomputes the rows from the judgments in SQL (the migration's backfill; benchmarks that seed
  judgments with raw SQL).
Registered on import of app.judgments (its package init imports this module).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import event, inspect, select, text
from sqlalchemy.orm import Session

from app.judgments.selections import EXCLUDED_RESOLUTION, LEADERBOARD
from app.models import Comparison, Completion, FlagReview, Judgment

WIN, TIE, LOSS = 2, 1, 0
"""Outcome codes for model a (the leaderboard's outcome times two)."""

_UPSERT_TAIL = ("ON CONFLICT (project_id, rater_id, source, model_a, model_b, outcome) "
                "DO UPDATE SET n = battle_tally.n + excluded.n")  # fmt: skip
_UPSERT_PAIR = text(
    "INSERT INTO battle_tally (project_id, rater_id, source, model_a, model_b, outcome, n) "
    "SELECT CAST(:project AS INTEGER), CAST(:rater AS INTEGER), CAST(:source AS VARCHAR(16)), a.model_name, "
    "b.model_name, CASE WHEN a.id = CAST(:top AS BIGINT) THEN 2 WHEN b.id = CAST(:top AS BIGINT) THEN 0 ELSE 1 END, "
    "CAST(:delta AS INTEGER) FROM completion a, completion b WHERE a.id = :first AND b.id = :second "
    "AND a.model_name IS NOT NULL AND b.model_name IS NOT NULL AND a.model_name <> b.model_name " + _UPSERT_TAIL)
"""A two-option judgment's one battle: one statement, no read first (the rating loop's path)."""
_UPSERT_CELL = text(
    "INSERT INTO battle_tally (project_id, rater_id, source, model_a, model_b, outcome, n) "
    "VALUES (:project, :rater, :source, :model_a, :model_b, :outcome, :delta) " + _UPSERT_TAIL)


def counts(source: str, rater_id: int | None, voided: bool) -> bool:
    """Whether a judgment with these properties is on the leaderboard (before any review excludes it)."""
    return source in LEADERBOARD and rater_id is not None and not voided


def _change(db, project_id: int, rater_id: int, source: str, completion_ids: Sequence[int],
            ranking: Sequence[Sequence[int]], delta: int) -> None:  # fmt: skip
    if len(completion_ids) < 2:
        return
    if len(completion_ids) == 2:
        top = ranking[0][0] if len(ranking[0]) == 1 else None
        db.execute(_UPSERT_PAIR, {"project": project_id, "rater": rater_id, "source": source, "top": top,
                                  "first": completion_ids[0], "second": completion_ids[1], "delta": delta})  # fmt: skip
        return
    models = dict(db.execute(select(Completion.id, Completion.model_name)
                             .where(Completion.id.in_(list(completion_ids)))).all())  # fmt: skip
    group = {completion: g for g, members in enumerate(ranking) for completion in members}
    ids = sorted(group)
    cells: Counter = Counter()
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            model_a, model_b = models.get(a), models.get(b)
            if model_a is None or model_b is None or model_a == model_b:
                continue
            outcome = WIN if group[a] < group[b] else TIE if group[a] == group[b] else LOSS
            cells[(model_a, model_b, outcome)] += 1
    if cells:
        db.execute(_UPSERT_CELL, [{"project": project_id, "rater": rater_id, "source": source, "model_a": a,
                                   "model_b": b, "outcome": outcome, "delta": n * delta}
                                  for (a, b, outcome), n in sorted(cells.items())])  # fmt: skip


def add_judgment(db, *, project_id: int, rater_id: int | None, source: str, completion_ids: Sequence[int],
                 ranking: Sequence[Sequence[int]], voided: bool = False) -> None:  # fmt: skip
    """Count a new judgment's battles (nothing when the leaderboard does not count it)."""
    if counts(source, rater_id, voided):
        _change(db, project_id, rater_id, source, completion_ids, ranking, +1)


def remove_judgment(db, judgment, completion_ids: Sequence[int]) -> None:
    """Take a counted judgment's battles out (it was excluded or voided); call it once, when it stops counting."""
    if counts(judgment.source, judgment.rater_id, False):
        _change(db, judgment.project_id, judgment.rater_id, judgment.source, completion_ids, judgment.ranking, -1)


def _completion_ids(connection, comparison_id: int) -> list[int]:
    return connection.execute(select(Comparison.completion_ids).where(Comparison.id == comparison_id)).scalar_one()


@event.listens_for(Judgment, "after_insert")
def _judgment_inserted(mapper, connection, judgment: Judgment) -> None:
    if counts(judgment.source, judgment.rater_id, judgment.voided_at is not None):
        _change(connection, judgment.project_id, judgment.rater_id, judgment.source,
                _completion_ids(connection, judgment.comparison_id), judgment.ranking, +1)  # fmt: skip


@event.listens_for(Judgment, "after_update")
def _judgment_updated(mapper, connection, judgment: Judgment) -> None:
    """Voiding a judgment (voided_at set) takes it out once; nothing else about a judgment changes its battles."""
    history = inspect(judgment).attrs.voided_at.history
    before = history.deleted[0] if history.deleted else None
    if history.added and before is None and judgment.voided_at is not None:
        excluded = connection.execute(select(FlagReview.id).where(FlagReview.judgment_id == judgment.id,
                                                                  FlagReview.resolution == EXCLUDED_RESOLUTION)).first()  # fmt: skip
        if excluded is None:
            remove_judgment(connection, judgment, _completion_ids(connection, judgment.comparison_id))


@event.listens_for(FlagReview, "after_insert")
def _review_inserted(mapper, connection, review: FlagReview) -> None:
    """An `excluded` review takes its (not voided) judgment out; a judgment has one review at most."""
    if review.resolution != EXCLUDED_RESOLUTION:
        return
    row = connection.execute(select(Judgment.project_id, Judgment.rater_id, Judgment.source, Judgment.ranking,
                                    Judgment.voided_at, Comparison.completion_ids)
                             .join(Comparison, Comparison.id == Judgment.comparison_id)
                             .where(Judgment.id == review.judgment_id)).first()  # fmt: skip
    if row is not None and counts(row.source, row.rater_id, row.voided_at is not None):
        _change(connection, row.project_id, row.rater_id, row.source, row.completion_ids, row.ranking, -1)


def tally_rows(db: Session, project_id: int, sources: Sequence[str] = LEADERBOARD,
               raters: Sequence[int] | None = None) -> list[tuple[str, str, int, int, int]]:  # fmt: skip
    """(model a, model b, outcome code, count, rater) for the project's positive tallies of these sources, and
    given, of these raters only."""
    quoted = ", ".join(f"'{s}'" for s in sources if s in LEADERBOARD)
    if not quoted:
        return []
    rows = db.execute(text("SELECT model_a, model_b, outcome, n, rater_id FROM battle_tally "
                           f"WHERE project_id = :project AND source IN ({quoted}) AND n > 0 "
                           "ORDER BY model_a, model_b, outcome, rater_id"), {"project": project_id}).all()  # fmt: skip
    if raters is not None:
        keep = set(raters)
        rows = [row for row in rows if row[4] in keep]
    return [tuple(row) for row in rows]


def _rebuild_sql(dialect: str, project_filter: str) -> str:
    if dialect == "postgresql":
        first, second = "(c.completion_ids->>0)::bigint", "(c.completion_ids->>1)::bigint"
        length = "jsonb_array_length(c.completion_ids)"
        elements = ("CROSS JOIN LATERAL jsonb_array_elements(j.ranking) WITH ORDINALITY AS g(members, idx) "
                    "CROSS JOIN LATERAL jsonb_array_elements_text(g.members) AS m(value)")  # fmt: skip
        grp, member = "g.idx - 1", "(m.value)::bigint"
    else:
        first, second = "json_extract(c.completion_ids, '$[0]')", "json_extract(c.completion_ids, '$[1]')"
        length = "json_array_length(c.completion_ids)"
        elements = ", json_each(j.ranking) g, json_each(g.value) m"
        grp, member = "CAST(g.key AS INTEGER)", "CAST(m.value AS INTEGER)"
    sources = ", ".join(f"'{s}'" for s in LEADERBOARD)
    counted = (f"j.source IN ({sources}) AND j.rater_id IS NOT NULL AND j.voided_at IS NULL "
               f"AND NOT EXISTS (SELECT 1 FROM flag_review f WHERE f.judgment_id = j.id "
               f"AND f.resolution = '{EXCLUDED_RESOLUTION}'){project_filter}")  # fmt: skip
    return f"""
        WITH e AS (
            SELECT j.id AS judgment_id, j.project_id, j.rater_id, j.source, {grp} AS grp, {member} AS completion_id
            FROM judgment j JOIN comparison c ON c.id = j.comparison_id AND {length} > 2 {elements}
            WHERE {counted}
        )
        INSERT INTO battle_tally (project_id, rater_id, source, model_a, model_b, outcome, n)
        SELECT project_id, rater_id, source, model_a, model_b, outcome, SUM(n) FROM (
            SELECT j.project_id, j.rater_id, j.source, a.model_name AS model_a, b.model_name AS model_b,
                   CASE WHEN j.top_completion_id = a.id THEN 2 WHEN j.top_completion_id = b.id THEN 0 ELSE 1 END
                   AS outcome, COUNT(*) AS n
            FROM judgment j JOIN comparison c ON c.id = j.comparison_id AND {length} = 2
            JOIN completion a ON a.id = {first} JOIN completion b ON b.id = {second}
            WHERE {counted} AND a.model_name IS NOT NULL AND b.model_name IS NOT NULL AND a.model_name <> b.model_name
            GROUP BY j.project_id, j.rater_id, j.source, a.model_name, b.model_name, 6
            UNION ALL
            SELECT x.project_id, x.rater_id, x.source, ca.model_name, cb.model_name,
                   CASE WHEN x.grp < y.grp THEN 2 WHEN x.grp = y.grp THEN 1 ELSE 0 END, COUNT(*)
            FROM e x JOIN e y ON x.judgment_id = y.judgment_id AND x.completion_id < y.completion_id
            JOIN completion ca ON ca.id = x.completion_id JOIN completion cb ON cb.id = y.completion_id
            WHERE ca.model_name IS NOT NULL AND cb.model_name IS NOT NULL AND ca.model_name <> cb.model_name
            GROUP BY x.project_id, x.rater_id, x.source, ca.model_name, cb.model_name, 6
        ) t GROUP BY project_id, rater_id, source, model_a, model_b, outcome"""


def rebuild(connection, project_id: int | None = None) -> None:
    """Recompute the tallies (of one project, or all) from the judgments, in SQL. `connection`: a Session or a
    Connection (the migration's backfill)."""
    dialect = connection.get_bind().dialect.name if isinstance(connection, Session) else connection.dialect.name
    params = {} if project_id is None else {"project": project_id}
    where = "" if project_id is None else " WHERE project_id = :project"
    connection.execute(text("DELETE FROM battle_tally" + where), params)
    connection.execute(text(_rebuild_sql(dialect, "" if project_id is None else " AND j.project_id = :project")),
                       params)  # fmt: skip
