"""The `steps` export format: step-wise supervision in TRL's stepwise shape, for process reward models.

One row per labelled trajectory (pure functions, no database)::

    {"prompt": str,               # the history as text (app.steps.labels.prompt_text)
     "completions": [str, ...],   # the steps, in order, each as text (app.steps.labels.step_text), cut after the
                                  #   first error (or before a contested step: see below)
     "labels": [bool, ...],       # one per step: True good or neutral, False bad (the aggregated label)
     "completion_id": int, "prompt_id": int, "parent_id": int | null (a branch's original),
     "first_error": int | null,   # index of the first False label in `labels` (it is always the last), or null
     "n_steps": int,              # the trajectory's full step count (completions may be shorter: cut)
     "n_votes": int,              # raters whose counted labels entered the row
     "agreement": float,          # mean over the row's steps of the majority's share of that step's votes
     "tags": [[str, ...], ...]}   # per step, the failure tags at least half of that step's voters gave

How votes aggregate. Each rater's counted labels are their labels up to and including their first error (steps
after it are "after error" for that rater and carry no vote; another rater's early "bad" never cuts the others'
labels). Per step, over the raters with a vote on it (good and neutral vote True, bad votes False):

    every voter says bad                 -> False: the trajectory's first error (the row ends with it)
    more True votes than False           -> True (a good step; the row goes on)
    otherwise (a tie, or a bad majority  -> contested: the row ends *before* this step, with no first error (the
      that someone disputes)                steps before it keep their labels; the contested step and all after it
                                            are left out of the loss, as a step nobody voted on is)

Why a first error needs every voter: a rater's labels end at their first "bad", so each of a rater's slips on a
good step is a first error of theirs, and with 3 raters right 85% of the time per step a plain majority (a tie
False) ends a third of the good trajectories at a good step. A contested step is neither evidence of a good step
nor of a mistake, so it is dropped instead of guessed; the prefix before it still teaches good steps. One rater's
labels are their own verdicts (unanimous by definition). Steps after the first error are cut, as in TRL's stepwise
datasets (the Math-Shepherd convention: nothing after the first error is learned). `min_votes` / `min_agreement`
drop whole rows. Neutral counts as True because the Math-Shepherd / PRM800K recipe asks "is this step a mistake?",
and a neutral step is not one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.steps.labels import BAD, counted_labels

Row = dict[str, Any]


@dataclass(slots=True)
class StepVote:
    """One rater's step judgment: labels per step ({label, tags}) and the first error (None: none)."""

    rater_id: Any
    labels: list[dict]
    first_error: int | None


@dataclass
class LabelledTrajectory:
    completion_id: Any
    prompt_id: Any
    prompt: str
    steps: list[str]
    parent_id: Any = None
    votes: list[StepVote] = field(default_factory=list)


def stepwise_rows(trajectory: LabelledTrajectory, *, min_agreement: float = 0.0, min_votes: int = 1) -> Iterator[Row]:
    """The trajectory's row (or none: no votes, too few, too little agreement)."""
    counted = [(vote, counted_labels(vote.labels, vote.first_error)) for vote in trajectory.votes]
    completions: list[str] = []
    labels: list[bool] = []
    tags: list[list[str]] = []
    shares: list[float] = []
    voters: set = set()
    for index, text in enumerate(trajectory.steps):
        votes = [(vote, kept[index]) for vote, kept in counted if index < len(kept) and kept[index] is not None]
        if not votes:
            break
        bad = sum(1 for _, label in votes if label == BAD)
        good = len(votes) - bad
        if good <= bad and good:  # contested: a tie, or a bad majority with a dissent
            break
        verdict = good > bad  # False only when every voter says bad
        voters.update(vote.rater_id for vote, _ in votes)
        completions.append(text)
        labels.append(verdict)
        shares.append(max(good, bad) / len(votes))
        tag_counts = Counter(t for vote, _ in votes for t in set(vote.labels[index].get("tags") or []))
        tags.append(sorted(t for t, n in tag_counts.items() if 2 * n >= len(votes)))
        if not verdict:
            break
    if not completions or len(voters) < min_votes:
        return
    agreement = sum(shares) / len(shares)
    if agreement < min_agreement:
        return
    yield {"prompt": trajectory.prompt, "completions": completions, "labels": labels,
           "completion_id": trajectory.completion_id, "prompt_id": trajectory.prompt_id,
           "parent_id": trajectory.parent_id, "first_error": len(labels) - 1 if not labels[-1] else None,
           "n_steps": len(trajectory.steps), "n_votes": len(voters), "agreement": agreement, "tags": tags}  # fmt: skip


def stepwise_arrow_schema():
    """The Arrow schema of the rows above, for integer ids (Parquet and hf/ directories)."""
    import pyarrow as pa

    return pa.schema(sorted([
        ("prompt", pa.string()), ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_())),
        ("completion_id", pa.int64()), ("prompt_id", pa.int64()), ("parent_id", pa.int64()),
        ("first_error", pa.int64()), ("n_steps", pa.int64()), ("n_votes", pa.int64()),
        ("agreement", pa.float64()), ("tags", pa.list_(pa.list_(pa.string()))),
    ]))  # fmt: skip
