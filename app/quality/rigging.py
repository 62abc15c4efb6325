"""Vote-rigging checks on the leaderboard's votes (counted LEADERBOARD judgments: rated comparisons and battles).

A few accounts that recognise one model and always vote for it can move an arena-style leaderboard (ICML 2025).
Two checks, both against the Bradley-Terry fit of everyone's votes:

1. favour: per rater and model, a likelihood-ratio test of "this rater's votes on the model's battles follow the
   fit" (delta = 0) against "they add a constant delta in the model's favour": P(model wins) =
   sigmoid(theta_model - theta_other + delta), delta fitted by Newton, LR = 2 (ll(delta) - ll(0)) ~ chi2(1),
   one-sided (only delta > 0 is favour). The p-values of all (rater, model) tests are corrected together by
   Holm's step-down method, so the chance of flagging any honest rater at all is at most `alpha`.
2. influence: per rater and model, how far leaving the rater's votes out moves the model's rating, divided by the
   rater's share of the votes; a rater is flagged when that is `influence_factor` times the median rater's and the
   move is at least `min_influence` rating points.

3. bursts (live battles only): one account sending a burst of near-identical first prompts, at least
   `burst_min_prompts` within `burst_window_minutes` whose normalised texts (lower case, punctuation and spacing
   folded) are `burst_similarity` alike or more (difflib's ratio), as a script fishing for a model it recognises
   would. Every battle of the account counts (voided ones too: the burst is the signal); its voted ones are flagged.

Flagged raters' votes for the favoured model, and the votes of a burst's battles, get the judgment flag `rigging`, which puts them in the admins'
review queue (app.quality.service.REVIEW_FLAGS); an admin's `excluded` takes a vote out of every figure.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy import stats as scipy_stats
from scipy.special import expit, log_expit
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.judgments.selections import LEADERBOARD, counted
from app.models import Battle, BattleTurn, Completion, Judgment, Project, User
from app.quality.stats import ELO_PER_NATURAL_LOG_ODDS, _fit_bradley_terry

RIGGING_FLAG = "rigging"


@dataclass(frozen=True)
class RiggingArgs:
    alpha: float = 0.01
    """Family-wise error rate of the favour tests (Holm)."""
    min_votes: int = 10
    """Test a (rater, model) only with at least this many of the rater's votes on the model's battles."""
    influence_factor: float = 4.0
    """influence: flag at this many times the median rater's rating move per share of votes."""
    min_influence: float = 4.0
    """influence: and a move of at least this many rating points (Elo scale)."""
    burst_window_minutes: float = 10.0
    """bursts: the window the near-identical prompts fall in."""
    burst_min_prompts: int = 5
    """bursts: flag this many near-identical prompts (or more) in one window."""
    burst_similarity: float = 0.9
    """bursts: how alike two normalised prompts must be (difflib.SequenceMatcher ratio, 0 to 1)."""
    prior_ties: float = 1.0
    """Virtual ties of each model against an average one in every fit here (the fits with a rater left out
    may lose connectivity; the same prior everywhere keeps them comparable)."""


def _holm(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections: sorted ascending, reject while p_(k) <= alpha / (m - k)."""
    order = np.argsort(p_values)
    m = len(p_values)
    passes = p_values[order] <= alpha / (m - np.arange(m))
    rejected_sorted = np.cumprod(passes).astype(bool)
    rejected = np.zeros(m, dtype=bool)
    rejected[order] = rejected_sorted
    return rejected


def _wins(model_a, model_b, outcome, n_models: int, weights=None) -> np.ndarray:
    wins = np.zeros((n_models, n_models))
    w = np.ones(len(model_a)) if weights is None else weights
    np.add.at(wins, (model_a, model_b), w * outcome)
    np.add.at(wins, (model_b, model_a), w * (1.0 - outcome))
    return wins


def favour_tests(model_a, model_b, outcome, rater, n_models: int, args: RiggingArgs = RiggingArgs()) -> list[dict]:
    """Per (rater, model) with enough votes: {rater, model, votes, delta, lr, p_value, flagged}."""
    model_a, model_b = np.asarray(model_a, np.int64), np.asarray(model_b, np.int64)
    outcome, rater = np.asarray(outcome, np.float64), np.asarray(rater, np.int64)
    if len(outcome) == 0:
        return []
    theta = _fit_bradley_terry(_wins(model_a, model_b, outcome, n_models)[None], np.array([args.prior_ties]))[0]
    # Each battle tests both of its models, from that model's side.
    model = np.concatenate((model_a, model_b))
    x = np.concatenate((theta[model_a] - theta[model_b], theta[model_b] - theta[model_a]))
    y = np.concatenate((outcome, 1.0 - outcome))
    raters, rater_code = np.unique(np.concatenate((rater, rater)), return_inverse=True)
    groups, group = np.unique(rater_code * n_models + model, return_inverse=True)
    votes = np.bincount(group)
    delta = np.zeros(len(groups))
    for _ in range(50):
        p = expit(x + delta[group])
        gradient = np.bincount(group, weights=y - p, minlength=len(groups))
        curvature = np.bincount(group, weights=p * (1.0 - p), minlength=len(groups))
        step = gradient / np.maximum(curvature, 1e-12)
        delta = np.clip(delta + step, -15.0, 15.0)  # all votes one way: the MLE is infinite; 15 is near enough
        if np.max(np.abs(step)) < 1e-9:
            break

    def log_likelihood(shift: np.ndarray) -> np.ndarray:
        z = x + shift[group]
        return np.bincount(group, weights=y * log_expit(z) + (1.0 - y) * log_expit(-z), minlength=len(groups))

    lr = np.maximum(2.0 * (log_likelihood(delta) - log_likelihood(np.zeros(len(groups)))), 0.0)
    p_value = np.where(delta > 0, 0.5 * scipy_stats.chi2.sf(lr, 1), 1.0)
    tested = votes >= args.min_votes
    flagged = np.zeros(len(groups), dtype=bool)
    if tested.any():
        flagged[tested] = _holm(p_value[tested], args.alpha)
    return [{"rater": int(raters[g // n_models]), "model": int(g % n_models), "votes": int(votes[i]),
             "delta": float(delta[i]), "lr": float(lr[i]), "p_value": float(p_value[i]), "flagged": bool(flagged[i])}
            for i, g in enumerate(groups) if tested[i]]  # fmt: skip


def influence(model_a, model_b, outcome, rater, n_models: int, args: RiggingArgs = RiggingArgs()) -> list[dict]:
    """Per (rater, model): {rater, model, share, move, flagged}: the model's rating move (Elo points) when the
    rater's votes are left out, against the rater's share of the votes. All fits in one batch."""
    model_a, model_b = np.asarray(model_a, np.int64), np.asarray(model_b, np.int64)
    outcome, rater = np.asarray(outcome, np.float64), np.asarray(rater, np.int64)
    raters, code = np.unique(rater, return_inverse=True)
    if len(raters) < 2:
        return []
    total = _wins(model_a, model_b, outcome, n_models)
    mine = np.zeros((len(raters), n_models, n_models))
    np.add.at(mine, (code, model_a, model_b), outcome)
    np.add.at(mine, (code, model_b, model_a), 1.0 - outcome)
    batch = np.concatenate((total[None], total[None] - mine))
    theta = _fit_bradley_terry(batch, np.full(len(batch), args.prior_ties))
    theta = theta - theta.mean(axis=1, keepdims=True)
    move = ELO_PER_NATURAL_LOG_ODDS * np.abs(theta[1:] - theta[0])  # raters x models
    share = np.bincount(code, minlength=len(raters)) / len(outcome)
    per_share = move / share[:, None]
    typical = np.median(per_share, axis=0)
    flagged = (move >= args.min_influence) & (per_share >= args.influence_factor * typical[None, :])
    return [{"rater": int(raters[r]), "model": int(m), "share": float(share[r]), "move": float(move[r, m]),
             "flagged": bool(flagged[r, m])} for r in range(len(raters)) for m in range(n_models)]  # fmt: skip


def normalise_prompt(text: str) -> str:
    """A prompt as the burst check compares it: lower case, every run of non-word characters one space."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())[:2000]


def prompt_bursts(rows: list[tuple[int, int, datetime, str]], args: RiggingArgs = RiggingArgs()) -> list[dict]:
    """rows: (battle id, rater id, created at, first prompt). Per rater, every battle starts a window; the battles
    in it whose prompts are alike enough to its prompt form a burst when there are `burst_min_prompts` of them.
    Overlapping bursts of one rater are merged. [{rater, battles: [ids], first, last, prompt}]"""
    window = timedelta(minutes=args.burst_window_minutes)
    by_rater: dict[int, list[tuple[datetime, int, str, str]]] = {}
    for battle_id, rater, created_at, prompt in rows:
        by_rater.setdefault(rater, []).append((created_at, battle_id, normalise_prompt(prompt), prompt))
    bursts = []
    for rater, items in sorted(by_rater.items()):
        items.sort()
        members: set[int] = set()
        for i, (start, _, text, _) in enumerate(items):
            close = [items[j] for j in range(i, len(items)) if items[j][0] - start <= window]
            alike = [item for item in close if item[2] == text or difflib.SequenceMatcher(
                None, text, item[2], autojunk=False).ratio() >= args.burst_similarity]  # fmt: skip
            if len(alike) >= args.burst_min_prompts:
                members.update(item[1] for item in alike)
        if members:
            chosen = [item for item in items if item[1] in members]
            bursts.append({"rater": rater, "battles": sorted(members), "first": chosen[0][0].isoformat(),
                           "last": chosen[-1][0].isoformat(), "prompt": chosen[0][3][:200]})  # fmt: skip
    return bursts


def battle_prompts(db: Session, project: Project) -> list[tuple[int, int, datetime, str]]:
    """(battle id, rater id, created at, first prompt) of the project's live battles."""
    return [tuple(row) for row in db.execute(
        select(Battle.id, Battle.rater_id, Battle.created_at, BattleTurn.prompt)
        .join(BattleTurn, (BattleTurn.battle_id == Battle.id) & (BattleTurn.number == 0))
        .where(Battle.project_id == project.id))]  # fmt: skip


def rigging_report(db: Session, project: Project, args: RiggingArgs = RiggingArgs()) -> dict:
    """Both checks on the project's counted leaderboard votes, with model and rater names:
    {favour: [...], influence: [...], flagged: [{rater_id, username, model, checks}]}."""
    from app.quality.service import battle_rows  # the one per-battle reader

    rows = battle_rows(db, project)
    names = rows["model_names"]
    n_models = max(len(names), 1)
    args_ = (rows["model_a"], rows["model_b"], rows["outcome"], rows["rater"], n_models, args)
    favour = favour_tests(*args_)
    moves = influence(*args_)
    usernames = dict(db.execute(select(User.id, User.username)).all())
    flagged: dict[tuple[int, int], set[str]] = {}
    for check, results in (("favour", favour), ("influence", moves)):
        for result in results:
            result["model_name"] = str(names[result["model"]])
            result["username"] = usernames.get(result["rater"])
            if result["flagged"]:
                flagged.setdefault((result["rater"], result["model"]), set()).add(check)
    bursts = prompt_bursts(battle_prompts(db, project), args)
    for burst in bursts:
        burst["username"] = usernames.get(burst["rater"])
    return {"favour": favour, "influence": [m for m in moves if m["flagged"]], "bursts": bursts,
            "flagged": [{"rater_id": r, "username": usernames.get(r), "model": str(names[m]), "checks": sorted(c)}
                        for (r, m), c in sorted(flagged.items())]}  # fmt: skip


def flag_rigging(db: Session, project: Project, args: RiggingArgs = RiggingArgs()) -> dict:
    """Run the checks and put each flagged rater's counted votes for the favoured model in the review queue (the
    judgment flag `rigging`, added once). Returns the report with `judgments_flagged`."""
    report = rigging_report(db, project, args)
    changed = 0
    for item in report["flagged"]:
        votes = db.scalars(select(Judgment).join(Completion, Completion.id == Judgment.top_completion_id).where(
            counted(*LEADERBOARD, project_id=project.id), Judgment.rater_id == item["rater_id"],
            Completion.model_name == item["model"]))  # fmt: skip
        for judgment in votes:
            if RIGGING_FLAG not in (judgment.flags or []):
                judgment.flags = [*(judgment.flags or []), RIGGING_FLAG]
                changed += 1
    for burst in report["bursts"]:
        votes = db.scalars(select(Judgment).join(Battle, Battle.judgment_id == Judgment.id).where(
            Battle.id.in_(burst["battles"]), counted(*LEADERBOARD, project_id=project.id)))  # fmt: skip
        for judgment in votes:
            if RIGGING_FLAG not in (judgment.flags or []):
                judgment.flags = [*(judgment.flags or []), RIGGING_FLAG]
                changed += 1
    db.flush()
    return report | {"judgments_flagged": changed}
