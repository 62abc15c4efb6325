"""Project figures for admins: queue state, agreement, per-rater quality. Reads arrays from SQL and
hands them to the numpy statistics in app.quality.stats."""

from __future__ import annotations

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.models import Comparison, Judgment, Project, User
from app.quality import stats

TIE = -1
"""Code for "no single best option" in the nominal top-choice data."""


def project_overview(db: Session, project: Project) -> dict:
    complete = case((Comparison.n_judgments >= Comparison.required, 1), else_=0)
    total, done, leased = db.execute(
        select(func.count(), func.coalesce(func.sum(complete), 0), func.coalesce(func.sum(Comparison.n_leases), 0))
        .where(Comparison.project_id == project.id, ~Comparison.is_gold)
    ).one()
    gold = db.scalar(select(func.count()).where(Comparison.project_id == project.id, Comparison.is_gold))
    by_source = dict(
        db.execute(
            select(Judgment.source, func.count()).where(Judgment.project_id == project.id).group_by(Judgment.source)
        ).all()
    )
    return {
        "comparisons": {"total": total, "open": total - done, "complete": done, "gold": gold, "leased": leased},
        "judgments": by_source.get("human", 0),
        "judgments_by_source": by_source,
    }


def _top_choice_arrays(db: Session, project: Project):
    rows = db.execute(
        select(Judgment.comparison_id, Judgment.rater_id, Judgment.top_completion_id, Comparison.is_gold,
               Comparison.gold_ranking, func.coalesce(Judgment.time_spent_ms, -1), func.coalesce(Judgment.chosen_position, -1))
        .join(Comparison, Comparison.id == Judgment.comparison_id)
        .where(Judgment.project_id == project.id, Judgment.source == "human", Judgment.rater_id.is_not(None))
    ).all()  # fmt: skip
    return rows


def _reliability(comparison, rater, top, is_gold, gold_top, project: Project) -> dict[int, float]:
    # Codes are computed over judgments and gold answers together so they agree within a unit.
    gold_units, gold_index = np.unique(comparison[is_gold], return_index=True)
    units = np.concatenate([comparison, gold_units])
    codes = _dense_codes(units, np.concatenate([top, gold_top[is_gold][gold_index]]))
    n_categories = max(2 + int(project.allow_ties), int(codes.max()) + 1)
    return stats.rater_reliability(comparison, rater, codes[: len(top)], n_categories,
                                   gold=(gold_units, codes[len(top):]))  # fmt: skip


def project_stats(db: Session, project: Project) -> dict:
    overview = project_overview(db, project)
    rows = _top_choice_arrays(db, project)
    usernames = dict(db.execute(select(User.id, User.username)).all())
    raters_out = []
    alpha = stats.AlphaResult(alpha=None, units=0)
    if rows:
        comparison = np.array([r[0] for r in rows], dtype=np.int64)
        rater = np.array([r[1] for r in rows], dtype=np.int64)
        top = np.array([TIE if r[2] is None else r[2] for r in rows], dtype=np.float64)
        is_gold = np.array([r[3] for r in rows], dtype=bool)
        time_ms = np.array([r[5] for r in rows], dtype=np.float64)
        time_ms[time_ms < 0] = np.nan
        position = np.array([r[6] for r in rows], dtype=np.float64)
        gold_top = np.array(
            [
                (r[4][0][0] if len(r[4][0]) == 1 else TIE) if r[3] and r[4] else np.nan
                for r in rows
            ],
            dtype=np.float64,
        )
        regular = ~is_gold
        alpha = stats.krippendorff_alpha(comparison[regular], rater[regular], top[regular], "nominal")
        majority = stats.agreement_with_majority(comparison[regular], rater[regular], top[regular])
        reliability = _reliability(comparison, rater, top, is_gold, gold_top, project)
        flags = stats.rater_flags(rater, time_ms, position, np.full(len(rows), 2.0), np.full(len(rows), np.nan))
        for rater_id in sorted(set(rater.tolist())):
            mine = rater == rater_id
            gold_mine = mine & is_gold
            raters_out.append({
                "user_id": rater_id,
                "username": usernames.get(rater_id, f"user {rater_id}"),
                "judgments": int(mine.sum()),
                "gold_judgments": int(gold_mine.sum()),
                "gold_accuracy": float(np.mean(top[gold_mine] == gold_top[gold_mine])) if gold_mine.any() else None,
                "agreement_with_majority": majority.get(rater_id, (None, 0))[0],
                "reliability": reliability.get(rater_id),
                "flags": flags.get(rater_id, []),
            })
    return {
        "comparisons": {k: overview["comparisons"][k] for k in ("total", "open", "complete")},
        "judgments": overview["judgments"],
        "agreement": {"krippendorff_alpha": alpha.alpha, "units": alpha.units},
        "raters": raters_out,
    }


def _dense_codes(unit: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Values renumbered 0..k-1 within each unit (same value, same code), as categorical models want."""
    pairs = np.stack([unit.astype(np.float64), value])
    uniq, inverse = np.unique(pairs, axis=1, return_inverse=True)
    first_of_unit = np.searchsorted(uniq[0], uniq[0], side="left")
    return (np.arange(uniq.shape[1]) - first_of_unit)[inverse.ravel()].astype(np.float64)
