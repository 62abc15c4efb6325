"""A round's figures from its judgments: the head-to-head win rate of the new policy over the previous one (humans:
the headline; AI judges: beside it when one voted), the reward model's accuracy on human verdicts made after its
snapshot, the raters' pairwise agreement on the round's comparisons, and the judgment counts.

Every figure reads a named selection of app.judgments.selections (excluded and voided judgments never count);
the round flow (app/training/rounds.py) adds what its jobs report (KL, training loss, pass rates)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.intervals import wilson_interval
from app.judgments.identical import IDENTICAL
from app.judgments.selections import AI, HUMAN, counted
from app.models import Comparison, Completion, Judgment


def _outcome(ranking: list, a: int, b: int) -> float | None:
    """1 when a is ranked above b, 0 when below, 0.5 when tied; None when either is missing."""
    rank = {c: i for i, group in enumerate(ranking or []) for c in group}
    if a not in rank or b not in rank:
        return None
    return 1.0 if rank[a] < rank[b] else 0.0 if rank[a] > rank[b] else 0.5


def _options(db: Session, comparison_ids: Iterable[int]) -> dict[int, list[int]]:
    ids = list(comparison_ids)
    if not ids:
        return {}
    return dict(db.execute(select(Comparison.id, Comparison.completion_ids).where(Comparison.id.in_(ids))).all())


def head_to_head(db: Session, comparison_ids: list[int], new_id: int | None, old_id: int | None, *,
                 source: str = HUMAN) -> dict:  # fmt: skip
    """Counted verdicts of one source (humans by default) of version new_id against old_id on these comparisons:
    {win_rate, win_rate_ci (95% Wilson), battles}; ties count half a win."""
    empty = {"win_rate": None, "win_rate_ci": None, "battles": 0}
    if not comparison_ids or new_id is None or old_id is None:
        return empty
    comparisons = _options(db, comparison_ids)
    all_ids = {c for ids in comparisons.values() for c in ids}
    version = dict(db.execute(select(Completion.id, Completion.model_version_id)
                              .where(Completion.id.in_(all_ids))).all()) if all_ids else {}  # fmt: skip
    wins, battles = 0.0, 0
    for comparison_id, ranking in db.execute(select(Judgment.comparison_id, Judgment.ranking).where(
            Judgment.comparison_id.in_(list(comparisons)), counted(source))):  # fmt: skip
        ids = comparisons[comparison_id]
        new = [c for c in ids if version.get(c) == new_id]
        old = [c for c in ids if version.get(c) == old_id]
        if len(new) != 1 or len(old) != 1:
            continue
        outcome = _outcome(ranking, new[0], old[0])
        if outcome is not None:
            wins, battles = wins + outcome, battles + 1
    if battles == 0:
        return empty
    return {"win_rate": wins / battles, "win_rate_ci": list(wilson_interval(wins, battles)), "battles": battles}


def reward_accuracy(db: Session, comparison_ids: list[int], scores: dict, since: datetime | None
                    ) -> tuple[float | None, int]:  # fmt: skip
    """Share of counted human verdicts (a strict winner, made after `since`: the reward model's snapshot) on which
    the reward model's scores agree; and how many there were."""
    if not comparison_ids or not scores:
        return None, 0
    right = total = 0
    comparisons = _options(db, comparison_ids)
    query = select(Judgment.comparison_id, Judgment.ranking).where(Judgment.comparison_id.in_(list(comparisons)),
                                                                   counted(HUMAN))  # fmt: skip
    if since is not None:
        query = query.where(Judgment.created_at > since)
    for comparison_id, ranking in db.execute(query):
        ids = comparisons[comparison_id]
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                outcome = _outcome(ranking, a, b)
                if outcome in (0.0, 1.0) and str(a) in scores and str(b) in scores and scores[str(a)] != scores[str(b)]:
                    total += 1
                    right += (scores[str(a)] > scores[str(b)]) == (outcome == 1.0)
    return (right / total if total else None), total


def pairwise_agreement(db: Session, comparison_ids: list[int]) -> float | None:
    """Share of pairs of counted human verdicts on the same comparison that put the same completion first (a tie
    at the top counts as its own verdict); None when no comparison has two. Not "agreement", which names
    Krippendorff's alpha (app.quality.service.project_stats)."""
    if not comparison_ids:
        return None
    tops: dict[int, list] = {}
    for comparison_id, top in db.execute(select(Judgment.comparison_id, Judgment.top_completion_id)
                                         .where(Judgment.comparison_id.in_(comparison_ids), counted(HUMAN))):  # fmt: skip
        tops.setdefault(comparison_id, []).append(top)
    same = pairs = 0
    for verdicts in tops.values():
        for i, a in enumerate(verdicts):
            for b in verdicts[i + 1 :]:
                pairs += 1
                same += a == b
    return same / pairs if pairs else None


def identical_pairs(db: Session, comparison_ids: list[int]) -> int:
    """Evaluation pairs whose two answers were one text (app.judgments.identical): never sent to raters, a
    tie by construction, counted here apart from the verdicts."""
    if not comparison_ids:
        return 0
    metas = db.scalars(select(Comparison.meta).where(Comparison.id.in_(comparison_ids)))
    return sum(1 for meta in metas if (meta or {}).get(IDENTICAL))


def _count(db: Session, comparison_ids: list[int], source: str) -> int:
    if not comparison_ids:
        return 0
    return int(db.scalar(select(func.count()).select_from(Judgment).where(
        Judgment.comparison_id.in_(comparison_ids), counted(source))) or 0)  # fmt: skip


def _score_mean(db: Session, eval_scores: dict, version_id: int | None) -> float | None:
    """Mean reward score of the evaluation completions version_id wrote."""
    if not eval_scores or not version_id:
        return None
    mine = set(db.scalars(select(Completion.id).where(Completion.id.in_([int(k) for k in eval_scores]),
                                                      Completion.model_version_id == version_id)))  # fmt: skip
    values = [v for k, v in eval_scores.items() if int(k) in mine]
    return sum(values) / len(values) if values else None


def round_figures(db: Session, *, comparison_ids: list[int], eval_comparison_ids: list[int],
                  new_version_id: int | None, old_version_id: int | None, eval_scores: dict,
                  reward_since: datetime | None) -> dict:  # fmt: skip
    """The judgment figures of a round (the keys of the rounds contract's metrics that judgments give):

    win_rate, win_rate_ci, battles   humans' verdicts on the evaluation comparisons (the headline)
    identical_pairs                   evaluation pairs of two identical answers: ties never sent to raters, apart
    ai_win_rate, ai_win_rate_ci, ai_battles   the AI judges' verdicts there (None / 0 when no judge voted)
    reward_accuracy, reward_verdicts          the round's reward model against humans after its snapshot
    score_mean                                the new version's mean reward score on the evaluation prompts
    judgments, eval_judgments                 counted human judgments of the round's / evaluation comparisons
    ai_judgments                              counted AI judgments of the round's comparisons
    pairwise_agreement                        humans' pairwise top-choice agreement on all of them
    agreement                                 the same value under its former name (stored rounds and clients)
    """
    eval_ids = list(eval_comparison_ids or [])
    round_ids = list(comparison_ids or [])
    human = head_to_head(db, eval_ids, new_version_id, old_version_id, source=HUMAN)
    ai = head_to_head(db, eval_ids, new_version_id, old_version_id, source=AI)
    accuracy, verdicts = reward_accuracy(db, eval_ids, eval_scores or {}, reward_since)
    agreement = pairwise_agreement(db, round_ids + eval_ids)
    return human | {
        "ai_win_rate": ai["win_rate"], "ai_win_rate_ci": ai["win_rate_ci"], "ai_battles": ai["battles"],
        "identical_pairs": identical_pairs(db, eval_ids),
        "reward_accuracy": accuracy, "reward_verdicts": verdicts,
        "score_mean": _score_mean(db, eval_scores or {}, new_version_id),
        "judgments": _count(db, round_ids, HUMAN), "eval_judgments": _count(db, eval_ids, HUMAN),
        "ai_judgments": _count(db, round_ids, AI),
        "pairwise_agreement": agreement, "agreement": agreement,
    }  # fmt: skip
