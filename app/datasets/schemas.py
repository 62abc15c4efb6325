from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.api import Out
from app.judgments.selections import EXPORT_DEFAULT
from app.limits import Input, PositiveInt4, varchar
from app.models import Comparison


class DatasetFilters(Input):
    date_from: datetime | None = None
    date_to: datetime | None = None
    include_raters: list[str] | None = Field(default=None, description="Usernames; None keeps everyone.")
    exclude_raters: list[str] = []
    min_agreement: float = Field(default=0.0, ge=0.0, le=1.0)
    min_votes: PositiveInt4 = 1
    exclude_unsafe: bool = Field(default=False, description="Leave out comparisons any rater flagged unsafe.")
    exclude_gold: bool = False
    include_edits: bool = Field(default=True, description="Raters' rewrites: in pairs (edit over its parent, "
                                "`edited: true`) and in sft (as demonstrations). False leaves them out.")
    sources: list[Literal["human", "imported", "ai", "battle"]] = Field(
        default=list(EXPORT_DEFAULT), min_length=1,
        description="Which judgments count (app.judgments.selections; excluded and voided ones never do): human, "
        "imported, ai, battle.",
    )
    batches: list[varchar(Comparison.batch)] | None = Field(default=None, max_length=1000,
                                      description="Only comparisons of these batches; None keeps every batch.")
    exclude_prompt_ids: list[PositiveInt4] = Field(
        default=[], max_length=100_000, description="Leave out these prompts (a round's evaluation prompts)."
    )


class DatasetSplit(Input):
    test_fraction: float = Field(default=0.1, ge=0.0, le=0.9)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class DatasetCreate(Input):
    format: Literal["pairs", "kto", "rankings", "sft", "ratings", "steps"] = Field(
        default="pairs", description="steps: step labels in TRL's stepwise shape (app.datasets.stepwise).")
    filters: DatasetFilters = DatasetFilters()
    split: DatasetSplit = DatasetSplit()
    conversational: bool | None = Field(
        default=None,
        description="Message lists instead of plain strings; null (auto): message lists when any of the project's "
        "prompts is a multi-message chat, which cannot be a plain string.",
    )
    hf_datasets: bool = Field(default=False, description="Also write a Hugging Face save_to_disk directory.")


class DatasetRows(Out):
    train: int
    test: int


class DatasetOut(Out):
    """A dataset snapshot: `building`, then `ready` (rows, files, sha256) or `failed` (error)."""

    id: int
    project_id: int
    status: str
    format: str
    rows: DatasetRows
    sha256: str | None
    files: list[str]
    size_bytes: int | None
    spec: dict
    job_id: int | None
    error: str | None
    created_at: datetime

    @classmethod
    def of(cls, snapshot) -> DatasetOut:
        fields = {name: getattr(snapshot, name) for name in cls.model_fields if name != "rows"}
        return cls.model_validate(fields | {"rows": {"train": snapshot.rows_train, "test": snapshot.rows_test}})
