"""Dataset snapshots: request (a row + an export job), build (stream judgments out of the database into
an atomic snapshot directory), read, delete. Services never commit; build runs in the worker."""

from __future__ import annotations

import contextlib
import gc
import secrets
import shutil
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import LargeBinary, Text, cast, exists, false, func, literal, select, true
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from app import __version__
from app.api import get_or_404
from app.audit import audit
from app.datasets.export_parts import (
    PARALLEL_MIN_COMPARISONS,
    ExportPart,
    PartRunner,
    RowTally,
    export_processes,
    part_files,
    plan_parts,
    write_result,
)
from app.datasets.formats import (
    NOT_SIMPLE,
    Edit,
    JudgedComparison,
    JudgmentVote,
    _keep,
    arrow_schema,
    continues_the_conversation,
    conversation_id,
    export_rows,
    single_vote_pair_row,
    split_for_prompt,
    split_key,
    split_test_below,
)
from app.datasets.pair_lines import pair_line_column, weight_suffixes
from app.datasets.pair_lines import usable as pair_lines_usable
from app.datasets.schemas import DatasetCreate, DatasetOut
from app.datasets.snapshot_files import (
    MANIFEST_NAME,
    SnapshotFileNotFoundError,
    SnapshotTamperedError,
    SnapshotWriter,
    UnsafeSnapshotPathError,
    safe_snapshot_file,
    verify_snapshot,
)
from app.datasets.steps_export import step_export_rows
from app.datasets.stepwise import stepwise_arrow_schema
from app.db import json_loads, read_ahead, write_transaction
from app.errors import BadRequest, Conflict, EmptyExport, NotFound, Unprocessable
from app.imports.messages import CONTINUATION_KEY, is_plain
from app.jobs.service import create_job
from app.judgments.selections import counted
from app.models import (
    AIVerdict,
    Comparison,
    Completion,
    DatasetSnapshot,
    Job,
    JobKind,
    JobStatus,
    Judgment,
    ModelVersion,
    Project,
    Prompt,
    User,
    utcnow,
)
from app.models.comparison import CONTINUES_SQL
from app.store import download_response, get_store, is_url, open_location
from app.webhooks.service import emit

BATCH_COMPARISONS = 2000
PAIRS_FAST_PATH = True
"""A standard pairs export's rows come from iter_pair_rows (the same rows as the general path; tests switch it off to
compare)."""
RANGE_WIDEST = 8
"""On PostgreSQL an export reads the judgments of a range of comparison ids at a time (`_ExportStream._ranges`): a
batch's worth of ids, up to this many batches' worth where the project's comparisons are sparse."""
PAIR_LINES = True
"""On PostgreSQL the database writes most lines of a standard pairs export (iter_pair_lines; tests switch it off to
compare)."""
PAIR_BATCH_COMPARISONS = 10_000
"""The pairs fast path's batches (iter_pair_rows): larger, so a 10M-pair export makes a fifth of the round trips
(under load each waits for the server's turn); a few batches in memory at once are tens of MB."""


def parse_spec(params: dict) -> DatasetCreate:
    try:
        return DatasetCreate.model_validate(params or {})
    except ValidationError as error:
        raise Unprocessable(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        ) from error


def snapshot_location(snapshot: DatasetSnapshot) -> str:
    """Where the snapshot lives in the artifact store (app.store: a local path or a URL): fixed when it is requested
    (an id alone could be reused by SQLite)."""
    if snapshot.path:
        return snapshot.path
    return get_store().location("datasets", f"{snapshot.id}-{secrets.token_hex(4)}")


def snapshot_dir(snapshot: DatasetSnapshot) -> Path:
    """A local directory with the snapshot's files: its own directory on a local store, else this machine's cached
    copy of the published snapshot (app.store: downloaded once, keyed by content hash)."""
    location = snapshot_location(snapshot)
    return Path(location) if not is_url(location) else open_location(location).local_copy()


def request_snapshot(db: Session, project: Project, params: dict, actor: User | None) -> DatasetSnapshot:
    """A snapshot row plus the export job that will build it (the request returns at once)."""
    spec = parse_spec(params)
    snapshot = DatasetSnapshot(project_id=project.id, format=spec.format, spec=spec.model_dump(mode="json"),
                               status="building", created_by_id=actor.id if actor else None)  # fmt: skip
    db.add(snapshot)
    db.flush()
    job = create_job(db, JobKind.export, project_id=project.id, params={"dataset_id": snapshot.id}, dataset_id=snapshot.id,
                     actor=actor)  # fmt: skip
    snapshot.job_id = job.id
    snapshot.path = snapshot_location(snapshot)
    audit(db, actor, "dataset.request", "dataset", snapshot.id, format=spec.format)
    return snapshot


def get_snapshot(db: Session, dataset_id: int) -> DatasetSnapshot:
    return get_or_404(db, DatasetSnapshot, dataset_id, "dataset")


def _as_text(column):
    """A JSON column as its text, for `json_loads` (orjson): the driver's JSON loader costs several
    microseconds a value, which is most of a million-row export's time."""
    return cast(column, Text)


def _judgment_query(project: Project, spec: DatasetCreate, *columns, with_prompt: bool = False):
    """The export's judgments (the spec's filters), in (comparison, judgment) order: by default the columns
    `_ExportStream.judged` reads; `columns` instead over judgment, comparison, ai_verdict (and prompt)."""
    filters = spec.filters
    query = (
        select(*(columns or (Judgment.comparison_id, Judgment.rater_id, _as_text(Judgment.ranking),
                             _as_text(Judgment.flags), Judgment.source, Judgment.created_at,
                             Judgment.guideline_version, Judgment.id, _as_text(Judgment.attributes),
                             AIVerdict.confidence)))
        .select_from(Judgment)
        .join(Comparison, Comparison.id == Judgment.comparison_id)
        .outerjoin(AIVerdict, AIVerdict.judgment_id == Judgment.id)  # an AI judgment's confidence
        # the counted judgments of the asked-for sources (app.judgments.selections): an admin who resolved a flag as
        # "excluded" took the judgment out of every export, a voided battle never enters one
        .where(counted(*filters.sources, project_id=project.id))
        .order_by(Judgment.comparison_id, Judgment.id)
    )  # fmt: skip
    if with_prompt:
        query = query.join(Prompt, Prompt.id == Comparison.prompt_id)
    if filters.date_from:
        query = query.where(Judgment.created_at >= filters.date_from)
    if filters.date_to:
        query = query.where(Judgment.created_at < filters.date_to)
    if filters.include_raters is not None:
        ids = select(User.id).where(User.username.in_(filters.include_raters))
        query = query.where(Judgment.rater_id.in_(ids))
    if filters.exclude_raters:
        ids = select(User.id).where(User.username.in_(filters.exclude_raters))
        query = query.where(Judgment.rater_id.is_(None) | Judgment.rater_id.not_in(ids))
    if filters.exclude_gold:
        query = query.where(~Comparison.is_gold)
    if filters.batches is not None:
        query = query.where(Comparison.batch.in_(filters.batches))
    if filters.exclude_prompt_ids:
        query = query.where(Comparison.prompt_id.not_in(filters.exclude_prompt_ids))
    return query


def _split_is_test(unit, seed: int, test_fraction: float):
    """PostgreSQL: whether `split_for_prompt(unit)` is "test", computed by the database (sha256 of the same bytes, its
    first 8 compared with `split_test_below`: bytea compares as unsigned big-endian). A 10M-row export spends
    several seconds of Python on the hash otherwise. Held to the function by tests/datasets/test_pair_fast_path.py."""
    below = split_test_below(test_fraction)
    if below == 0:
        return false()
    if below >= 2**64:
        return true()
    key = literal(split_key(seed, ""), LargeBinary).op("||", return_type=LargeBinary)(
        func.convert_to(cast(unit, Text), "UTF8"))  # fmt: skip
    return func.substr(func.sha256(key, type_=LargeBinary), 1, 8) < literal(below.to_bytes(8, "big"), LargeBinary)


@dataclass(slots=True)
class _BatchLookups:
    """What one batch of comparisons needs besides its judgments (`_load_batch`)."""

    comparisons: dict[int, tuple]
    """comparison id -> (prompt id, completion ids, is_gold, messages, is_chat, tools, category, is_test): is_test
    the prompt's side of the split when the database decided it (PostgreSQL, `_split_is_test`), else None."""
    completions: dict[int, tuple[str, str | None]]
    continuations: dict[int, list]
    edits: dict[int, list[Edit]]
    unsafe: set[int]


class _ExportStream:
    """The streamed judgments of an export, grouped into batches of comparisons, and each batch's lookups.

    One streamed query reads the judgments in comparison order; per batch of comparisons, range queries
    (`id BETWEEN first AND last`: no parameter lists) read their comparisons with prompts and the prompts'
    completions. Plain Core rows throughout, no ORM objects: this runs for every row of a million-row export."""

    def __init__(self, db: Session, project: Project, spec: DatasetCreate, weights: dict[int, float] | None,
                 batch_comparisons: int | None = None, fetch_rows: int = 5000,
                 part: ExportPart | None = None):  # fmt: skip
        self.project, self.spec, self.weights = project, spec, weights or {}
        self.batch_comparisons = batch_comparisons or BATCH_COMPARISONS
        self.fetch_rows = fetch_rows
        self.ratings = spec.format == "ratings"
        self.scales = [{"name": a["name"], "min": a.get("min", 1), "max": a.get("max", 7)}
                       for a in project.attributes or []]  # fmt: skip
        self.rater_groups = {user_id: [f"{key}={value}" for key, value in sorted(labels.items())]
                             for user_id, labels in db.execute(select(User.id, User.labels)
                                                               .where(User.labels.is_not(None)))
                             if labels}  # fmt: skip
        self.connection = db.connection()
        self.query = _judgment_query(project, spec)
        # Edits are few or none: one look for any in the project spares every batch its probe of each judgment.
        self.edits = spec.filters.include_edits and spec.format in ("pairs", "sft") and bool(db.scalar(select(exists(
            select(Completion.id).join(Judgment, Judgment.id == Completion.judgment_id)
            .where(Completion.judgment_id.is_not(None), Judgment.project_id == project.id,
                   Completion.source == "human_edit")))))  # fmt: skip
        self.watermark = self.bounds = None
        if self.connection.dialect.name == "postgresql":
            # Each statement reads one batch (thousands of rows, milliseconds): parallel workers, which PostgreSQL
            # plans for the judgments' range, cost more CPU to start than they save. Until the caller's commit.
            self.connection.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            # nor compiled expressions: JIT costs tens of milliseconds a statement, more than it saves on one range
            self.connection.exec_driver_sql("SET LOCAL jit = off")
        if part is not None:  # one process's share of an export (app.datasets.export_parts): PostgreSQL only
            self.watermark, self.bounds = part.watermark, (part.low, part.high)
        elif self.connection.dialect.name == "postgresql":
            # The judgments are read in comparison id ranges (`_ranges`), each range its own statement: the newest
            # judgment now bounds them all, so judgments written during the export are not in it.
            self.watermark = db.scalar(select(func.max(Judgment.id))) or 0
            self.bounds = db.execute(select(func.min(Comparison.id), func.max(Comparison.id))
                                     .where(Comparison.project_id == project.id)).one()  # fmt: skip

    def _rows(self) -> Iterator:
        """The judgment rows in (comparison, judgment) order. SQLite: one streamed query. PostgreSQL: no cursor held
        open across the export (its snapshot would be held for minutes at ten million judgments, and every claim
        of the rating queue would walk the dead index entries it keeps alive): `_ranges`."""
        if self.watermark is None:
            # Options on the statement, not the connection: Connection.execution_options changes the connection.
            yield from self.connection.execute(self.query.execution_options(yield_per=self.fetch_rows))
            return
        yield from self._ranges()

    def _ranges(self) -> Iterator:
        """PostgreSQL: the judgments of one range of comparison ids at a time (`range_rows`), in order."""
        for _, rows in self.range_rows(self.query):
            yield from rows

    def in_range(self, query, low: int, high: int):
        """`query` (a judgment query) for the comparisons low..high, bounded by the watermark. The range on both sides
        of the join: PostgreSQL does not carry it across, and hashes every comparison otherwise."""
        return query.where(Judgment.comparison_id.between(low, high), Comparison.id.between(low, high),
                           Judgment.id <= self.watermark)  # fmt: skip

    def range_rows(self, query) -> Iterator[tuple[int, list]]:
        """PostgreSQL: (comparisons judged, rows) of `query` (a judgment query) for one range of comparison ids at a
        time (about a batch of comparisons; the range widens where the project's comparisons are sparse, up to
        RANGE_WIDEST batches), each range one statement fetched whole. Under READ COMMITTED each statement takes its
        own snapshot and drops it when it ends, so between statements the export's connection holds none
        (pg_stat_activity.backend_xmin is null), even inside its caller's transaction, which the caller owns (and
        whose uncommitted rows it sees, as before). Bounded by the watermark: the same rows as one ordered query on a
        database nobody writes to."""
        first, last = self.bounds
        if first is None:
            return
        size = self.batch_comparisons
        low, width = first, size
        while low <= last:
            high = min(last, low + width - 1)
            rows = self._all(self.in_range(query, low, high))
            judged = len({row[0] for row in rows})
            yield judged, rows
            del rows
            low = high + 1
            if judged < size // 2:  # sparse here (other projects' comparisons between): wider ranges
                width = min(2 * width, RANGE_WIDEST * size)
            elif judged > size and width > size:
                width //= 2

    def batches(self) -> Iterator[dict[int, list]]:
        """comparison id -> its judgment rows, BATCH_COMPARISONS comparisons at a time, in comparison id order."""
        stream = self._rows()
        batch: dict[int, list] = {}
        size = self.batch_comparisons
        for row in stream:
            judgments = batch.get(row[0])
            if judgments is None:
                if len(batch) >= size:
                    yield batch
                    batch = {}
                judgments = batch[row[0]] = []
            judgments.append(row)
        if batch:
            yield batch

    def _all(self, statement) -> list:
        """A batch query's rows in one fetch. On PostgreSQL the driver's own tuples: these statements' columns
        (integers, booleans, text) come out of psycopg as SQLAlchemy would give them, without a Row object per row."""
        if self.connection.dialect.name != "postgresql":
            return self.connection.execute(statement).all()  # SQLite: SQLAlchemy makes 0/1 booleans
        # render_postcompile: a filter's IN list (sources, batches) as literal parameters for the raw cursor
        compiled = statement.compile(dialect=self.connection.dialect, compile_kwargs={"render_postcompile": True})
        with self.connection.connection.cursor() as cursor:
            cursor.execute(str(compiled), compiled.params)
            return cursor.fetchall()

    def load(self, batch: dict[int, list]) -> _BatchLookups:
        connection, project, spec, weights = self.connection, self.project, self.spec, self.weights
        first, last = min(batch), max(batch)
        in_range = (Comparison.project_id == project.id) & Comparison.id.between(first, last)
        # The batch's comparisons, then their prompts and the prompts' completions by prompt id range as well (an
        # index range scan: the prompt ids of a batch of comparisons are usually close together; joined on the ids
        # alone PostgreSQL may hash a sequential scan of the whole table, for every batch). `.all()`: the batch's
        # rows in one fetch (iterating a result fetches row by row, a call per row).
        batch_comparisons = self._all(
            select(Comparison.id, Comparison.prompt_id, _as_text(Comparison.completion_ids), Comparison.is_gold)
            .where(in_range))  # fmt: skip
        prompt_ids = [row[1] for row in batch_comparisons]  # not empty: the batch's judgments have comparisons
        is_test = _split_is_test(Prompt.id, spec.split.seed, spec.split.test_fraction) \
            if connection.dialect.name == "postgresql" and spec.format == "pairs" else literal(None)  # iter_pair_rows
        prompts = {
            prompt_id: (json_loads(messages), is_chat, json_loads(tools) if tools and tools != "null" else None,
                        json_loads(category) if category and category != "null" else None, test)
            for prompt_id, messages, is_chat, tools, category, test in self._all(
                select(Prompt.id, _as_text(Prompt.messages), Prompt.is_chat, _as_text(Prompt.meta["tools"]),
                       _as_text(Prompt.meta["category"]), is_test)
                .where(Prompt.id.between(min(prompt_ids), max(prompt_ids)),
                       Prompt.id.in_(select(Comparison.prompt_id).where(in_range))))
        }  # fmt: skip
        comparisons = {cid: (prompt_id, json_loads(completion_ids), is_gold, *prompts[prompt_id])
                       for cid, prompt_id, completion_ids, is_gold in batch_comparisons}  # fmt: skip
        completions, continuations = {}, {}
        for completion_id, text, model_name, continuation in self._all(
                select(Completion.id, Completion.text, Completion.model_name,
                       _as_text(Completion.meta[CONTINUATION_KEY]))
                .where(Completion.prompt_id.between(min(prompt_ids), max(prompt_ids)),
                       Completion.prompt_id.in_(select(Comparison.prompt_id).where(in_range)))):  # fmt: skip
            completions[completion_id] = (text, model_name)
            if continuation and continuation != "null":  # absent: NULL (PostgreSQL) or 'null' (SQLite)
                continuations[completion_id] = json_loads(continuation)
        edits: dict[int, list] = {}
        if self.edits:
            kept = {row[7] for judgments in batch.values() for row in judgments}
            for cid, judgment_id, completion_id, text, parent_id, rater_id, ranking in connection.execute(
                select(Judgment.comparison_id, Judgment.id, Completion.id, Completion.text, Completion.parent_id,
                       Completion.author_id, _as_text(Judgment.ranking))
                .join(Judgment, Judgment.id == Completion.judgment_id)
                .where(Judgment.comparison_id.between(first, last), Judgment.project_id == project.id,
                       Completion.source == "human_edit", Completion.rejected_at.is_(None))
                .order_by(Completion.id)):
                if judgment_id in kept:
                    edits.setdefault(cid, []).append(
                        Edit(completion_id, text, parent_id, rater_id, json_loads(ranking), weights.get(rater_id, 1.0)))
        unsafe = set()
        if spec.filters.exclude_unsafe:
            # Only the rows whose flags may hold "unsafe" leave the database (the list is parsed here, as before).
            flagged = select(Judgment.comparison_id, _as_text(Judgment.flags)).where(
                Judgment.comparison_id.between(first, last), _as_text(Judgment.flags).like('%"unsafe"%'))
            if self.watermark is not None:  # a judgment written during the export is not in it
                flagged = flagged.where(Judgment.id <= self.watermark)
            flagged = connection.execute(flagged)
            unsafe = {cid for cid, flags in flagged if flags and "unsafe" in json_loads(flags)}
        return _BatchLookups(comparisons, completions, continuations, edits, unsafe)

    def judged(self, cid: int, judgments: list, lookups: _BatchLookups) -> JudgedComparison:
        """One comparison of a batch with its votes (the general path of every format)."""
        weights, ratings, completions, continuations = self.weights, self.ratings, lookups.completions, \
            lookups.continuations
        prompt_id, completion_ids, is_gold, messages, is_chat, tools, category, _ = lookups.comparisons[cid]
        votes = [
            JudgmentVote(rater_id, json_loads(ranking), weights.get(rater_id, 1.0),
                         json_loads(flags) if flags and flags != "[]" else [], source, created_at,
                         guideline_version, json_loads(attributes) if ratings and attributes else {}, confidence)
            for _, rater_id, ranking, flags, source, created_at, guideline_version, _, attributes, confidence
            in judgments
        ]  # fmt: skip
        return JudgedComparison(
            comparison_id=cid,
            prompt_id=prompt_id,
            prompt=messages if is_chat else messages[0]["content"],
            completions={i: completions[i] for i in completion_ids},
            continuations={i: continuations[i] for i in completion_ids if i in continuations},
            tools=tools if isinstance(tools, list) else None,
            is_gold=is_gold,
            judgments=votes,
            edits=[e for e in lookups.edits.get(cid, ()) if e.parent_id is None or e.parent_id in completion_ids],
            scales=self.scales,
            rater_groups={v.rater_id: self.rater_groups[v.rater_id] for v in votes if v.rater_id in self.rater_groups},
            category=category if isinstance(category, str) and category else None,
        )


def iter_judged_comparisons(db: Session, project: Project, spec: DatasetCreate,
                            weights: dict[int, float] | None = None,
                            on_batch: Callable[[int], None] | None = None) -> Iterator[JudgedComparison]:  # fmt: skip
    """Stream comparisons with their (filtered) judgments, in comparison id order, a batch at a time
    (`_ExportStream`); `on_batch(comparisons done)` after each batch."""
    stream = _ExportStream(db, project, spec, weights)
    done = 0
    for batch in stream.batches():
        lookups = stream.load(batch)
        for cid, judgments in batch.items():
            if cid not in lookups.unsafe:
                yield stream.judged(cid, judgments, lookups)
        done += len(batch)
        if on_batch:
            on_batch(done)


def _prefetched(stream: _ExportStream) -> Iterator[tuple[dict[int, list], _BatchLookups]]:
    """`stream`'s batches with their lookups, read ahead (`app.db.read_ahead`)."""
    return read_ahead(((batch, stream.load(batch)) for batch in stream.batches()), stream.connection)


def _comparison_pair_rows(stream: _ExportStream, cid: int, judgments: list, lookups: _BatchLookups,
                          on_comparison: Callable[[Iterable[int], datetime | None], None] | None,
                          ) -> Iterator[tuple[str, dict]]:  # fmt: skip
    """One comparison's `(split, row)`s of the standard pairs export (iter_pair_rows), keys sorted: a single
    decisive vote made into its row directly (`formats.single_vote_pair_row`), anything else through
    JudgedComparison and pair_rows. `on_comparison(guideline versions, latest judgment time)` before its rows."""
    filters, split = stream.spec.filters, stream.spec.split
    if len(judgments) == 1 and cid not in lookups.edits:
        _, rater_id, ranking, _, source, created_at, guideline_version, _, _, confidence = judgments[0]
        prompt_id, completion_ids, is_gold, messages, is_chat, _, category, is_test = lookups.comparisons[cid]
        row = single_vote_pair_row(
            cid, prompt_id, completion_ids, is_gold, messages, is_chat, category, json_loads(ranking),
            stream.weights.get(rater_id, 1.0), source, confidence, lookups.completions, lookups.continuations,
            rater_id in stream.rater_groups)  # fmt: skip
        if row is not NOT_SIMPLE:
            if on_comparison:
                on_comparison((guideline_version,) if guideline_version else (), created_at or None)
            if row is not None and _keep(row, filters.min_agreement, filters.min_votes):
                if is_test is not None and not is_chat:  # the database hashed the prompt id
                    yield ("test" if is_test else "train"), row
                    return
                unit = f"conversation:{conversation_id(messages)}" if is_chat else prompt_id  # split_unit
                yield split_for_prompt(unit, seed=split.seed, test_fraction=split.test_fraction), row
            return
    jc = stream.judged(cid, judgments, lookups)
    if on_comparison:
        on_comparison((v.guideline_version for v in jc.judgments if v.guideline_version),
                      max((v.created_at for v in jc.judgments if v.created_at), default=None))
    for row_split, row in export_rows((jc,), "pairs", conversational=False, min_agreement=filters.min_agreement,
                                      min_votes=filters.min_votes, seed=split.seed,
                                      test_fraction=split.test_fraction):  # fmt: skip
        yield row_split, dict(sorted(row.items()))


def iter_pair_rows(db: Session, project: Project, spec: DatasetCreate, weights: dict[int, float] | None = None, *,
                   on_batch: Callable[[int], None] | None = None,
                   on_comparison: Callable[[Iterable[int], datetime | None], None] | None = None,
                   part: ExportPart | None = None) -> Iterator[tuple[str, dict]]:  # fmt: skip
    """The standard (not conversational) pairs export's `(split, row)`s: exactly what
    `export_rows(iter_judged_comparisons(...), "pairs", conversational=False, ...)` yields (tests/datasets/
    test_pair_fast_path.py compares them byte for byte), faster: a comparison with a single vote that ranks two of
    its completions one over the other (every pairwise judgment; most of a large export) has one row, built from
    the judgment's row directly (`_comparison_pair_rows`). `on_comparison(guideline versions, latest judgment time)`
    is called for every comparison before its rows. Every row's keys are in sorted order (and no value is a dict: a
    standard pairs row holds strings, numbers and lists of strings), so their canonical lines are orjson's without
    sorting (`pair_chunks`). On PostgreSQL `iter_pair_lines` is faster still."""
    stream = _ExportStream(db, project, spec, weights, PAIR_BATCH_COMPARISONS, fetch_rows=20_000, part=part)
    done = 0
    batches = _prefetched(stream)
    with contextlib.closing(batches):  # an error here (a cancelled job's progress) stops the reader thread first
        for batch, lookups in batches:
            for cid, judgments in batch.items():
                if cid not in lookups.unsafe:
                    yield from _comparison_pair_rows(stream, cid, judgments, lookups, on_comparison)
            done += len(batch)
            if on_batch:
                on_batch(done)


def iter_pair_lines(db: Session, project: Project, spec: DatasetCreate, weights: dict[int, float] | None,
                    tally: RowTally, *, on_batch: Callable[[int], None] | None = None,
                    part: ExportPart | None = None) -> Iterator[dict[str, tuple[bytes, int]]]:  # fmt: skip
    """PostgreSQL (`pair_lines.usable`): the standard pairs export as bytes, one range of comparisons at a time:
    split -> (the range's lines of that split, joined; how many), each line `canonical_json_line` of what
    iter_pair_rows yields, in the same order (tests/datasets/test_pair_fast_path.py). The database writes the line
    of each comparison with one decisive vote (app.datasets.pair_lines); the others take iter_pair_rows' way
    (`_comparison_pair_rows`) in the same range. `tally` counts every row as it is made."""
    stream = _ExportStream(db, project, spec, weights, PAIR_BATCH_COMPARISONS, part=part)
    suffixes, default_suffix = weight_suffixes(stream.weights, set(stream.rater_groups))
    keep = _keep({"agreement": 1.0, "n_votes": 1}, spec.filters.min_agreement, spec.filters.min_votes)
    query = _judgment_query(project, spec, Judgment.comparison_id, Judgment.rater_id, Judgment.guideline_version,
                            Judgment.created_at, _split_is_test(Prompt.id, spec.split.seed, spec.split.test_fraction),
                            pair_line_column(exclude_unsafe=spec.filters.exclude_unsafe, edits=stream.edits),
                            with_prompt=True)  # fmt: skip

    def ranges() -> Iterator[tuple[int, list, set[int], tuple | None]]:
        """(comparisons, line rows, the Python path's comparisons, their batch and lookups or None) per range (the
        reader thread)."""
        for judged, rows in stream.range_rows(query):
            rest, previous = set(), None  # the Python path's comparisons: no line, several votes, or an odd rater
            for row in rows:
                if row[0] == previous or row[5] is None or suffixes.get(row[1], default_suffix) is None:
                    rest.add(row[0])
                previous = row[0]
            fallback = None
            if rest:
                batch: dict[int, list] = {}
                for row in stream._all(stream.in_range(stream.query, min(rest), max(rest))):
                    if row[0] in rest:
                        batch.setdefault(row[0], []).append(row)
                if batch:
                    fallback = batch, stream.load(batch)
            yield judged, rows, rest, fallback

    on_comparison, count = tally.on_comparison, tally.count
    done = 0
    chunks = read_ahead(ranges(), stream.connection)
    with contextlib.closing(chunks):  # an error here (a cancelled job's progress) stops the reader thread first
        for judged, rows, rest, fallback in chunks:
            others: dict[int, list[tuple[str, bytes]]] = {}
            if fallback is not None:
                batch, lookups = fallback
                for cid, judgments in batch.items():
                    if cid not in lookups.unsafe:
                        made = others[cid] = []
                        for split, row in _comparison_pair_rows(stream, cid, judgments, lookups, on_comparison):
                            made.append((split, orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)))  # keys sorted
                            count()
            lines: dict[str, list[bytes]] = {"train": [], "test": []}
            train, test = lines["train"], lines["test"]
            for cid, rater_id, version, created_at, is_test, line in rows:
                if cid in rest:
                    if cid in others:  # its first row: the Python path's rows of the comparison
                        for split, data in others.pop(cid):
                            lines[split].append(data)
                    continue
                on_comparison((version,) if version else (), created_at or None)
                suffix = suffixes.get(rater_id, default_suffix)
                if suffix and keep:  # NO_ROW (b""): a zero weight
                    (test if is_test else train).append(line.encode() + suffix)
                    count()
            yield {split: (b"".join(made), len(made)) for split, made in lines.items() if made}
            done += judged
            if on_batch:
                on_batch(done)


def has_multi_message_chats(db: Session, project: Project) -> bool:
    """True when some prompt of the project is a chat that is more than one user message (a system message, or
    several turns), or some completion continues the conversation past its prompt: neither can be a standard (string)
    prompt and completion."""
    rows = db.execute(select(_as_text(Prompt.messages)).where(Prompt.project_id == project.id, Prompt.is_chat)
                      .execution_options(yield_per=2000))  # fmt: skip
    for (messages,) in rows:
        parsed = json_loads(messages)
        if len(parsed) != 1 or parsed[0].get("role") != "user":
            return True
    # A continuation that goes on with more user turns (a multi-turn battle) answers a history, not the prompt alone.
    # The partial index's own predicate first (CONTINUES_SQL: only completion in the FROM, so `metadata` is its).
    continuations = db.execute(
        select(_as_text(Completion.meta[CONTINUATION_KEY]))
        .where(sql_text(CONTINUES_SQL[db.get_bind().dialect.name]),
               Completion.prompt_id.in_(select(Prompt.id).where(Prompt.project_id == project.id)),
               _as_text(Completion.meta[CONTINUATION_KEY]).like('%"user"%'))
        .execution_options(yield_per=2000))  # fmt: skip
    return any(continues_the_conversation(json_loads(text)) for (text,) in continuations if text)


def _has_rich_messages(row: dict) -> bool:
    """Whether a conversational row has messages beyond {role, content} (tool calls and results, reasoning), which
    the fixed Arrow schema of `arrow_schema` does not describe (a tool's arguments have any shape)."""
    return any(isinstance(value, list) and value and isinstance(value[0], dict) and not is_plain(value)
               for value in row.values())  # fmt: skip


def resolve_conversational(db: Session, project: Project, spec: DatasetCreate) -> bool:
    """The spec's explicit choice, else "auto": message lists exactly when a prompt needs them."""
    if spec.conversational is not None:
        return spec.conversational
    return has_multi_message_chats(db, project)


def rater_weights(db: Session, project: Project) -> dict[int, float]:
    """Rater reliability from the quality statistics (1.0 for anyone without an estimate).

    For a large project (app.quality.figures) whose cached statistics are current (the worker computed them after the
    last judgment, review and void: the same marker), the cached per-rater values are those numbers, from the same
    fit on the same rows, and the export reads them. Otherwise it fits them here (app.quality.service.rater_reliability:
    a range of comparisons at a time, so its memory is one range's columns plus a few bytes a judgment of a
    comparison with several votes, not every judgment's columns)."""
    from app.models.tally import ProjectFigures
    from app.quality import markers

    if markers.is_large(db, project.id):
        cached = db.get(ProjectFigures, (project.id, "stats"))
        if cached is not None and cached.marker == markers.change_marker(db, project.id):
            return {rater["user_id"]: rater["reliability"] for rater in (cached.figures or {}).get("raters", [])
                    if rater.get("reliability") is not None}  # fmt: skip
    from app.quality.service import rater_reliability  # the statistics code (scipy): only to fit them here

    return rater_reliability(db, project)


def _mostly_single_votes(db: Session, project: Project, sample: int = 10_000) -> bool:
    """Whether most of the project's comparisons (its first `sample`) do not count several judgments: where the
    database writes lines. With several votes a comparison every one takes the Python path, and the line query would
    be work on top of it. `n_judgments` is a hint here (imported judgments may not count in it): only the path
    depends on it, not the bytes."""
    first = (select(Comparison.n_judgments).where(Comparison.project_id == project.id)
             .order_by(Comparison.id).limit(sample).subquery())  # fmt: skip
    several, total = db.execute(select(func.count().filter(first.c.n_judgments > 1), func.count())
                                .select_from(first)).one()  # fmt: skip
    return 2 * several <= total


def pair_chunks(db: Session, project: Project, spec: DatasetCreate, weights: dict[int, float] | None,
                tally: RowTally, *, on_batch: Callable[[int], None] | None = None,
                part: ExportPart | None = None) -> Iterator[dict[str, tuple[bytes, int]]]:  # fmt: skip
    """The standard pairs export as `iter_pair_lines`' chunks (split -> (lines, how many)): iter_pair_lines where
    the database can write lines (PAIR_LINES, `pair_lines.usable`) and most comparisons have one vote, else
    iter_pair_rows' rows, a line each."""
    if PAIR_LINES and pair_lines_usable(db.connection()) and _mostly_single_votes(db, project):
        yield from iter_pair_lines(db, project, spec, weights, tally, on_batch=on_batch, part=part)
        return
    rows = iter_pair_rows(db, project, spec, weights, on_batch=on_batch, on_comparison=tally.on_comparison, part=part)
    with contextlib.closing(rows):
        for split, row in rows:
            tally.count()
            yield {split: (orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE), 1)}  # keys come sorted


def run_export_part(database_url: str, project_id: int, spec: dict[str, Any], weights: dict[int, float], part: dict,
                    index: int, directory: str, splits: list[str], done: Any) -> None:  # fmt: skip
    """A spawned child's work (app.datasets.export_parts.PartRunner): the pairs rows of `part` into its part files,
    then its result file (rows per split, the tally) or, on an error, the error's text there (`kind`
    "unprocessable" for data the spec cannot take)."""
    from app.db import session_factory

    where = Path(directory)
    tally, rows = RowTally(), dict.fromkeys(splits, 0)
    result: dict[str, Any]
    try:
        session = session_factory(database_url)()
        try:
            project = session.get(Project, project_id)

            def on_batch(comparisons: int) -> None:
                done.value = comparisons

            files = {split: open(path, "wb", buffering=8 << 20)  # noqa: SIM115 (closed below)
                     for split, path in part_files(where, index, splits).items()}  # fmt: skip
            try:
                for chunk in pair_chunks(session, project, parse_spec(spec), weights, tally, on_batch=on_batch,
                                         part=ExportPart(**part)):  # fmt: skip
                    for split, (data, count) in chunk.items():
                        files[split].write(data)
                        rows[split] += count
            finally:
                for handle in files.values():
                    handle.close()
        finally:
            session.rollback()
            session.close()
        result = {"rows": rows, "guideline_versions": sorted(tally.guideline_versions),
                  "rows_per_day": tally.rows_per_day}  # fmt: skip
    except ValueError as error:  # the data cannot take the spec: the export's answer is a 422, as in one process
        result = {"error": str(error), "kind": "unprocessable"}
    except Exception as error:  # noqa: BLE001 (reported to the exporting process, which fails the export)
        result = {"error": f"{type(error).__name__}: {error}", "kind": "error", "trace": traceback.format_exc()[-4000:]}
    write_result(where, index, result)


def _parallel_parts(db: Session, project: Project, comparisons: int) -> list[ExportPart]:
    """The ranges of a pairs export in several processes (app.datasets.export_parts), or [] for one process: on
    PostgreSQL, from PARALLEL_MIN_COMPARISONS comparisons, with export_processes() of them."""
    processes = export_processes()
    if db.get_bind().dialect.name != "postgresql" or comparisons < PARALLEL_MIN_COMPARISONS or processes < 2:
        return []
    low, high = db.execute(select(func.min(Comparison.id), func.max(Comparison.id))
                           .where(Comparison.project_id == project.id)).one()  # fmt: skip
    if low is None or high <= low:
        return []
    return plan_parts(low, high, db.scalar(select(func.max(Judgment.id))) or 0, processes)


def build_snapshot(db: Session, snapshot: DatasetSnapshot, *,
                   progress: Callable[[float, str], None] | None = None,
                   formats: tuple[str, ...] = ("jsonl", "parquet")) -> dict:  # fmt: skip
    """Write the snapshot directory atomically and fill in the row. Idempotent after a crash.
    `formats` is for measuring one file format alone (bench/export.py); snapshots carry both."""
    project = db.get(Project, snapshot.project_id)
    spec = parse_spec(snapshot.spec)
    location = snapshot_location(snapshot)
    remote = is_url(location)
    # On an object store the snapshot is built in this machine's scratch, then published (files, manifest last).
    final_dir = get_store().scratch("staging", "datasets") / location.rsplit("/", 1)[-1] if remote \
        else Path(location)
    # A killed earlier attempt may have left its hidden temp directory behind: it was never visible.
    for stale in final_dir.parent.glob(f".{final_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if remote and open_location(location).exists():  # published by an attempt whose job was not marked
        manifest = verify_snapshot(open_location(location).local_copy())
    elif final_dir.exists():
        manifest = verify_snapshot(final_dir)  # a finished attempt whose job was not marked: reuse it
    else:
        # An estimate for the progress bar: the project's comparisons (the judged ones are at most these; an exact
        # count(distinct) of the judgments' comparisons reads every judgment once more before the export starts).
        total = db.scalar(select(func.count()).select_from(Comparison).where(Comparison.project_id == project.id)) or 1
        weights = rater_weights(db, project)
        # The guideline versions, and the rows per day of the comparison's latest judgment (when its rows took
        # their final shape) for the dataset page's chart. Rows of one comparison come out right after it.
        tally = RowTally()
        on_comparison = tally.on_comparison
        others: dict[str, Any] = {"done": lambda: 0, "own": 0}  # a parallel export's children's progress, and ours

        def on_batch(done: int) -> None:
            others["own"] = done
            if progress:
                done += others["done"]()
                progress(min(0.95, done / total), f"{done} of about {total} comparisons")

        def comparisons():
            for jc in iter_judged_comparisons(db, project, spec, weights, on_batch):
                on_comparison((v.guideline_version for v in jc.judgments if v.guideline_version),
                              max((v.created_at for v in jc.judgments if v.created_at), default=None))
                yield jc

        steps = spec.format == "steps"  # step labels, not judgments (app.datasets.steps_export)
        if steps:
            tally.day = "unknown"  # rows per day count judged comparisons; step rows are not dated here
        conversational = False if steps else resolve_conversational(db, project, spec)
        try:
            schema = stepwise_arrow_schema() if steps else arrow_schema(
                spec.format, conversational=conversational, attributes=[a["name"] for a in project.attributes or []])
        except ValueError as error:
            raise Unprocessable(str(error)) from error
        if spec.format == "ratings" and not project.attributes:
            raise Unprocessable("The ratings format needs attribute scales; this project has none.")
        with SnapshotWriter(final_dir, formats=formats, hf_datasets=spec.hf_datasets, schema=schema) as writer, \
                contextlib.ExitStack() as children:  # exits first: a parallel export's children end before the writer
            chunks = None  # a standard pairs export's lines (pair_chunks), counted in the tally as they are made
            runner = None
            if steps:
                rows = step_export_rows(db, project, spec)
            elif PAIRS_FAST_PATH and spec.format == "pairs" and not conversational:  # the same rows, faster
                parts = _parallel_parts(db, project, total)
                if parts:  # app.datasets.export_parts: this process reads the first range, children the others
                    url = db.get_bind().url.render_as_string(hide_password=False)
                    runner = children.enter_context(PartRunner(run_export_part, url, project.id, snapshot.spec,
                                                               weights, parts[1:], writer.temp_dir,
                                                               writer.splits))  # fmt: skip
                    others["done"] = runner.done
                chunks = pair_chunks(db, project, spec, weights, tally, on_batch=on_batch,
                                     part=parts[0] if parts else None)  # fmt: skip
            else:
                rows = export_rows(comparisons(), spec.format, conversational=conversational,
                                   min_agreement=spec.filters.min_agreement, min_votes=spec.filters.min_votes,
                                   seed=spec.split.seed, test_fraction=spec.split.test_fraction)  # fmt: skip
            # The objects alive before the export (modules, the app) out of the collector's sight while it runs:
            # millions of short-lived rows otherwise trigger full collections that walk all of them again and again
            # (about half of a million-row export's CPU); unfrozen after, back in the oldest generation.
            gc.freeze()
            try:
                if chunks is not None:
                    with contextlib.closing(chunks):  # its reader thread stops before the session goes on
                        for chunk in chunks:
                            for split, (data, count) in chunk.items():
                                writer.write_lines(split, data, count)
                else:
                    for split, row in rows:
                        if writer.schema is not None and conversational and _has_rich_messages(row):
                            writer.schema = None  # tool calls, reasoning: Parquet's columns are inferred from the rows
                        writer.write(split, row)
                        tally.count()
                if runner is not None:
                    runner.append_to(writer, runner.wait(lambda _: on_batch(others["own"])), tally)
            except ValueError as error:  # the data cannot take this spec (e.g. a chat prompt as a plain string)
                raise Unprocessable(str(error)) from error
            finally:
                gc.unfreeze()
            if sum(writer.rows.values()) == 0:
                raise EmptyExport("The filters match no judgments: nothing to export. Loosen the filters "
                                  "or collect judgments first.")  # fmt: skip
            manifest = writer.finish({
                "id": snapshot.id,
                "project": {"id": project.id, "slug": project.slug},
                "format": spec.format,
                "conversational": conversational,
                "spec": snapshot.spec,
                "rankforge_version": __version__,
                "created_by": snapshot.created_by_id,
                "created_at": utcnow().isoformat(),
                "guideline_versions": sorted(tally.guideline_versions),
                "rows_per_day": dict(sorted(tally.rows_per_day.items())),
            })  # fmt: skip
    if remote and not open_location(location).exists():
        get_store().publish(final_dir, location)  # StoreError with the store's message: nothing visible
    write_transaction(db)  # SQLite: the long read is over; take the write lock for the row update
    snapshot.status = "ready"
    snapshot.sha256 = manifest["sha256"]
    snapshot.rows_train = manifest["rows"].get("train", 0)
    snapshot.rows_test = manifest["rows"].get("test", 0)
    snapshot.files = sorted(manifest["files"])
    snapshot.size_bytes = sum(f["bytes"] for f in manifest["files"].values())
    snapshot.manifest = manifest
    emit(db, "dataset.ready", snapshot.project_id, snapshot_json(snapshot))
    return {"dataset_id": snapshot.id, "sha256": snapshot.sha256,
            "rows": {"train": snapshot.rows_train, "test": snapshot.rows_test}}  # fmt: skip


def mark_snapshot_failed(db: Session, snapshot: DatasetSnapshot, error: str) -> None:
    """A snapshot that cannot be built (no matching judgments, data that cannot take the spec): failed for good,
    so every caller (export job, training job, CLI) leaves it the same way."""
    snapshot.status, snapshot.error = "failed", str(error)[:2000]
    emit(db, "dataset.failed", snapshot.project_id, snapshot_json(snapshot))


def snapshot_json(snapshot: DatasetSnapshot) -> dict:
    """The snapshot as the API, the pages and webhook events show it (its shape: DatasetOut)."""
    return DatasetOut.of(snapshot).model_dump(mode="json")


def delete_snapshot(db: Session, snapshot: DatasetSnapshot, actor: User | None) -> None:
    in_use = db.scalar(select(exists().where(
        Job.dataset_id == snapshot.id, Job.kind != JobKind.export, Job.status.in_([JobStatus.queued, JobStatus.running]),
    ))) or db.scalar(select(exists().where(ModelVersion.dataset_id == snapshot.id)))  # fmt: skip
    if in_use:
        raise Conflict("A job or a model version refers to this dataset; it cannot be deleted.")
    location = snapshot_location(snapshot)
    if is_url(location):
        open_location(location).delete()  # the store manifest first: readers never see a half-deleted snapshot
    path = Path(location)
    if not is_url(location) and path.exists():
        trash = path.with_name(f".{path.name}.deleting")
        path.rename(trash)  # atomic: readers never see a half-deleted snapshot
        shutil.rmtree(trash, ignore_errors=True)
    audit(db, actor, "dataset.delete", "dataset", snapshot.id)
    db.delete(snapshot)


def ready_download(db: Session, dataset_id: int, name: str):
    """The response that sends a file of a ready snapshot: from a local store, the file checked against the manifest
    (ready_file); from an object store, streamed from it (a name the manifest lists; the published copy's hashes
    are checked whenever a machine caches it)."""
    snapshot = get_snapshot(db, dataset_id)
    location = snapshot_location(snapshot)
    if not is_url(location):
        return download_response(ready_file(db, dataset_id, name))
    if snapshot.status != "ready":
        raise Conflict(f"Dataset {dataset_id} is {snapshot.status}.")
    if name != MANIFEST_NAME and name not in (snapshot.files or []):
        raise NotFound(f"snapshot has no file {name!r}")
    return download_response(location, name)


def ready_file(db: Session, dataset_id: int, name: str) -> Path:
    """A file of a ready snapshot, checked against the manifest before it is served (clear 4xx otherwise)."""
    snapshot = get_snapshot(db, dataset_id)
    if snapshot.status != "ready":
        raise Conflict(f"Dataset {dataset_id} is {snapshot.status}.")
    directory = snapshot_dir(snapshot)
    try:
        path = safe_snapshot_file(directory, name)
        verify_snapshot(directory)
    except UnsafeSnapshotPathError as error:
        raise BadRequest(str(error)) from error
    except SnapshotFileNotFoundError as error:
        raise NotFound(str(error)) from error
    except SnapshotTamperedError as error:
        raise Conflict(f"Dataset {dataset_id} failed its integrity check: {error}") from error
    return path
