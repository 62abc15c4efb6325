"""Writes parsed import records into a project. All or nothing (the caller's transaction), idempotent.

Records without an external_id get one from a hash of their content, so re-importing the same file
creates nothing new.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import analyze
from app.imports.parsers import ImportRecord, parse_import, record_priority
from app.judgments.identical import IDENTICAL, identical_answers
from app.limits import clean_model_output
from app.models import Comparison, Completion, Judgment, ModelVersion, Project, Prompt, User
from app.projects.schemas import ImportResult
from app.projects.service import GOLD_REQUIRED

CHUNK = 500
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
    from app.config import get_settings

    records = parse_import(data, fmt, max_bytes=max_bytes or get_settings().max_import_bytes)
    result = import_records(db, project, records, gold=gold)
    audit(db, actor, "project.import", "project", project.id, format=fmt, **result.model_dump(exclude={"format"}))
    return result.model_copy(update={"format": fmt})


def import_records(db: Session, project: Project, records: list[ImportRecord], *, gold: bool = False) -> ImportResult:
    counts = dict(prompts_created=0, completions_created=0, comparisons_created=0, judgments_created=0,
                  skipped_existing=0)  # fmt: skip
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        ids = [r.external_id or content_id(r) for r in chunk]
        existing = set(
            db.scalars(select(Prompt.external_id).where(Prompt.project_id == project.id, Prompt.external_id.in_(ids)))
        )
        fresh = [(r, i) for r, i in zip(chunk, ids, strict=True) if i not in existing]
        counts["skipped_existing"] += len(chunk) - len(fresh)
        prompts = []
        for record, external_id in fresh:
            messages, is_chat = _messages(record.prompt)
            meta = dict(record.metadata or {})
            prompts.append(Prompt(project_id=project.id, external_id=external_id, messages=messages, is_chat=is_chat,
                                  meta=meta, batch=meta.get("batch"), priority=record_priority(record),
                                  reference=record.reference, tests=record.tests))  # fmt: skip
        db.add_all(prompts)
        db.flush()
        completions = []
        for (record, _), prompt in zip(fresh, prompts, strict=True):
            rows = [Completion(prompt_id=prompt.id, text=c["text"], model_name=c.get("model"),
                               meta=c.get("metadata") or {}) for c in record.completions]  # fmt: skip
            completions.append(rows)
            db.add_all(rows)
        db.flush()
        comparisons = []
        for (record, _), prompt, rows in zip(fresh, prompts, completions, strict=True):
            if len(rows) < 2:  # a verifiable prompt alone (or with one answer): nothing to rank
                continue
            is_gold = bool(record.ranking) and (gold or bool((record.metadata or {}).get("gold")))
            ranking_ids = [[rows[i].id for i in group] for group in record.ranking] if record.ranking else None
            comparison = Comparison(
                project_id=project.id,
                prompt_id=prompt.id,
                completion_ids=[c.id for c in rows],
                is_gold=is_gold,
                gold_ranking=ranking_ids if is_gold else None,
                required=GOLD_REQUIRED if is_gold else project.overlap,
                priority=prompt.priority,
                batch=prompt.batch,
            )
            comparisons.append((comparison, ranking_ids, is_gold))
            db.add(comparison)
        db.flush()
        for comparison, ranking_ids, is_gold in comparisons:
            if ranking_ids and not is_gold:
                # The file's own human preference: kept as an imported judgment (no rater, no slot).
                db.add(Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=None,
                                ranking=ranking_ids, source="imported",
                                top_completion_id=ranking_ids[0][0] if len(ranking_ids[0]) == 1 else None))  # fmt: skip
                counts["judgments_created"] += 1
        db.flush()
        counts["prompts_created"] += len(prompts)
        counts["completions_created"] += sum(len(rows) for rows in completions)
        counts["comparisons_created"] += len(comparisons)
    if counts["prompts_created"] >= ANALYZE_AFTER_ROWS:
        analyze(db, "prompt", "completion", "comparison")
    return ImportResult(format="", records=len(records), **counts)


def add_generations(db: Session, project: Project, version: ModelVersion, rows: list[dict], *, job_id: int,
                    arena: bool = False) -> dict:  # fmt: skip
    """A generate job's output ({prompt_id, completions: [{text, params, finish_reason, usage?}]} rows) as completions
    of `version`, grouped into new comparisons (pairs, or groups of 4 in rank mode); with `arena`, each prompt's
    first new completion is also paired with the newest completion of every other model. A comparison of identical
    answers is recorded, flagged IDENTICAL, and never served."""
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
                            | ({"usage": c["usage"]} if c.get("usage") else {}))
                 for c in row["completions"]]  # fmt: skip
        db.add_all(fresh)
        db.flush()
        completion_ids += [c.id for c in fresh]
        sets = [[c.id for c in fresh[i : i + group]] for i in range(0, len(fresh), group)]
        sets = [s for s in sets if len(s) >= 2]
        texts = {c.id: c.text for c in fresh}
        if arena and fresh:
            others = _newest_by_model(db, prompt.id, exclude=version.name)
            if others:
                texts |= dict(db.execute(select(Completion.id, Completion.text).where(Completion.id.in_(others))).all())
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


def _newest_by_model(db: Session, prompt_id: int, exclude: str) -> list[int]:
    newest: dict[str, int] = {}
    for completion_id, model in db.execute(select(Completion.id, Completion.model_name)
                                           .where(Completion.prompt_id == prompt_id).order_by(Completion.id)):  # fmt: skip
        if model and model != exclude:
            newest[model] = completion_id
    return list(newest.values())
