"""Writes parsed import records into a project. All or nothing (the caller's transaction), idempotent.

Records without an external_id get one from a hash of their content, so re-importing the same file
creates nothing new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import analyze
from app.imports.messages import CONTINUATION_KEY
from app.imports.parsers import ImportReader, ImportRecord, check_file_size, record_priority
from app.judgments.identical import IDENTICAL, identical_answers
from app.limits import clean_model_output
from app.models import Comparison, Completion, Judgment, ModelVersion, Project, Prompt, User
from app.projects.schemas import ImportResult
from app.projects.service import GOLD_REQUIRED

BATCH = 2000
"""Records written per round trip: their prompts, then their completions, then their comparisons, each one bulk
INSERT ... RETURNING id (SQLAlchemy's insertmanyvalues), no ORM object per row."""
ANALYZE_AFTER_ROWS = 200
"""A load of this many new prompts (or generated completions) refreshes the tables' statistics at once: the
planner must not wait for autovacuum (off on many bulk-loaded databases) to learn of a new project's rows."""


def content_id(record: ImportRecord) -> str:
    payload = json.dumps([record.prompt, [c["text"] for c in record.completions]], sort_keys=True, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(payload.encode()).hexdigest()


def _messages(prompt: str | list[dict]) -> tuple[list[dict], bool]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}], False
    return [dict(m) for m in prompt], True  # every field of app.imports.messages kept (tool calls, reasoning)


def import_file(db: Session, project: Project, data: bytes, fmt: str, actor: User | None, *,
                gold: bool = False, max_bytes: int | None = None) -> ImportResult:  # fmt: skip
    """A file held in memory (benches, scripts): checked against the import limit, then read as `import_stream`."""
    from app.config import get_settings

    check_file_size(len(data), max_bytes or get_settings().max_import_bytes, fmt)
    return import_stream(db, project, data.split(b"\n"), fmt, actor, gold=gold)


def import_stream(db: Session, project: Project, lines: Iterable[bytes], fmt: str, actor: User | None, *,
                  gold: bool = False) -> ImportResult:  # fmt: skip
    """Import a file read one line at a time (`lines`: a binary file, such as a spooled upload, or any iterable of
    byte lines), writing as it reads, in batches, in the caller's transaction. At the first bad line writing stops;
    the rest is still read for its problems, and `ImportValidationError` (every problem's line, the first ones kept)
    is raised for the caller to roll back: nothing of a bad file stays. Memory does not grow with the file for the
    line-by-line formats (see `ImportReader`)."""
    reader = ImportReader(lines, fmt)
    result = import_records(db, project, reader, gold=gold, stop=lambda: reader.failed)
    audit(db, actor, "project.import", "project", project.id, format=fmt, **result.model_dump(exclude={"format"}))
    return result.model_copy(update={"format": fmt})


def import_records(db: Session, project: Project, records: Iterable[ImportRecord], *, gold: bool = False,
                   stop: Callable[[], bool] | None = None) -> ImportResult:  # fmt: skip
    """Write `records` in batches of `BATCH`; a record whose external id (or content id) is already in the project,
    or earlier in the same records, is skipped. `stop()` true: write nothing more (the caller is about to fail)."""
    counts = dict(prompts_created=0, completions_created=0, comparisons_created=0, judgments_created=0,
                  skipped_existing=0)  # fmt: skip
    total = 0
    batch: list[ImportRecord] = []
    for record in records:
        total += 1
        if stop is not None and stop():
            batch.clear()
            continue
        batch.append(record)
        if len(batch) >= BATCH:
            _write_batch(db, project, batch, gold, counts)
            batch.clear()
    if batch and not (stop is not None and stop()):
        _write_batch(db, project, batch, gold, counts)
    if counts["prompts_created"] >= ANALYZE_AFTER_ROWS:
        analyze(db, "prompt", "completion", "comparison")
    return ImportResult(format="", records=total, **counts)


def _write_batch(db: Session, project: Project, batch: list[ImportRecord], gold: bool, counts: dict) -> None:
    ids = [r.external_id or content_id(r) for r in batch]
    seen = set(db.scalars(select(Prompt.external_id).where(Prompt.project_id == project.id,
                                                           Prompt.external_id.in_(set(ids)))))  # fmt: skip
    fresh = []
    for record, external_id in zip(batch, ids, strict=True):
        if external_id in seen:  # stored before, or the same content twice in this batch
            counts["skipped_existing"] += 1
            continue
        seen.add(external_id)
        fresh.append((record, external_id))
    if not fresh:
        return
    prompt_rows = []
    for record, external_id in fresh:
        messages, is_chat = _messages(record.prompt)
        meta = dict(record.metadata or {})
        prompt_rows.append(dict(project_id=project.id, external_id=external_id, messages=messages, is_chat=is_chat,
                                meta=meta, batch=meta.get("batch"), priority=record_priority(record),
                                reference=record.reference, tests=record.tests))  # fmt: skip
    prompt_ids = _insert(db, Prompt, prompt_rows)
    completion_rows = [dict(prompt_id=prompt_id, text=c["text"], model_name=c.get("model"), meta=c.get("metadata") or {})
                       for (record, _), prompt_id in zip(fresh, prompt_ids, strict=True)
                       for c in record.completions]  # fmt: skip
    completion_ids = iter(_insert(db, Completion, completion_rows))
    comparison_rows, rankings = [], []
    for (record, _), prompt_id, prompt_row in zip(fresh, prompt_ids, prompt_rows, strict=True):
        rows = [next(completion_ids) for _ in record.completions]
        if len(rows) < 2:  # a verifiable prompt alone (or with one answer): nothing to rank
            continue
        is_gold = bool(record.ranking) and (gold or bool((record.metadata or {}).get("gold")))
        ranking_ids = [[rows[i] for i in group] for group in record.ranking] if record.ranking else None
        comparison_rows.append(dict(project_id=project.id, prompt_id=prompt_id, completion_ids=rows, is_gold=is_gold,
                                    gold_ranking=ranking_ids if is_gold else None,
                                    required=GOLD_REQUIRED if is_gold else project.overlap,
                                    priority=prompt_row["priority"], batch=prompt_row["batch"]))  # fmt: skip
        rankings.append(ranking_ids if ranking_ids and not is_gold else None)
    comparison_ids = _insert(db, Comparison, comparison_rows)
    judgments = 0
    for comparison_id, ranking_ids in zip(comparison_ids, rankings, strict=True):
        if ranking_ids:
            # The file's own human preference: kept as an imported judgment (no rater, no slot). An ORM object: its
            # insert event counts its battles (app.judgments.tallies).
            db.add(Judgment(comparison_id=comparison_id, project_id=project.id, rater_id=None, ranking=ranking_ids,
                            source="imported",
                            top_completion_id=ranking_ids[0][0] if len(ranking_ids[0]) == 1 else None))  # fmt: skip
            judgments += 1
    if judgments:
        db.flush()
    counts["prompts_created"] += len(prompt_rows)
    counts["completions_created"] += len(completion_rows)
    counts["comparisons_created"] += len(comparison_rows)
    counts["judgments_created"] += judgments


def _insert(db: Session, model: type, rows: list[dict]) -> list[int]:
    """Bulk INSERT of `rows` (dicts of the model's attributes; column defaults applied), their new ids in order.

    PostgreSQL: the ids are drawn from the table's sequence first (one query), then the rows go as one
    executemany (psycopg pipelines one prepared statement): a multi-row INSERT ... RETURNING of thousands of
    parameters costs far more in psycopg's client-side parsing of the statement than in the server. SQLite: one
    INSERT ... RETURNING id per page of rows (SQLAlchemy's insertmanyvalues)."""
    if not rows:
        return []
    if db.get_bind().dialect.name != "postgresql":
        return list(db.scalars(insert(model).returning(model.id, sort_by_parameter_order=True), rows))
    table = model.__table__.name
    ids = list(db.scalars(text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n) "
                               "ORDER BY 1"), {"table": f'"{table}"', "n": len(rows)}))  # fmt: skip
    for row, new_id in zip(rows, ids, strict=True):
        row["id"] = new_id
    db.execute(insert(model), rows)
    return ids


def add_generations(db: Session, project: Project, version: ModelVersion, rows: list[dict], *, job_id: int,
                    arena: bool = False) -> dict:  # fmt: skip
    """A generate job's output ({prompt_id, completions: [{text, params, finish_reason, usage?, messages?}]} rows) as
    completions of `version` (`messages`: the answer's continuation, e.g. a tool call, kept in metadata.messages as
    an imported one is), grouped into new comparisons (pairs, or groups of 4 in rank mode); with `arena`, each
    prompt's first new completion is also paired with the newest completion of every other model. A comparison of
    identical answers (text and continuation) is recorded, flagged IDENTICAL, and never served."""
    group = 2 if project.mode == "pairwise" else 4
    completion_ids, comparison_ids = [], []
    prompts = {p.id: p for p in db.scalars(select(Prompt).where(Prompt.project_id == project.id,
                                                                Prompt.id.in_([r["prompt_id"] for r in rows])))}  # fmt: skip
    for row in rows:
        prompt = prompts.get(row["prompt_id"])
        if prompt is None:
            continue
        # a model can emit NUL, which PostgreSQL cannot store: stripped (app.limits: refuse in input, strip in output)
        fresh = [Completion(prompt_id=prompt.id, text=clean_model_output(c["text"]), model_name=version.name,
                            model_version_id=version.id,
                            params=c.get("params") or {},
                            meta={"job_id": job_id, "finish_reason": c.get("finish_reason")}
                            | ({"usage": c["usage"]} if c.get("usage") else {})
                            | ({CONTINUATION_KEY: clean_model_output(c["messages"])} if c.get("messages") else {}))
                 for c in row["completions"]]  # fmt: skip
        db.add_all(fresh)
        db.flush()
        completion_ids += [c.id for c in fresh]
        sets = [[c.id for c in fresh[i : i + group]] for i in range(0, len(fresh), group)]
        sets = [s for s in sets if len(s) >= 2]
        texts = {c.id: _answer_key(c.text, c.meta) for c in fresh}
        if arena and fresh:
            others = _newest_by_model(db, prompt.id, exclude=version.name)
            if others:
                texts |= {i: _answer_key(text, meta) for i, text, meta in db.execute(
                    select(Completion.id, Completion.text, Completion.meta).where(Completion.id.in_(others)))}  # fmt: skip
            sets += [[fresh[0].id, other] for other in others]
        for ids in sets:
            identical = identical_answers([texts[i] for i in ids])
            comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=ids,
                                    required=0 if identical else project.overlap, priority=prompt.priority,
                                    batch=f"job-{job_id}",
                                    meta={"job_id": job_id} | ({IDENTICAL: True} if identical else {}))  # fmt: skip
            db.add(comparison)
            db.flush()
            comparison_ids.append(comparison.id)
    if len(completion_ids) >= ANALYZE_AFTER_ROWS:
        analyze(db, "completion", "comparison")
    return {"completion_ids": completion_ids, "comparison_ids": comparison_ids}


def _answer_key(text: str, meta: dict | None) -> str:
    """What makes two answers the same: the text, and the continuation when there is one (two different tool calls
    with no text are different answers)."""
    messages = meta.get(CONTINUATION_KEY) if isinstance(meta, dict) else None
    return json.dumps([text.strip(), messages], sort_keys=True, ensure_ascii=False) if messages else text


def _newest_by_model(db: Session, prompt_id: int, exclude: str) -> list[int]:
    newest: dict[str, int] = {}
    for completion_id, model in db.execute(select(Completion.id, Completion.model_name)
                                           .where(Completion.prompt_id == prompt_id).order_by(Completion.id)):  # fmt: skip
        if model and model != exclude:
            newest[model] = completion_id
    return list(newest.values())
