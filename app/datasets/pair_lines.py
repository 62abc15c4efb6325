"""PostgreSQL writes most of a large pairs export itself: the JSONL line of a comparison with one decisive vote.

A standard pairs export of ten million comparisons spent about 25 us of Python a pair (a judgment row, the batch's
lookups, the row dict, orjson) beside 15 us of PostgreSQL. Here the statement that reads a range of judgments also
builds, for each comparison whose one counted vote ranks two plain options one over the other, its line up to the
last key's value: `{"agreement":1.0,...,"sources":["human"],"weight":`. The weight is the only value the database
does not have (the rater weights are fitted in Python), and "weight" sorts last, so Python appends it with the closing
brace (`weight_suffixes`) and the line is written as it came.

One definition of the row: `formats.single_vote_pair_row` (and pair_rows behind it). The SQL here is stricter than
that function, never looser: where any condition is not plainly met (a chat prompt, an AI vote with a confidence,
ids that are not small canonical integers, a comparison of more than two options, a continuation, a completion of
another prompt, an edit, an "unsafe" flag anywhere on the comparison, a labelled rater, an odd weight) the line is
NULL and the comparison takes the Python path, which decides as before (two options of one prompt whose ids are
small integers and a vote [[a], [b]] is what the rating page stores). tests/datasets/test_pair_fast_path.py holds
the lines to `canonical_json_line` of the general path's rows, byte for byte, on data that hits each of those cases.
The escaping is PostgreSQL's `to_json(text)`, which writes what orjson writes for every character (the same tests,
control characters and non-ASCII included); it is used only where the server encoding is UTF8 (`usable`)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from sqlalchemy import Connection, literal_column

NO_ROW = b""
"""`weight_suffixes`' value for a rater whose weight is zero: pair_rows makes no row of that vote."""

_RANKING, _OPTIONS = "judgment.ranking", "comparison.completion_ids"
_FIRST, _SECOND = f"({_OPTIONS} ->> 0)", f"({_OPTIONS} ->> 1)"


def pair_line_sql(*, exclude_unsafe: bool, edits: bool) -> str:
    """The line column's SQL over `judgment` joined to `comparison`, `prompt` and (outer) `ai_verdict` (the export's
    judgment query, app.datasets.service._judgment_query): text, or NULL for the Python path.

    The shape checks compare texts (JSONB's own text form): the comparison's options are exactly two different
    small integers `[a, b]` and the vote is `[[a], [b]]` or `[[b], [a]]`, so the casts below cannot fail and both
    ranked ids are the comparison's only options. One subquery reads both completions (of this prompt, neither
    continuing the conversation; a missing one makes it NULL) and builds the line with one `concat` (chained `||`
    copies the growing text at each step). Everything `concat` would skip as NULL is ruled out in the CASE."""
    conditions = [
        # A hint, not the rule: a comparison of several votes is not worth a line. Whether it has one counted vote
        # after the export's filters, the caller sees in the rows (service.iter_pair_lines).
        "comparison.n_judgments <= 1",
        "NOT prompt.is_chat",
        "jsonb_typeof(prompt.messages -> 0 -> 'content') = 'string'",
        "comparison.is_gold IS NOT NULL",
        "(judgment.source <> 'ai' OR ai_verdict.confidence IS NULL)",
        rf"{_OPTIONS}::text ~ '^\[[0-9]{{1,9}}, [0-9]{{1,9}}\]$'",
        f"{_FIRST} <> {_SECOND}",
        f"{_RANKING}::text IN ('[[' || {_FIRST} || '], [' || {_SECOND} || ']]', "
        f"'[[' || {_SECOND} || '], [' || {_FIRST} || ']]')",
    ]  # fmt: skip
    if exclude_unsafe:  # the Python path's pre-filter (service._ExportStream.load): any judgment of the comparison
        conditions.append("NOT EXISTS (SELECT 1 FROM judgment u WHERE u.comparison_id = judgment.comparison_id "
                          """AND u.flags::text LIKE '%"unsafe"%')""")  # fmt: skip
    if edits:
        conditions.append("NOT EXISTS (SELECT 1 FROM completion e WHERE e.judgment_id = judgment.id "
                          "AND e.source = 'human_edit')")  # fmt: skip
    line = f"""(SELECT concat('{{"agreement":1.0,"ai_confidence":null,"category":',
        CASE WHEN jsonb_typeof(prompt.metadata -> 'category') = 'string' AND prompt.metadata ->> 'category' <> ''
             THEN to_json(prompt.metadata ->> 'category')::text ELSE 'null' END,
        ',"chosen":', to_json(x.text)::text, ',"chosen_id":', x.id,
        ',"chosen_model":', coalesce(to_json(x.model_name::text)::text, 'null'),
        ',"comparison_id":', judgment.comparison_id, ',"edited":false,"group_chosen":[],"group_rejected":[],"is_gold":',
        CASE WHEN comparison.is_gold THEN 'true' ELSE 'false' END,
        ',"margin":1.0,"n_votes":1,"prompt":', to_json(prompt.messages -> 0 ->> 'content')::text,
        ',"prompt_id":', prompt.id,
        ',"rejected":', to_json(y.text)::text, ',"rejected_id":', y.id,
        ',"rejected_model":', coalesce(to_json(y.model_name::text)::text, 'null'),
        ',"sources":[', to_json(judgment.source::text)::text, '],"weight":')
      FROM completion x, completion y
      WHERE x.id = ({_RANKING} -> 0 ->> 0)::int AND x.prompt_id = comparison.prompt_id
        AND x.metadata -> 'messages' IS NULL
        AND y.id = ({_RANKING} -> 1 ->> 0)::int AND y.prompt_id = comparison.prompt_id
        AND y.metadata -> 'messages' IS NULL)"""
    return f"CASE WHEN {' AND '.join(conditions)} THEN {line} END"


def pair_line_column(*, exclude_unsafe: bool, edits: bool):
    return literal_column(pair_line_sql(exclude_unsafe=exclude_unsafe, edits=edits))


def usable(connection: Connection) -> bool:
    """PostgreSQL with a UTF8 server encoding (where `to_json` writes non-ASCII characters as orjson does)."""
    if connection.dialect.name != "postgresql":
        return False
    return connection.exec_driver_sql("SHOW server_encoding").scalar() == "UTF8"


def weight_suffixes(weights: dict[Any, float], labelled: set[Any]) -> tuple[dict[Any, bytes | None], bytes]:
    """rater id -> the bytes that end a line of their vote (the weight as orjson writes `float(weight)`, `}` and the
    newline), NO_ROW for a zero weight, None where the Python path must decide (a labelled rater: the group columns;
    a negative, infinite or NaN weight: pair_rows refuses it); and the ending for anyone else (weight 1.0)."""
    suffixes: dict[Any, bytes | None] = {}
    for rater, weight in weights.items():
        if not (weight >= 0 and weight != math.inf):
            suffixes[rater] = None
        elif weight == 0:
            suffixes[rater] = NO_ROW
        else:
            suffixes[rater] = orjson.dumps(float(weight)) + b"}\n"
    for rater in labelled:
        suffixes[rater] = None
    return suffixes, orjson.dumps(1.0) + b"}\n"
