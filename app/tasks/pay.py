"""Time and pay: per rater and day, judgments, active hours and gold accuracy, and what the project's rate
(per judgment or per active hour) multiplies out to. Active time is what the rating page measured (the page was
visible and the rater interacted; idle gaps over a threshold excluded); a judgment from the API without it counts
its `time_spent_ms`. Practice answers count their active time too (training is paid work). Which judgments are
paid: app.judgments.selections.paid (human work, an excluded judgment too: the exclusion is about the data, the
work was done; voided ones are not); gold accuracy counts the counted ones only, as the quality figures do.
Never commits."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.judgments.selections import excluded, paid
from app.models import Comparison, Judgment, PracticeAnswer, Project, User

CSV_COLUMNS = ("day", "username", "judgments", "practice_items", "active_hours", "gold_judgments", "gold_accuracy",
               "pay_unit", "pay_rate", "pay")  # fmt: skip


def pay_report(db: Session, project: Project, *, date_from: datetime | None = None,
               date_to: datetime | None = None) -> list[dict]:  # fmt: skip
    """One row per (day, rater) with judgments or practice, days ascending, raters by name."""
    day = func.date(Judgment.created_at)
    active = func.coalesce(Judgment.active_ms, Judgment.time_spent_ms, 0)
    query = (
        select(day, User.username, Judgment.top_completion_id, Comparison.is_gold, Comparison.gold_ranking, active,
               excluded())
        .join(User, User.id == Judgment.rater_id)
        .join(Comparison, Comparison.id == Judgment.comparison_id)
        .where(paid(project.id))
    )  # fmt: skip
    if date_from:
        query = query.where(Judgment.created_at >= date_from)
    if date_to:
        query = query.where(Judgment.created_at < date_to)
    rows: dict[tuple[str, str], dict] = defaultdict(lambda: {"judgments": 0, "practice_items": 0, "active_ms": 0,
                                                             "gold_judgments": 0, "gold_correct": 0})  # fmt: skip
    for when, username, top, is_gold, gold_ranking, active_ms, was_excluded in db.execute(query):
        row = rows[(str(when), username)]
        row["judgments"] += 1
        row["active_ms"] += int(active_ms or 0)
        if is_gold and gold_ranking and not was_excluded:
            row["gold_judgments"] += 1
            expected = gold_ranking[0]
            row["gold_correct"] += int(len(expected) == 1 and top == expected[0])
    practice_day = func.date(PracticeAnswer.created_at)
    practice = (
        select(practice_day, User.username, func.count(), func.sum(func.coalesce(PracticeAnswer.active_ms,
                                                                                 PracticeAnswer.time_spent_ms, 0)))
        .join(User, User.id == PracticeAnswer.rater_id)
        .where(PracticeAnswer.project_id == project.id)
        .group_by(practice_day, User.username)
    )  # fmt: skip
    if date_from:
        practice = practice.where(PracticeAnswer.created_at >= date_from)
    if date_to:
        practice = practice.where(PracticeAnswer.created_at < date_to)
    for when, username, count, active_ms in db.execute(practice):
        row = rows[(str(when), username)]
        row["practice_items"] += count
        row["active_ms"] += int(active_ms or 0)
    out = []
    for (when, username), row in sorted(rows.items()):
        hours = row["active_ms"] / 3_600_000
        pay = None
        if project.pay_rate is not None and project.pay_unit == "hour":
            pay = round(hours * project.pay_rate, 2)
        elif project.pay_rate is not None and project.pay_unit == "judgment":
            pay = round(row["judgments"] * project.pay_rate, 2)
        out.append({"day": when, "username": username, "judgments": row["judgments"],
                    "practice_items": row["practice_items"], "active_hours": round(hours, 4),
                    "gold_judgments": row["gold_judgments"],
                    "gold_accuracy": row["gold_correct"] / row["gold_judgments"] if row["gold_judgments"] else None,
                    "pay_unit": project.pay_unit, "pay_rate": project.pay_rate, "pay": pay})  # fmt: skip
    return out


def totals(report: list[dict]) -> list[dict]:
    """Per rater over the report's days."""
    by_rater: dict[str, dict] = {}
    for row in report:
        total = by_rater.setdefault(row["username"], {"username": row["username"], "days": 0, "judgments": 0,
                                                     "practice_items": 0, "active_hours": 0.0, "pay": None})  # fmt: skip
        total["days"] += 1
        total["judgments"] += row["judgments"]
        total["practice_items"] += row["practice_items"]
        total["active_hours"] = round(total["active_hours"] + row["active_hours"], 4)
        if row["pay"] is not None:
            total["pay"] = round((total["pay"] or 0.0) + row["pay"], 2)
    return sorted(by_rater.values(), key=lambda r: r["username"])


def report_csv(report: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report:
        # a username starting with = + - @ would be a formula in a spreadsheet
        safe = dict(row, username=("'" + row["username"]) if row["username"][:1] in "=+-@\t\r" else row["username"])
        writer.writerow({k: "" if safe[k] is None else safe[k] for k in CSV_COLUMNS})
    return buffer.getvalue()
