"""The `steps` export: counted step judgments (app.steps) as stepwise rows (app.datasets.stepwise), split by prompt
like every format. The snapshot writer, files (JSONL, Parquet, hf/) and manifest are the other formats'."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.formats import split_for_prompt
from app.datasets.schemas import DatasetCreate
from app.datasets.stepwise import LabelledTrajectory, StepVote, stepwise_rows
from app.models import Project, User
from app.steps.labels import prompt_text
from app.steps.service import StepExportFilters, iter_labelled, trajectory_step_texts


def _rater_ids(db: Session, usernames: list[str]) -> list[int]:
    return list(db.scalars(select(User.id).where(User.username.in_(usernames))))


def step_export_rows(db: Session, project: Project, spec: DatasetCreate) -> Iterator[tuple[str, dict[str, Any]]]:
    """(split, row) for every labelled trajectory that passes the spec's filters."""
    f = spec.filters
    filters = StepExportFilters(
        sources=tuple(s for s in f.sources if s != "battle") or ("human",), date_from=f.date_from, date_to=f.date_to,
        include_rater_ids=None if f.include_raters is None else _rater_ids(db, f.include_raters),
        exclude_rater_ids=tuple(_rater_ids(db, f.exclude_raters)) if f.exclude_raters else (),
        exclude_prompt_ids=tuple(f.exclude_prompt_ids),
    )  # fmt: skip
    for trajectory, judgments in iter_labelled(db, project, filters):
        labelled = LabelledTrajectory(
            completion_id=trajectory.completion.id, prompt_id=trajectory.prompt.id,
            prompt=prompt_text(trajectory.prompt.value), steps=trajectory_step_texts(trajectory),
            parent_id=trajectory.completion.parent_id,
            votes=[StepVote(rater_id=j.rater_id if j.rater_id is not None else f"imported-{j.id}", labels=j.labels,
                            first_error=j.first_error) for j in judgments],
        )  # fmt: skip
        split = split_for_prompt(trajectory.prompt.id, seed=spec.split.seed, test_fraction=spec.split.test_fraction)
        for row in stepwise_rows(labelled, min_agreement=f.min_agreement, min_votes=f.min_votes):
            yield split, row
