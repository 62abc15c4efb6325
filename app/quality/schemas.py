"""Response models of the quality API: statistics, leaderboard, dashboard, the flag review queue, batches.

The figures' models name the fields the contract guarantees (README, DESIGN.md); nested figures that grow with
the product are typed as objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out
from app.limits import Input
from app.steps.schemas import StepAgreementOut


class ComparisonCounts(Out):
    total: int
    open: int
    complete: int


class Agreement(Out):
    krippendorff_alpha: float | None = Field(description="Krippendorff's alpha of the raters' top choices.")
    units: int = Field(description="Comparisons with two or more counted judgments.")


class RaterFigures(Out):
    username: str
    judgments: int
    gold_accuracy: float | None
    agreement_with_majority: float | None
    reliability: float | None
    flags: list[str] = Field(description="Behaviour flags (too fast, position bias, ...).")


class GroupAgreement(Out):
    group: str = Field(description="A rater group, key=value (app.groups).")
    raters: int
    judgments: int
    krippendorff_alpha: float | None = Field(description="Among the group's raters only (top choice, nominal).")
    units: int
    agreement_with_majority: float | None = Field(description="The group's raters' mean agreement with the group's "
                                                  "own majority.")


class Stats(Out):
    as_of: datetime | None = Field(default=None, description="When these figures were computed: now for a project "
                                   "of up to 50,000 judgments, else by a worker (app.quality.figures; a project "
                                   "whose first computation is under way answers 503).")
    comparisons: ComparisonCounts
    judgments: int
    groups: list[GroupAgreement] = Field(default=[], description="Agreement within each rater group.")
    agreement: Agreement
    raters: list[RaterFigures]
    steps: StepAgreementOut | None = Field(default=None, description="Step labels on agent trajectories: nominal "
                                           "alpha over steps and per-rater figures (as GET .../step-agreement).")


class LeaderboardModel(Out):
    name: str
    rating: float | None = Field(description="Bradley-Terry rating (Elo scale).")
    ci_low: float | None
    ci_high: float | None
    battles: int


class StyleCoefficient(Out):
    feature: str = Field(description="length, headers, lists or bold (app.quality.style).")
    coefficient: float = Field(description="Log-odds of winning per standard deviation of the normalised difference.")
    ci_low: float
    ci_high: float


class Stratum(Out):
    group: str
    target_share: float = Field(description="The project's weight for the group, normalised.")
    battles: int = Field(description="The group's battles.")
    share: float = Field(description="The share its battles weigh (renormalised over the groups with battles).")


class GroupWeights(Input):
    weights: dict[str, float] | None = Field(description="{key=value: weight > 0}, one label key; empty or null: "
                                             "no post-stratified ranking.")


class PostStratified(Out):
    weights: dict[str, float]
    strata: list[Stratum]
    battles: int = Field(description="Battles by raters in a weighted group (the others are left out).")
    models: list[LeaderboardModel] = Field(description="Post-stratified Bradley-Terry ratings (sandwich 95% intervals).")


class Leaderboard(Out):
    models: list[LeaderboardModel]
    win_rates: dict[str, dict[str, float | None]] = Field(description="{a: {b: share of a's wins over b}}")
    battles: int
    style_controlled: list[LeaderboardModel] = Field(
        default=[], description="The ranking with answer length and markdown held equal (Wald 95% intervals).")
    style_coefficients: list[StyleCoefficient] = Field(
        default=[], description="How much each style feature sways votes, with 95% intervals.")
    attributes: dict[str, list[dict[str, Any]]] = Field(
        default={}, description="{attribute: [{name, mean, ci_low, ci_high, n}]} best first.")
    post_stratified: PostStratified | None = Field(
        default=None, description="The ranking with each rater group weighted to the project's target share "
                                  "(app.quality.poststrat); null when the project sets no group weights or a "
                                  "group filter is on.")
    as_of: datetime | None = Field(default=None, description="When style_controlled, style_coefficients, "
                                   "post_stratified and attributes were computed: now for a project of up to 50,000 "
                                   "judgments, else by a worker (null before its first computation: they are "
                                   "empty then). The ratings come from the battle tallies and are always current.")


class Dashboard(Out):
    as_of: datetime | None = Field(default=None, description="When these figures were computed: now for a project "
                                   "of up to 50,000 judgments, else by a worker (app.quality.figures; a project "
                                   "whose first computation is under way answers 503).")
    overview: dict[str, Any]
    hours: list[str]
    judgments_per_hour: list[int]
    judgments_per_hour_by_rater: dict[str, list[int]]


class RiggingReport(Out):
    favour: list[dict[str, Any]] = Field(description="Per (rater, model) tested: votes, delta, lr, p_value (one-sided), "
                                         "flagged (Holm-corrected).")
    influence: list[dict[str, Any]] = Field(description="Flagged (rater, model): share of votes, rating move.")
    flagged: list[dict[str, Any]] = Field(description="{rater_id, username, model, checks}")
    bursts: list[dict[str, Any]] = Field(default=[], description="Live battles: bursts of near-identical prompts "
                                         "from one account {rater, username, battles, first, last, prompt}.")
    judgments_flagged: int = Field(description="Votes newly put in the review queue (flag rigging).")


class FlaggedJudgment(Out):
    judgment_id: int
    comparison_id: int
    rater: str | None
    flags: list[str]
    rationale: str | None
    created_at: datetime
    resolution: str | None
    note: str | None


class ReviewResolved(Out):
    judgment_id: int
    resolution: str
    note: str | None


class BatchOut(Out):
    batch: str | None
    comparisons: int
    open: int
    priority: int


class BatchPriorityChanged(Out):
    batch: str | None
    priority: int
    comparisons: int = Field(description="Comparisons whose priority changed.")
