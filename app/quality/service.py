"""Project figures for admins: queue state, agreement, per-rater quality, the model leaderboard, the dashboard
and the review queue of flagged judgments.

Data leaves SQL already aggregated or as flat numeric columns (JSON rankings and attribute scores are expanded
by the database: `jsonb_array_elements` on PostgreSQL, `json_each` on SQLite) and goes straight into numpy
arrays for the statistics in app.quality.stats; nothing loops over judgments in Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
from sqlalchemy import String, case, func, or_, select, text
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import read_ahead
from app.errors import Conflict, NotFound, Unprocessable
from app.groups import group_members
from app.judgments import tallies
from app.judgments.selections import HUMAN, LEADERBOARD, counted_sql
from app.models import REVIEW_RESOLUTIONS, Comparison, FlagReview, Judgment, Project, User, utcnow
from app.projects.service import project_overview
from app.quality import poststrat, stats, style
from app.quality.step_agreement import step_agreement_from_rows
from app.steps.service import counted_step_labels

TIE = -1
"""Code for "no single best option" in the nominal top-choice data (stats.TIE_CODE)."""
TOP_CHOICE_CODING = ("the winner's position in the comparison's stored option order (first, second, ...), a tie "
                     "for first as a category of its own; the same for every rater of a comparison, and comparable "
                     "across comparisons, unlike the winner's id")  # fmt: skip
RANK_POSITION_CODING = ("each completion's rank scaled to 0 (best) .. 1 (worst), tied completions sharing their "
                        "mean rank, so rankings with ties or with different numbers of options are comparable")  # fmt: skip
REVIEW_FLAGS = ("unsafe", "wrong", "all_bad", "rigging")
"""Judgment flags that put a judgment in the admins' review queue (`rigging`: written by the vote-rigging checks,
app.quality.rigging, on a flagged rater's votes for the model they favour)."""
LEADERBOARD_BOOTSTRAP = 1000
"""Bootstrap replicates behind the leaderboard's 95% intervals."""

_COUNTED = counted_sql(HUMAN) + " AND j.rater_id IS NOT NULL"
"""What the rater statistics count (app.judgments.selections: counted human judgments; per rater, so a judgment
whose rater account was deleted is left out)."""


def _counted(sources: tuple[str, ...]) -> str:
    return _COUNTED if sources == (HUMAN,) else counted_sql(*sources) + " AND j.rater_id IS NOT NULL"


def _dialect(db: Session) -> str:
    return db.get_bind().dialect.name


def _array(db: Session, sql: str, columns: int, **params: int | str) -> np.ndarray:
    """A query's rows as one float array (rows x columns); SQL NULL becomes NaN.

    PostgreSQL: the rows come as a binary COPY with every column cast to float8 (NULL as NaN), so each row has
    the same width and numpy reads the whole stream in one `frombuffer`: no Python object per value.
    SQLite: through the driver's cursor, whose rows are plain tuples that numpy converts in C (SQLAlchemy's
    Row objects would cost numpy an attribute probe per row, 100 times slower). Parameters (ids, attribute and
    model names) are bound by the driver, never pasted into the SQL."""
    compiled = text(sql).bindparams(**params).compile(dialect=db.get_bind().dialect)
    statement = str(compiled)
    bound = (tuple(compiled.params[name] for name in compiled.positiontup) if compiled.positional
             else dict(compiled.params))  # fmt: skip
    cursor = db.connection().connection.cursor()
    try:
        if _dialect(db) == "postgresql":
            return _copy_float8(cursor, statement, columns, bound)
        cursor.execute(statement, bound)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return np.array(rows, dtype=np.float64).reshape(len(rows), columns)


_PG_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


COPY_BLOCK_BYTES = 8 << 20
"""`_copy_float8` turns the stream into numbers every this many bytes (it never holds the whole raw stream)."""


def _copy_float8(cursor, statement: str, columns: int, params: dict) -> np.ndarray:
    """Rows of `statement` through `COPY ... TO STDOUT (FORMAT BINARY)`, parsed as fixed-width records:
    a field count (int16), then per column a length (int32, always 8) and a big-endian float8. The stream is parsed
    a block of records at a time as it arrives, so memory holds the numbers (twice, while the blocks are joined)
    and at most one block of raw bytes, not the raw stream (at ten million rows of six columns, 740 MB)."""
    names = ", ".join(f"c{i}" for i in range(columns))
    casts = ", ".join(f"COALESCE(CAST(c{i} AS float8), 'NaN')" for i in range(columns))
    record = np.dtype([("fields", ">i2")] + [(f"{kind}{i}", ">i4" if kind == "n" else ">f8")
                                             for i in range(columns) for kind in ("n", "v")])  # fmt: skip
    blocks: list[np.ndarray] = []

    def parse(buffer: bytearray, rows: int) -> None:
        body = np.frombuffer(buffer, dtype=record, count=rows)
        out = np.empty((rows, columns), dtype=np.float64)
        for i in range(columns):
            out[:, i] = body[f"v{i}"]
        del body
        blocks.append(out)
        del buffer[:rows * record.itemsize]

    pending = bytearray()
    header = None
    # COPY takes no server-side parameters: psycopg merges `params` into the statement client-side, quoted.
    copy_statement = f"COPY (SELECT {casts} FROM ({statement}) AS q({names})) TO STDOUT (FORMAT BINARY)"
    with cursor.copy(copy_statement, params or None) as copy:
        for chunk in copy:
            pending += chunk
            if header is None:
                if len(pending) < 19:
                    continue
                if pending[:11] != _PG_COPY_SIGNATURE:
                    raise RuntimeError("unexpected COPY BINARY header from PostgreSQL")
                header = 19 + int.from_bytes(pending[15:19], "big")  # signature, flags, extension length + extension
                if len(pending) < header:
                    header = None
                    continue
                del pending[:header]
            if len(pending) >= COPY_BLOCK_BYTES:
                parse(pending, len(pending) // record.itemsize)
    if header is None:
        raise RuntimeError("unexpected COPY BINARY header from PostgreSQL")
    rows = (len(pending) - 2) // record.itemsize  # the stream ends with an int16 -1
    if rows * record.itemsize + 2 != len(pending) or pending[-2:] != b"\xff\xff":
        raise RuntimeError("COPY BINARY stream is not a whole number of float8 records")
    parse(pending, rows)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _small_array(db: Session, sql: str, columns: int, **params: int | str) -> np.ndarray:
    """`_array` for a query of a bounded number of rows (a range of comparisons, not a project), in no particular
    order. PostgreSQL: the rows as one bytea value (each row's columns as big-endian float8, NULL as NaN, joined by
    `string_agg`), which numpy reads in one `frombuffer`: COPY sends a message a row, and psycopg's Python loop over
    them was most of the time (about 1.7 us a row). A bytea holds at most 1 GB: bounded queries only."""
    if _dialect(db) != "postgresql":
        return _array(db, sql, columns, **params)
    names = ", ".join(f"c{i}" for i in range(columns))
    record = " || ".join(f"float8send(COALESCE(CAST(c{i} AS float8), 'NaN'))" for i in range(columns))
    blob = db.execute(text(f"SELECT string_agg({record}, ''::bytea) FROM ({sql}) AS q({names})"), params).scalar()
    if blob is None:
        return np.zeros((0, columns))
    return np.frombuffer(blob, dtype=">f8").reshape(-1, columns).astype(np.float64)


def _json_sql(db: Session) -> dict[str, str]:
    """Dialect spellings: the i-th element of a JSON array column as an integer, its length, the larger of two."""
    if _dialect(db) == "postgresql":
        return {"element": "({column}->>{i})::bigint", "length": "jsonb_array_length({column})", "greatest": "GREATEST"}
    return {"element": "json_extract({column}, '$[{i}]')", "length": "json_array_length({column})", "greatest": "MAX"}


def _ranking_elements_sql(db: Session, sources: tuple[str, ...] = (HUMAN,)) -> str:
    """One row per (judgment, ranked completion) of the counted judgments of these sources: judgment id,
    comparison, rater, tie group (0 = best), completion."""
    if _dialect(db) == "postgresql":
        return ("SELECT j.id AS judgment_id, j.comparison_id, j.rater_id, g.idx - 1 AS grp, "
                "(m.value)::bigint AS completion_id FROM judgment j "
                "CROSS JOIN LATERAL jsonb_array_elements(j.ranking) WITH ORDINALITY AS g(members, idx) "
                "CROSS JOIN LATERAL jsonb_array_elements_text(g.members) AS m(value) WHERE " + _counted(sources))  # fmt: skip
    return ("SELECT j.id AS judgment_id, j.comparison_id, j.rater_id, CAST(g.key AS INTEGER) AS grp, "
            "CAST(m.value AS INTEGER) AS completion_id FROM judgment j, json_each(j.ranking) g, json_each(g.value) m "
            "WHERE " + _counted(sources))  # fmt: skip


def _attribute_scores_sql(db: Session) -> str:
    """One row per attribute score: attribute name, comparison, rater, option (completion id), score."""
    if _dialect(db) == "postgresql":
        return ("SELECT a.key AS name, j.comparison_id, j.rater_id, (s.key)::bigint AS option, (s.value)::float AS score "
                "FROM judgment j CROSS JOIN LATERAL jsonb_each(j.attributes) AS a(key, value) "
                "CROSS JOIN LATERAL jsonb_each_text(a.value) AS s(key, value) WHERE " + _COUNTED)  # fmt: skip
    return ("SELECT a.key AS name, j.comparison_id, j.rater_id, CAST(s.key AS INTEGER) AS option, "
            "CAST(s.value AS REAL) AS score FROM judgment j, json_each(j.attributes) a, json_each(a.value) s "
            "WHERE " + _COUNTED)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# queue overview
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# agreement, reliability, flags
# ---------------------------------------------------------------------------------------------------------------


def _comparison_arrays(db: Session, project: Project, *, completions: bool = True) -> dict[str, np.ndarray]:
    """The project's comparisons, sorted by id: gold flag, number of options and, for two-option comparisons,
    both completion ids, their models (codes into `model_names`, -1 for none) and the longer completion (NaN
    when both are as long). Comparisons and completions are read as two flat scans and joined in numpy, which
    is several times faster than letting the database hash the completion texts once per side. `completions`
    False: the comparisons' own columns only (`id`, `is_gold`, `n_options`, `options`), without reading the
    completions (two rows per comparison)."""
    js = _json_sql(db)
    n_options = js["length"].format(column="c.completion_ids")
    max_options = max(2, int(db.execute(text(f"SELECT max({n_options}) FROM comparison c WHERE c.project_id = :project"),
                                        {"project": project.id}).scalar() or 0))  # fmt: skip
    elements = ", ".join(js["element"].format(column="c.completion_ids", i=i) for i in range(max_options))
    comparisons = _array(db, f"""
        SELECT c.id, CASE WHEN c.is_gold THEN 1 ELSE 0 END, {n_options}, {elements}
        FROM comparison c WHERE c.project_id = :project""", 3 + max_options, project=project.id)  # fmt: skip
    comparisons = comparisons[np.argsort(comparisons[:, 0], kind="stable")]
    comparison, is_gold, n_options = comparisons[:, :3].T
    options = comparisons[:, 3:]
    first, second = options[:, 0], options[:, 1]
    if not completions:
        return {"id": comparison.astype(np.int64), "is_gold": is_gold == 1, "n_options": n_options, "options": options}
    model_names = [name for (name,) in db.execute(text(
        "SELECT DISTINCT o.model_name FROM completion o JOIN prompt p ON p.id = o.prompt_id "
        "WHERE p.project_id = :project AND o.model_name IS NOT NULL ORDER BY 1"), {"project": project.id})]  # fmt: skip
    model_code = ("CASE o.model_name " + " ".join(f"WHEN :m{i} THEN {i}" for i in range(len(model_names)))
                  + " ELSE -1 END") if model_names else "-1"  # fmt: skip
    completions = _array(db, f"SELECT o.id, {model_code}, length(o.text) FROM completion o "
                             "JOIN prompt p ON p.id = o.prompt_id WHERE p.project_id = :project", 3,
                         project=project.id, **{f"m{i}": name for i, name in enumerate(model_names)})  # fmt: skip
    completions = completions[np.argsort(completions[:, 0], kind="stable")]
    if len(completions) == 0:
        completions = np.full((1, 3), np.nan)  # a row no id matches, so lookups need no special case
    pairwise = n_options == 2

    def completion_column(ids: np.ndarray, column: int, missing: float) -> np.ndarray:
        row = np.minimum(np.searchsorted(completions[:, 0], ids), len(completions) - 1)
        found = pairwise & (completions[row, 0] == ids)
        return np.where(found, completions[row, column], missing)

    length_a, length_b = completion_column(first, 2, np.nan), completion_column(second, 2, np.nan)
    longer = np.where(length_a > length_b, first, np.where(length_b > length_a, second, np.nan))
    return {"id": comparison.astype(np.int64), "is_gold": is_gold == 1, "n_options": n_options, "first": first,
            "second": second, "options": options, "model_a": completion_column(first, 1, -1).astype(np.int64),
            "model_b": completion_column(second, 1, -1).astype(np.int64), "longer": longer,
            "model_names": np.array(model_names, dtype=object)}  # fmt: skip


def judgment_arrays(db: Session, project: Project, sources: tuple[str, ...] = (HUMAN,)) -> dict[str, np.ndarray]:
    """Counted judgments of these sources (humans by default) as columns, with what their statistics need of their
    comparison (gold flag, number of options, the top choice coded by stored position) and the length-bias input:
    in a decisive pairwise judgment between answers of different lengths, whether the longer one won. Only these
    columns: at ten million judgments each per-judgment column is 80 MB."""
    data = _array(db, f"SELECT j.comparison_id, j.rater_id, j.top_completion_id, j.time_spent_ms, j.chosen_position "
                      f"FROM judgment j WHERE {_counted(sources)}", 5, project=project.id)  # fmt: skip
    comparison, rater, top, time_ms, position = data.T
    comparison = comparison.astype(np.int64)
    comparisons = _comparison_arrays(db, project)
    row = np.searchsorted(comparisons["id"], comparison)  # every judged comparison is there
    longer = comparisons["longer"][row]
    chose_longer = np.where(np.isnan(top) | np.isnan(longer), np.nan, (top == longer).astype(np.float64))
    return {"comparison": comparison, "rater": rater.astype(np.int64), "top": np.where(np.isnan(top), TIE, top),
            "top_code": stats.top_choice_codes(top, comparisons["options"][row]),
            "time_ms": time_ms, "position": position, "is_gold": comparisons["is_gold"][row],
            "n_options": comparisons["n_options"][row], "chose_longer": chose_longer,
            "model_names": comparisons["model_names"]}  # fmt: skip


def gold_answers(db: Session, project: Project, low: int | None = None,
                 high: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(gold comparison ids, sorted, and their known top choice coded like `top`: the completion ranked first alone,
    TIE where the first place is shared): one row per gold item with a gold ranking, not per judgment; only the
    comparisons low..high where they are given. The database reads the top out of the JSON (parsing every gold
    ranking in Python cost a fifth of a streamed reliability fit)."""
    # Nested CASEs, not AND: SQL does not promise to test the type before taking a length (a JSON null, say).
    if _dialect(db) == "postgresql":
        ranked = ("CASE WHEN jsonb_typeof(c.gold_ranking) = 'array' THEN jsonb_array_length(c.gold_ranking) > 0 "
                  "ELSE false END")  # fmt: skip
        top = ("CASE WHEN jsonb_typeof(c.gold_ranking -> 0) <> 'array' THEN NULL "
               f"WHEN jsonb_array_length(c.gold_ranking -> 0) = 1 THEN (c.gold_ranking -> 0 ->> 0)::float8 ELSE {TIE} END")
    else:
        ranked = ("CASE WHEN json_type(c.gold_ranking) = 'array' THEN json_array_length(c.gold_ranking) > 0 "
                  "ELSE 0 END")  # fmt: skip
        top = ("CASE WHEN json_type(c.gold_ranking, '$[0]') <> 'array' THEN NULL "
               f"WHEN json_array_length(c.gold_ranking, '$[0]') = 1 THEN json_extract(c.gold_ranking, '$[0][0]') "
               f"ELSE {TIE} END")  # fmt: skip
    where = f"c.project_id = :project AND c.is_gold AND {ranked}"
    params: dict[str, int] = {"project": project.id}
    if low is not None:
        where += " AND c.id BETWEEN :low AND :high"
        params |= {"low": low, "high": high}
    rows = _array(db, f"SELECT c.id, {top} FROM comparison c WHERE {where}", 2, **params)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]  # callers look ids up with np.searchsorted
    return rows[:, 0].astype(np.int64), rows[:, 1].astype(np.float64)


def _attribute_score_arrays(db: Session, project: Project) -> dict[str, np.ndarray]:
    """Per attribute scale: (comparison, rater, option, score) rows of the counted human judgments."""
    return {scale["name"]: _array(db, f"SELECT s.comparison_id, s.rater_id, s.option, s.score "
                                      f"FROM ({_attribute_scores_sql(db)}) s WHERE s.name = :name", 4,
                                  project=project.id, name=scale["name"])
            for scale in project.attributes or []}  # fmt: skip


def _attribute_agreement(scores: dict[str, np.ndarray]) -> dict[str, dict]:
    """Ordinal alpha per attribute; a unit is one option of one comparison, the values are the raters' scores."""
    out: dict[str, dict] = {}
    for name, data in scores.items():
        _, unit = np.unique(data[:, [0, 2]], axis=0, return_inverse=True)
        result = stats.krippendorff_alpha(unit.ravel(), data[:, 1], data[:, 3], "ordinal")
        out[name] = {"krippendorff_alpha": result.alpha, "units": result.units, "level": "ordinal"}
    return out


def _rank_position_arrays(db: Session, project: Project) -> np.ndarray:
    """Rank mode's input: (comparison, rater, tie group, completion, judgment) per ranked completion, non-gold."""
    return _array(db, f"SELECT e.comparison_id, e.rater_id, e.grp, e.completion_id, e.judgment_id "
                      f"FROM ({_ranking_elements_sql(db)}) e "
                      "JOIN comparison c ON c.id = e.comparison_id WHERE NOT c.is_gold", 5, project=project.id)  # fmt: skip


def _rank_position_agreement(data: np.ndarray) -> stats.AlphaResult:
    """Rank mode: interval alpha on each completion's scaled midrank (unit = comparison x completion; coding and
    why: stats.scaled_midranks)."""
    if len(data) == 0:
        return stats.AlphaResult(alpha=None, units=0)
    _, unit = np.unique(data[:, [0, 3]], axis=0, return_inverse=True)
    return stats.krippendorff_alpha(unit.ravel(), data[:, 1], stats.scaled_midranks(data[:, 4], data[:, 2]), "interval")


def _reliability_inputs(cols: dict[str, np.ndarray], gold_ids, gold_tops, project) -> tuple:
    """stats.rater_reliability's arguments (units, raters, codes, categories, gold) from the judgment columns and the
    gold answers (`project`: anything with the project's `allow_ties`)."""
    # Codes are computed over judgments and gold answers together so they agree within a unit.
    judged_gold = np.isin(gold_ids, cols["comparison"])
    gold_ids, gold_tops = gold_ids[judged_gold], gold_tops[judged_gold]
    units = np.concatenate([cols["comparison"], gold_ids])
    # The one-coin model treats the categories of a unit symmetrically, so codes need only be consistent within a
    # unit; what must be right is each unit's number of possible answers: its options, plus "tie" where ties are
    # allowed (a K-option comparison has K + 1 answers, not the 2 + 1 of a pairwise one).
    codes = _dense_codes(units, np.concatenate([cols["top"], gold_tops]))
    n_judged = len(cols["top"])
    n_options = np.where(np.isnan(cols["n_options"]), 2.0, cols["n_options"])
    n_categories = np.maximum(n_options + int(project.allow_ties), 2.0)
    # At least as many as the distinct answers seen in the unit (a tie where ties are no longer allowed).
    unit_ids, unit_index = np.unique(units, return_inverse=True)
    seen = np.zeros(len(unit_ids))
    np.maximum.at(seen, unit_index, codes + 1)
    n_categories = np.maximum(n_categories, seen[unit_index[:n_judged]])
    return cols["comparison"], cols["rater"], codes[:n_judged], n_categories, (gold_ids, codes[n_judged:])


def reliability_from_arrays(cols: dict[str, np.ndarray], gold_ids, gold_tops, project) -> dict[int, float]:
    """Each rater's reliability from the judgment columns and the gold answers (`project`: anything with the
    project's `allow_ties`)."""
    return stats.rater_reliability(*_reliability_inputs(cols, gold_ids, gold_tops, project))


RELIABILITY_RANGE_JUDGMENTS = 1 << 16
"""rater_reliability reads about this many judgments (a range of comparison ids) at a time."""
RELIABILITY_FIRST_RANGE = 100_000
"""The first range's width in comparison ids; later ones are widened or narrowed toward RELIABILITY_RANGE_JUDGMENTS."""


def rater_reliability(db: Session, project: Project) -> dict[int, float]:
    """Each rater's reliability alone (what exports weight pairs by), with the memory of a range of judgments, not
    of the project's: the judgments are read a range of comparison ids at a time, each range coded as
    `reliability_from_arrays` codes all of them and kept as a compact stats.VoteBlock, and the fit runs over the
    blocks (on PostgreSQL the next ranges are read while this one is coded: `app.db.read_ahead`). The same numbers as
    reliability_from_arrays on every judgment at once, to rounding (every unit is whole in one range).

    A comparison's number of options matters only where it is not gold and has several votes (stats.VoteBlock: a
    gold item's posterior is its answer, a single vote's has a closed form), so the comparisons of a range are read
    only when it has such a comparison; the judgments alone are read without a join."""
    first, last = db.execute(select(func.min(Comparison.id), func.max(Comparison.id))
                             .where(Comparison.project_id == project.id)).one()  # fmt: skip
    if first is None:
        return {}
    judgments = (f"SELECT j.comparison_id, j.rater_id, j.top_completion_id FROM judgment j WHERE {_COUNTED} "
                 "AND j.comparison_id BETWEEN :low AND :high")  # fmt: skip
    length = _json_sql(db)["length"].format(column="c.completion_ids")
    comparisons = (f"SELECT c.id, {length} FROM comparison c "
                   "WHERE c.project_id = :project AND c.id BETWEEN :low AND :high")  # fmt: skip

    def ranges() -> Iterator[tuple]:
        """Each range's columns and gold answers: everything the database gives (a reader thread runs it ahead)."""
        low, width = first, RELIABILITY_FIRST_RANGE
        while low <= last:
            high = min(last, low + width - 1)
            data = _small_array(db, judgments, 3, project=project.id, low=low, high=high)
            judged = len(data)
            if judged:
                comparison = data[:, 0].astype(np.int64)
                rater, top = data[:, 1].astype(np.int64), np.where(np.isnan(data[:, 2]), TIE, data[:, 2])
                del data
                gold_ids, gold_tops = gold_answers(db, project, low, high)
                ids, votes = np.unique(comparison, return_counts=True)
                n_options = np.full(judged, np.nan)  # NaN counts as two: enough for a gold item or a single vote
                if np.any((votes > 1) & ~np.isin(ids, gold_ids)):
                    sizes = _small_array(db, comparisons, 2, project=project.id, low=low, high=high)
                    sizes = sizes[np.argsort(sizes[:, 0], kind="stable")]
                    n_options = sizes[np.searchsorted(sizes[:, 0], comparison), 1]  # every judged one is there
                    del sizes
                yield {"comparison": comparison, "rater": rater, "top": top, "n_options": n_options}, gold_ids, gold_tops
                del comparison, rater, top, n_options
            # The next range: as many ids as would hold RELIABILITY_RANGE_JUDGMENTS at this range's density.
            width = int(min(max(width * RELIABILITY_RANGE_JUDGMENTS / max(judged, 1), 1), 4 * width))
            low = high + 1

    blocks = []
    read = read_ahead(ranges(), db.connection())
    with contextlib.closing(read):  # an error here stops the reader thread first
        for cols, gold_ids, gold_tops in read:
            blocks.append(stats.vote_block(*_reliability_inputs(cols, gold_ids, gold_tops, project)))
    return stats.fit_reliability(blocks)


def project_stats(db: Session, project: Project) -> dict:
    return stats_from_inputs(stats_inputs(db, project))


def _project_facts(project: Project) -> SimpleNamespace:
    """The project's settings the computations read, as plain values: the computing phase runs after the read
    transaction ended and must not load anything (an expired ORM attribute would open a transaction again)."""
    return SimpleNamespace(id=project.id, mode=project.mode, allow_ties=project.allow_ties,
                           attributes=list(project.attributes or []), group_weights=project.group_weights)  # fmt: skip


def stats_inputs(db: Session, project: Project) -> dict:
    """Everything `project_stats` reads, read here and nothing computed from it beyond joins (the worker reads
    this in one short transaction and computes after it ended: app.quality.figures.refresh)."""
    cols = judgment_arrays(db, project)
    inputs = {"project": _project_facts(project), "overview": project_overview(db, project), "cols": cols,
              "usernames": dict(db.execute(select(User.id, User.username)).all()),
              "labels": _user_labels(db), "steps": list(counted_step_labels(db, project))}  # fmt: skip
    if len(cols["rater"]):
        inputs["gold"] = gold_answers(db, project)
        inputs["rank_positions"] = _rank_position_arrays(db, project) if project.mode == "rank" else None
        inputs["attribute_scores"] = _attribute_score_arrays(db, project)
    return inputs


def stats_from_inputs(inputs: dict) -> dict:
    """`project_stats` from `stats_inputs`: no database."""
    project, overview, cols, usernames = inputs["project"], inputs["overview"], inputs["cols"], inputs["usernames"]
    raters_out: list[dict] = []
    pairwise_out: list[dict] = []
    alpha = stats.AlphaResult(alpha=None, units=0)
    rank_alpha = None
    if len(cols["rater"]):
        comparison, rater, top, is_gold = cols["comparison"], cols["rater"], cols["top"], cols["is_gold"]
        gold_ids, gold_tops = inputs["gold"]
        gold_answer = np.full(len(top), np.nan)
        where = np.searchsorted(gold_ids, comparison[is_gold]) if len(gold_ids) else np.zeros(0, dtype=np.int64)
        known = (where < len(gold_ids))
        known[known] = gold_ids[where[known]] == comparison[is_gold][known]
        gold_rows = np.flatnonzero(is_gold)[known]
        gold_answer[gold_rows] = gold_tops[where[known]]
        regular = ~is_gold
        # Alpha pools values across comparisons, so it needs the comparable coding (stats.top_choice_codes); the
        # other figures test equality within a comparison only, where either coding gives the same answer.
        code = cols["top_code"]
        alpha = stats.krippendorff_alpha(comparison[regular], rater[regular], code[regular], "nominal")
        majority = stats.agreement_with_majority(comparison[regular], rater[regular], code[regular])
        pairs = stats.pairwise_rater_agreement(comparison[regular], rater[regular], code[regular])
        reliability = reliability_from_arrays(cols, gold_ids, gold_tops, project)
        n_options = np.where(np.isnan(cols["n_options"]), 2.0, cols["n_options"])
        flags = stats.rater_flags(rater, cols["time_ms"], cols["position"], n_options, cols["chose_longer"])
        rater_ids, rater_code = np.unique(rater, return_inverse=True)
        judged = np.bincount(rater_code, minlength=len(rater_ids))
        graded = ~np.isnan(gold_answer)
        gold_judged = np.bincount(rater_code[graded], minlength=len(rater_ids))
        gold_right = np.bincount(rater_code[graded], weights=top[graded] == gold_answer[graded], minlength=len(rater_ids))
        for code, rater_id in enumerate(rater_ids.tolist()):
            raters_out.append({
                "user_id": rater_id,
                "username": usernames.get(rater_id, f"user {rater_id}"),
                "judgments": int(judged[code]),
                "gold_judgments": int(gold_judged[code]),
                "gold_accuracy": float(gold_right[code] / gold_judged[code]) if gold_judged[code] else None,
                "agreement_with_majority": majority.get(rater_id, (None, 0))[0],
                "reliability": reliability.get(rater_id),
                "flags": flags.get(rater_id, []),
            })  # fmt: skip
        pairwise_out = [
            {"rater_a": usernames.get(a, f"user {a}"), "rater_b": usernames.get(b, f"user {b}"),
             "agreement": share, "common": n}
            for (a, b), (share, n) in sorted(pairs.items())
        ]  # fmt: skip
        if project.mode == "rank":
            result = _rank_position_agreement(inputs["rank_positions"])
            rank_alpha = {"krippendorff_alpha": result.alpha, "units": result.units, "level": "interval",
                          "coding": RANK_POSITION_CODING}  # fmt: skip
    return {
        "comparisons": {k: overview["comparisons"][k] for k in ("total", "open", "complete")},
        "judgments": int(len(cols["rater"])),  # the counted human judgments the figures below read
        "groups": _group_agreement(inputs["labels"], cols),
        "agreement": {
            "krippendorff_alpha": alpha.alpha,
            "units": alpha.units,
            "level": "nominal",
            "on": "top choice",
            "coding": TOP_CHOICE_CODING,
            "rank_positions": rank_alpha,
            "attributes": _attribute_agreement(inputs["attribute_scores"]) if len(cols["rater"]) else {},
        },
        "pairwise_agreement": pairwise_out,
        "raters": raters_out,
        "steps": step_agreement_from_rows(inputs["steps"], usernames),  # step labels on trajectories
        # (app.quality.step_agreement)
    }


def _user_labels(db: Session) -> list[tuple[int, dict]]:
    return [tuple(row) for row in db.execute(select(User.id, User.labels).where(User.labels.is_not(None)))]


def group_agreement(db: Session, cols: dict[str, np.ndarray]) -> list[dict]:
    """Agreement within each rater group (app.groups, key=value): Krippendorff's alpha on the top choice among the
    group's own raters (non-gold comparisons, as the project's alpha), their mean agreement with the group's own
    majority, and how many raters and judgments that reads."""
    return _group_agreement(_user_labels(db), cols)


def _group_agreement(user_labels: list[tuple[int, dict]], cols: dict[str, np.ndarray]) -> list[dict]:
    if not len(cols["rater"]):
        return []
    regular = ~cols["is_gold"]
    comparison, rater, code = cols["comparison"][regular], cols["rater"][regular], cols["top_code"][regular]
    members: dict[str, set[int]] = {}
    for user_id, labels in user_labels:
        for key, value in (labels or {}).items():
            members.setdefault(f"{key}={value}", set()).add(user_id)
    out = []
    for group, ids in sorted(members.items()):
        mine = np.isin(rater, np.fromiter(ids, np.int64))
        if not mine.any():
            continue
        alpha = stats.krippendorff_alpha(comparison[mine], rater[mine], code[mine], "nominal")
        majority = stats.agreement_with_majority(comparison[mine], rater[mine], code[mine])
        counted = [(share, n) for share, n in majority.values() if n]
        out.append({"group": group, "raters": int(len(np.unique(rater[mine]))), "judgments": int(mine.sum()),
                    "krippendorff_alpha": alpha.alpha, "units": alpha.units,
                    "agreement_with_majority": (sum(share * n for share, n in counted) / sum(n for _, n in counted)
                                                if counted else None)})  # fmt: skip
    return out


def set_group_weights(db: Session, project: Project, value: dict | str | None, actor: User | None) -> dict[str, float]:
    """Set (or clear, with nothing) the project's group weights for the post-stratified leaderboard
    (app.quality.poststrat: checked and normalised there)."""
    weights = poststrat.parse_group_weights(value)
    project.group_weights = weights or None
    audit(db, actor, "project.group_weights", "project", project.id, weights=weights)
    return weights


def _dense_codes(unit: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Values renumbered 0..k-1 within each unit in value order (same value, same code), as categorical models
    want. One lexsort: a new code starts wherever the value changes, and counting restarts at each unit."""
    order = np.lexsort((value, unit))
    sorted_unit, sorted_value = unit[order], value[order]
    new_unit = np.concatenate(([True], sorted_unit[1:] != sorted_unit[:-1]))
    new_value = new_unit | np.concatenate(([True], sorted_value[1:] != sorted_value[:-1]))
    running = np.cumsum(new_value) - 1
    codes = np.empty(len(order), dtype=np.float64)
    codes[order] = running - np.maximum.accumulate(np.where(new_unit, running, 0))
    return codes


# ---------------------------------------------------------------------------------------------------------------
# model leaderboard
# ---------------------------------------------------------------------------------------------------------------


def battle_rows(db: Session, project: Project) -> dict[str, np.ndarray]:
    """People's pairwise outcomes between the models that wrote the completions, one row per battle (counted
    judgments of the LEADERBOARD selection: rated comparisons and live battles): `model_a`, `model_b` (codes into
    `model_names`), `outcome` for a (1 win, 0.5 tie, 0 loss), `completion_a`, `completion_b`, `rater`. A K-way
    ranking gives one battle per pair of its completions; two completions of the same model are no battle.

    Two-option comparisons (the bulk) come from the judgment and comparison columns in numpy, the outcome read
    from `top_completion_id` (no single top: a tie). Only rankings of three or more options are expanded from
    JSON into their pairs, by the database, and only when the project has such comparisons."""
    # Only the three judgment columns a battle needs (judgment_arrays would add a dozen per-judgment columns).
    comparison, rater, top = _array(db, "SELECT j.comparison_id, j.rater_id, j.top_completion_id FROM judgment j "
                                        f"WHERE {_counted(LEADERBOARD)}", 3, project=project.id).T  # fmt: skip
    comparisons = _comparison_arrays(db, project)
    names = comparisons["model_names"]
    row = np.searchsorted(comparisons["id"], comparison.astype(np.int64))  # every judged comparison is there
    model_a, model_b = comparisons["model_a"][row], comparisons["model_b"][row]
    battle = (comparisons["n_options"][row] == 2) & (model_a >= 0) & (model_b >= 0) & (model_a != model_b)
    row, top = row[battle], top[battle]  # top: NaN for a tie, which equals neither completion
    first, second = comparisons["first"][row], comparisons["second"][row]
    rows = {"model_a": model_a[battle], "model_b": model_b[battle],
            "outcome": np.where(top == first, 1.0, np.where(top == second, 0.0, 0.5)),
            "completion_a": first.astype(np.int64), "completion_b": second.astype(np.int64),
            "rater": rater[battle].astype(np.int64)}  # fmt: skip
    del comparisons, comparison, rater, top, row, first, second, model_a, model_b, battle
    js = _json_sql(db)
    n_options = js["length"].format(column="c.completion_ids")
    has_rankings = db.execute(text(f"SELECT 1 FROM comparison c WHERE c.project_id = :project AND {n_options} > 2 "
                                   "LIMIT 1"), {"project": project.id}).first()  # fmt: skip
    if has_rankings and len(names):
        model_code = "CASE o.model_name " + " ".join(f"WHEN :m{i} THEN {i}" for i in range(len(names))) + " END"
        ranked = _array(db, f"""
            WITH e AS (
                SELECT r.judgment_id, r.rater_id, r.grp, r.completion_id, {model_code} AS model
                FROM ({_ranking_elements_sql(db, LEADERBOARD)}) r
                JOIN comparison c ON c.id = r.comparison_id AND {n_options} > 2
                JOIN completion o ON o.id = r.completion_id
                WHERE o.model_name IS NOT NULL
            )
            SELECT a.model, b.model, CASE WHEN a.grp < b.grp THEN 1.0 WHEN a.grp = b.grp THEN 0.5 ELSE 0.0 END,
                   a.completion_id, b.completion_id, a.rater_id
            FROM e a JOIN e b ON a.judgment_id = b.judgment_id AND a.completion_id < b.completion_id
            WHERE a.model <> b.model""", 6, project=project.id,
                        **{f"m{i}": name for i, name in enumerate(names)})  # fmt: skip
        for key, column in zip(("model_a", "model_b", "outcome", "completion_a", "completion_b", "rater"), ranked.T,
                               strict=True):  # fmt: skip
            rows[key] = np.concatenate((rows[key], column.astype(rows[key].dtype)))
    return rows | {"model_names": names}


def battle_counts(db: Session, project: Project) -> list[tuple[str, str, float, int]]:
    """The leaderboard's battles aggregated: (model a, model b, outcome for a, battles), sorted. Read from the
    battle tallies (app.judgments.tallies), the same figures as aggregating `battle_rows`."""
    cells: dict[tuple[str, str, float], int] = {}
    for model_a, model_b, outcome, n, _rater in tallies.tally_rows(db, project.id, LEADERBOARD):
        key = (model_a, model_b, outcome / 2.0)
        cells[key] = cells.get(key, 0) + n
    return sorted((a, b, outcome, n) for (a, b, outcome), n in cells.items())


def tally_battles(db: Session, project: Project, raters: set[int] | None = None) -> dict:
    """The leaderboard's battles from the tallies: one row per (rater, model a, model b, outcome) with `counts`;
    `model_a`/`model_b` are codes into `model_names` (the models that played, sorted). `raters`: only theirs."""
    rows = tallies.tally_rows(db, project.id, LEADERBOARD, None if raters is None else sorted(raters))
    names = sorted({row[0] for row in rows} | {row[1] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    return {"model_a": np.array([index[row[0]] for row in rows], dtype=np.int64),
            "model_b": np.array([index[row[1]] for row in rows], dtype=np.int64),
            "outcome": np.array([row[2] / 2.0 for row in rows], dtype=np.float64),
            "counts": np.array([row[3] for row in rows], dtype=np.int64),
            "rater": np.array([row[4] for row in rows], dtype=np.int64), "model_names": names}  # fmt: skip


STYLE_FETCH = 20_000
"""Completions per fetch while reading a project's completion texts for their style features."""


def completion_style(db: Session, project: Project) -> tuple[np.ndarray, np.ndarray]:
    """Style features (app.quality.style.style_counts) of the project's completions: (completion ids sorted,
    their features, one row each in STYLE_FEATURES order). One query, streamed (a server-side cursor on PostgreSQL),
    each fetch turned into numbers before the next: no text or Python object is kept per completion."""
    compiled = text("SELECT o.id, o.text FROM completion o JOIN prompt p ON p.id = o.prompt_id "
                    "WHERE p.project_id = :project").bindparams(project=project.id).compile(dialect=db.get_bind().dialect)  # fmt: skip
    bound = (tuple(compiled.params[name] for name in compiled.positiontup) if compiled.positional
             else dict(compiled.params))  # fmt: skip
    connection = db.connection().connection
    cursor = connection.cursor("completion_style") if _dialect(db) == "postgresql" else connection.cursor()
    ids, features = [], []
    n_features = len(style.STYLE_FEATURES)
    try:
        cursor.execute(str(compiled), bound)
        while rows := cursor.fetchmany(STYLE_FETCH):
            ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
            features.append(np.fromiter((value for row in rows for value in style.style_counts(row[1] or "")),
                                        dtype=np.float64, count=n_features * len(rows)).reshape(-1, n_features))  # fmt: skip
    finally:
        cursor.close()
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, n_features))
    ids_all, features_all = np.concatenate(ids), np.concatenate(features)
    del ids, features
    order = np.argsort(ids_all, kind="stable")
    return ids_all[order], features_all[order]


def leaderboard(db: Session, project: Project, *, bootstrap: int = LEADERBOARD_BOOTSTRAP, seed: int = 0,
                group: str | None = None, style_control: bool = True) -> dict:  # fmt: skip
    """Bradley-Terry ratings (Elo scale, mean 1000) with bootstrap 95% intervals, battles and win rates; beside
    them the style-controlled ranking (app.quality.style: answer length and markdown held equal, Wald intervals)
    and the style coefficients. With `group` (a rater group, `key=value`, app.groups), only that group's votes.

    The ratings, intervals, battles and win rates come from the battle tallies (app.judgments.tallies: a few rows
    per rater and model pair, kept current as judgments are written), so they cost the same at ten million
    judgments as at ten. The style-controlled ranking and the post-stratified one need each battle's completions
    and rater labels, so they still read every battle (`battle_rows`); `style_control=False` leaves them out
    (empty, None)."""
    return leaderboard_from_inputs(leaderboard_inputs(db, project, group=group, style_control=style_control),
                                   bootstrap=bootstrap, seed=seed)  # fmt: skip


def leaderboard_inputs(db: Session, project: Project, *, group: str | None = None, style_control: bool = True) -> dict:
    """Everything `leaderboard` reads: the tallies and, with `style_control`, every battle, the completions' style
    features and the raters' labels (the worker reads this in one short transaction and computes after it ended)."""
    raters = None if group is None else set(group_members(db, group))
    tallied = tally_battles(db, project, raters)
    inputs = {"raters": raters, "group": group, "tallied": tallied, "style_control": style_control}
    if style_control and tallied["model_names"]:
        weights = (poststrat.parse_group_weights(project.group_weights) if project.group_weights and group is None
                   else {})  # fmt: skip
        inputs |= {"rows": battle_rows(db, project), "style": completion_style(db, project), "weights": weights,
                   "labels": dict(db.execute(select(User.id, User.labels).where(User.labels.is_not(None))).all())
                   if weights else {}}  # fmt: skip
    return inputs


def leaderboard_from_inputs(inputs: dict, *, bootstrap: int = LEADERBOARD_BOOTSTRAP, seed: int = 0) -> dict:
    """`leaderboard` from `leaderboard_inputs`: no database."""
    tallied = inputs["tallied"]
    names = tallied["model_names"]
    if not names:
        return {"models": [], "win_rates": {}, "battles": 0, "style_controlled": [], "style_coefficients": [],
                "post_stratified": None}
    board = stats.bradley_terry(tallied["model_a"], tallied["model_b"], tallied["outcome"], len(names),
                                bootstrap=bootstrap, seed=seed, counts=tallied["counts"])  # fmt: skip

    def number(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 2)

    def by_rating(items: list[dict]) -> list[dict]:
        return sorted(items, key=lambda m: -(m["rating"] if m["rating"] is not None else -np.inf))

    models = by_rating([{"name": name, "rating": number(board.ratings[i]), "ci_low": number(board.ci_low[i]),
                         "ci_high": number(board.ci_high[i]), "battles": int(board.battles[i])}
                        for i, name in enumerate(names)])  # fmt: skip
    win_rates = {a: {b: float(board.win_rates[i, j]) for j, b in enumerate(names) if not np.isnan(board.win_rates[i, j])}
                 for i, a in enumerate(names)}  # fmt: skip
    out = {"models": models, "win_rates": win_rates, "battles": int(tallied["counts"].sum()),
           "prior_ties": board.prior_ties, "style_controlled": [], "style_coefficients": [],
           "post_stratified": None}  # fmt: skip
    if inputs["style_control"]:
        out |= _row_variants(inputs, names, board, number, by_rating)
    return out


def _row_variants(inputs: dict, names: list[str], board, number, by_rating) -> dict:
    """The leaderboard's figures that need every battle (`battle_rows`): the style-controlled ranking and its
    coefficients, and the post-stratified ranking (project group weights, no `group`)."""
    rows, raters = inputs["rows"], inputs["raters"]
    if raters is not None:
        keep = np.isin(rows["rater"], np.fromiter(raters, np.int64))
        rows = {key: value if key == "model_names" else value[keep] for key, value in rows.items()}
    position = {name: i for i, name in enumerate(names)}
    index = np.array([position.get(str(name), -1) for name in rows["model_names"]], dtype=np.int64)
    model_a, model_b, outcome = index[rows["model_a"]], index[rows["model_b"]], rows["outcome"]
    ids, features = inputs["style"]
    where_a, where_b = np.searchsorted(ids, rows["completion_a"]), np.searchsorted(ids, rows["completion_b"])
    for where, completions in ((where_a, rows["completion_a"]), (where_b, rows["completion_b"])):
        if len(where) and (where.max() >= len(ids) or np.any(ids[where] != completions)):
            raise RuntimeError("a battle's completion is not one of its project's completions")
    differences = style.style_differences(features[where_a], features[where_b])
    del ids, features, where_a, where_b  # the fit below holds its own blocks
    inputs.pop("style", None)  # (the caller's reference too: the fit's blocks are the peak)
    controlled = style.style_controlled_bradley_terry(model_a, model_b, outcome, differences, len(names))
    style_controlled = by_rating([{"name": name, "rating": number(controlled.ratings[i]),
                                   "ci_low": number(controlled.ci_low[i]), "ci_high": number(controlled.ci_high[i]),
                                   "battles": int(board.battles[i])} for i, name in enumerate(names)])  # fmt: skip
    coefficients = [{"feature": feature, "coefficient": round(float(controlled.coefficients[k]), 4),
                     "ci_low": round(float(controlled.coefficient_ci_low[k]), 4),
                     "ci_high": round(float(controlled.coefficient_ci_high[k]), 4)}
                    for k, feature in enumerate(style.STYLE_FEATURES) if not np.isnan(controlled.coefficients[k])]  # fmt: skip
    post_stratified = None
    weights, labels = inputs["weights"], inputs["labels"]
    if weights:
        battle_weight, strata = poststrat.battle_weights(rows["rater"], labels, weights)
        fit = style.style_controlled_bradley_terry(model_a, model_b, outcome, np.zeros((len(outcome), 0)),
                                                   len(names), weights=battle_weight)  # fmt: skip
        counted = battle_weight > 0
        weighted_battles = np.bincount(model_a[counted], minlength=len(names)) + np.bincount(model_b[counted],
                                                                                            minlength=len(names))
        post_stratified = {
            "weights": weights, "strata": strata, "battles": int(counted.sum()),
            "models": by_rating([{"name": name, "rating": number(fit.ratings[i]), "ci_low": number(fit.ci_low[i]),
                                  "ci_high": number(fit.ci_high[i]), "battles": int(weighted_battles[i])}
                                 for i, name in enumerate(names) if weighted_battles[i]]),
        }  # fmt: skip
    return {"style_controlled": style_controlled, "style_coefficients": coefficients,
            "post_stratified": post_stratified}


# ---------------------------------------------------------------------------------------------------------------
# dashboard
# ---------------------------------------------------------------------------------------------------------------


def _epoch_sql(db: Session, column: str) -> str:
    if _dialect(db) == "postgresql":
        return f"extract(epoch from {column})"
    return f"(julianday({column}) - 2440587.5) * 86400.0"


def _counts_by_rater(rater: np.ndarray, index: np.ndarray, n: int) -> list[tuple[int, list[int]]]:
    """(rater id, judgments in each of the n periods) per rater, in rater id order, in one bincount (not one pass
    over every judgment per rater). `index`: each judgment's period, 0 <= index < n."""
    rater_ids, code = np.unique(rater.astype(np.int64), return_inverse=True)
    table = np.bincount(code.ravel() * n + index, minlength=len(rater_ids) * n).reshape(len(rater_ids), n)
    return list(zip(rater_ids.tolist(), table.tolist(), strict=True))


def dashboard(db: Session, project: Project, *, now: datetime | None = None, hours: int = 48, days: int = 14) -> dict:
    """Series for the admin dashboard: judgments per hour (overall and per rater) over the last `hours`, queue
    depth and ETA at the last day's pace, cumulative agreement at the end of each of the last `days` days, and
    the distribution of time per judgment."""
    return dashboard_from_inputs(dashboard_inputs(db, project), now=now, hours=hours, days=days)


def dashboard_inputs(db: Session, project: Project) -> dict:
    """Everything `dashboard` reads (the worker reads this in one short transaction and computes after it ended)."""
    data = _array(db, f"SELECT j.rater_id, {_epoch_sql(db, 'j.created_at')}, j.time_spent_ms, j.comparison_id, "
                      "j.top_completion_id, CASE WHEN c.is_gold THEN 1 ELSE 0 END FROM judgment j "
                      f"JOIN comparison c ON c.id = j.comparison_id WHERE {_COUNTED}", 6, project=project.id)  # fmt: skip
    comparisons = _comparison_arrays(db, project, completions=False)
    return {"overview": project_overview(db, project), "data": data,
            "comparisons": {"id": comparisons["id"], "options": comparisons["options"]},
            "usernames": dict(db.execute(select(User.id, User.username)).all())}  # fmt: skip


def dashboard_from_inputs(inputs: dict, *, now: datetime | None = None, hours: int = 48, days: int = 14) -> dict:
    """`dashboard` from `dashboard_inputs`: no database."""
    now = now or utcnow()
    overview, usernames = inputs["overview"], inputs["usernames"]
    rater, created, time_ms, comparison, top, is_gold = inputs["data"].T
    comparisons = inputs["comparisons"]
    top = stats.top_choice_codes(top, comparisons["options"][np.searchsorted(comparisons["id"], comparison)])
    del comparisons
    now_s = now.timestamp()
    hour_start = now_s - (now_s % 3600) - (hours - 1) * 3600
    hour_index = np.floor((created - hour_start) / 3600).astype(np.int64)
    recent = (hour_index >= 0) & (hour_index < hours)
    per_hour = np.bincount(hour_index[recent], minlength=hours)[:hours]
    hour_labels = [datetime.fromtimestamp(hour_start + 3600 * i, UTC).strftime("%d %H:00") for i in range(hours)]
    per_rater = {usernames.get(rater_id, f"user {rater_id}"): counts
                 for rater_id, counts in _counts_by_rater(rater[recent], hour_index[recent], hours)}  # fmt: skip
    last_day = int(np.sum(created >= now_s - 86400))
    rate_per_hour = last_day / 24.0
    eta_hours = overview["queue_depth"] / rate_per_hour if rate_per_hour > 0 else None

    day_end = now_s - (now_s % 86400) + 86400 - 86400 * np.arange(days)[::-1]
    regular = is_gold == 0
    agreement_series = []
    for end in day_end:
        upto = regular & (created < end)
        result = stats.krippendorff_alpha(comparison[upto].astype(np.int64), rater[upto].astype(np.int64), top[upto])
        agreement_series.append({"day": datetime.fromtimestamp(end - 1, UTC).strftime("%m-%d"), "alpha": result.alpha,
                                 "units": result.units,
                                 "date": datetime.fromtimestamp(end - 1, UTC).date().isoformat()})  # fmt: skip
    day_index = np.floor((created - (day_end[0] - 86400)) / 86400).astype(np.int64)
    in_days = (day_index >= 0) & (day_index < days)
    per_day_by_rater = {usernames.get(rater_id, f"user {rater_id}"): counts
                        for rater_id, counts in _counts_by_rater(rater[in_days], day_index[in_days], days)}  # fmt: skip

    timed = time_ms[~np.isnan(time_ms)] / 1000.0
    if len(timed):
        top_edge = max(1.0, float(np.percentile(timed, 99)))
        counts, edges = np.histogram(np.clip(timed, 0, top_edge), bins=20, range=(0.0, top_edge))
        median = float(np.median(timed))
    else:
        counts, edges, median = np.zeros(20, dtype=np.int64), np.linspace(0, 60, 21), None
    return {
        "overview": overview,
        "hours": hour_labels,
        "judgments_per_hour": per_hour.tolist(),
        "judgments_per_hour_by_rater": per_rater,
        "hour_starts": [datetime.fromtimestamp(hour_start + 3600 * i, UTC).isoformat() for i in range(hours)],
        "days": [datetime.fromtimestamp(end - 86400, UTC).date().isoformat() for end in day_end],
        "judgments_per_day_by_rater": per_day_by_rater,
        "judgments_last_24h": last_day,
        "queue_depth": overview["queue_depth"],
        "eta_hours": eta_hours,
        "agreement_over_time": agreement_series,
        "time_histogram": {"counts": counts.tolist(), "edges_s": edges.tolist(), "median_s": median},
    }


# ---------------------------------------------------------------------------------------------------------------
# review queue of flagged judgments
# ---------------------------------------------------------------------------------------------------------------


def _flagged_filter():
    # JSON lists serialize the same way on both databases ('["unsafe", ...]'), so a text match is portable.
    as_text = func.cast(Judgment.flags, String)
    return or_(*(as_text.like(f'%"{flag}"%') for flag in REVIEW_FLAGS))


def review_queue(db: Session, project: Project, *, resolved: bool = False, limit: int = 100) -> list[dict]:
    """Flagged judgments (unsafe, wrong, all_bad) still open (or, with resolved=True, already resolved)."""
    query = (
        select(Judgment, FlagReview, User.username)
        .outerjoin(FlagReview, FlagReview.judgment_id == Judgment.id)
        .outerjoin(User, User.id == Judgment.rater_id)
        .where(Judgment.project_id == project.id, _flagged_filter())
        .where(FlagReview.id.is_not(None) if resolved else FlagReview.id.is_(None))
        .order_by(Judgment.id.desc() if resolved else Judgment.id)
        .limit(limit)
    )
    return [{"judgment_id": j.id, "comparison_id": j.comparison_id, "rater": username, "flags": j.flags,
             "rationale": j.rationale, "created_at": j.created_at,
             "resolution": review.resolution if review else None, "note": review.note if review else None}
            for j, review, username in db.execute(query)]  # fmt: skip


def resolve_flag(db: Session, judgment_id: int, resolution: str, note: str, actor: User) -> FlagReview:
    """Record an admin's resolution of a flagged judgment (once; a second resolution is refused)."""
    if resolution not in REVIEW_RESOLUTIONS:
        raise Unprocessable(f"Unknown resolution {resolution!r}; use one of {list(REVIEW_RESOLUTIONS)}.")
    judgment = db.get(Judgment, judgment_id)
    if judgment is None or not set(judgment.flags or []) & set(REVIEW_FLAGS):
        raise NotFound(f"No flagged judgment {judgment_id}.")
    existing = db.scalar(select(FlagReview).where(FlagReview.judgment_id == judgment_id))
    if existing is not None:
        raise Conflict(f"Judgment {judgment_id} was already resolved ({existing.resolution}).")
    review = FlagReview(judgment_id=judgment_id, project_id=judgment.project_id, resolution=resolution,
                        note=note.strip()[:2000], resolved_by_id=actor.id)  # fmt: skip
    db.add(review)
    db.flush()
    audit(db, actor, "judgment.review", "judgment", judgment_id, resolution=resolution)
    return review



# ---------------------------------------------------------------------------------------------------------------
# queue control: batch priorities, pause and resume
# ---------------------------------------------------------------------------------------------------------------


def batch_priorities(db: Session, project: Project) -> list[dict]:
    """Per prompt batch: comparisons, still open, and the highest priority among them (None = no batch name)."""
    open_ = case((Comparison.n_judgments < Comparison.required, 1), else_=0)
    rows = db.execute(
        select(Comparison.batch, func.count(), func.coalesce(func.sum(open_), 0), func.max(Comparison.priority))
        .where(Comparison.project_id == project.id, ~Comparison.is_gold)
        .group_by(Comparison.batch)
        .order_by(Comparison.batch)
    ).all()
    return [{"batch": b, "comparisons": n, "open": int(o), "priority": p} for b, n, o, p in rows]


def set_batch_priority(db: Session, project: Project, batch: str | None, priority: int, actor: User | None) -> int:
    """Give every comparison (and prompt) of a batch this priority: the queue serves higher priorities first.
    `batch` None means the comparisons without a batch name. Returns the comparisons changed."""
    from sqlalchemy import update

    from app.models import Prompt

    if not -1000 <= priority <= 1000:
        raise Unprocessable("Priorities range from -1000 to 1000.")
    match = Comparison.batch.is_(None) if batch is None else Comparison.batch == batch
    changed = db.execute(
        update(Comparison).where(Comparison.project_id == project.id, match).values(priority=priority)
    ).rowcount
    if not changed:
        raise NotFound(f"No comparisons in batch {batch!r} of this project.")
    prompt_match = Prompt.batch.is_(None) if batch is None else Prompt.batch == batch
    db.execute(update(Prompt).where(Prompt.project_id == project.id, prompt_match).values(priority=priority))
    audit(db, actor, "project.batch_priority", "project", project.id, batch=batch, priority=priority)
    return changed


def set_status(db: Session, project: Project, status: str, actor: User | None) -> None:
    """Pause (raters get no new tasks), resume or archive a project."""
    from app.models import ProjectStatus

    if status not in set(ProjectStatus):
        raise Unprocessable(f"Unknown status {status!r}; use one of {[s.value for s in ProjectStatus]}.")
    project.status = status
    audit(db, actor, "project.status", "project", project.id, status=status)
