"""What every route of the JSON API shares: the base of response models (`Out`), one way to page list routes,
and `get_or_404`.

Paging: `limit` / `offset` query parameters and the total.

- A route that answers a JSON array keeps answering the array (the public contract) and gives the number of
  items matching the filters, all pages together, in the `X-Total-Count` header.
- A route that answers an object keeps its key (`{"rounds": [...]}`, `{"verdicts": [...]}`) and gets `total`,
  `limit` and `offset` beside it (`Page`).

Each route keeps its default page size (`limit` left out: some routes answer everything, others their usual
first page); `offset` counts items from the start of the route's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.limits import INT4_MAX

TOTAL_HEADER = "X-Total-Count"
T = TypeVar("T")
Row = TypeVar("Row")


class Out(BaseModel):
    """Base of response models. Built from ORM rows (`from_attributes`) or dicts; fields a newer server adds
    before the model names them are passed on, not dropped (`extra="allow"`), while the model documents the
    fields the contract guarantees."""

    model_config = ConfigDict(from_attributes=True, extra="allow", protected_namespaces=())


def get_or_404(db: Session, model: type[Row], row_id: Any, what: str | None = None, *, project: Any = None) -> Row:
    """The row of `model` with primary key `row_id` (of `project` when given: its `project_id` must match), or
    NotFound naming it ("No job 12.", "No prompt 3 in project demo.")."""
    row = db.get(model, row_id) if row_id is not None else None
    if row is None or (project is not None and row.project_id != project.id):
        where = f" in project {project.slug}" if project is not None else ""
        raise NotFound(f"No {what or model.__name__.lower()} {row_id}{where}.")
    return row


def newest_first(model: type[Row], project_id: Any = None) -> Select:
    """`model`'s rows newest (highest id) first, only project `project_id`'s where given: what list routes,
    list pages and the CLI's lists show."""
    query = select(model).order_by(model.id.desc())
    if project_id is not None:
        query = query.where(model.project_id == project_id)
    return query


@dataclass(frozen=True)
class Paging:
    limit: int | None
    offset: int

    def slice(self, items: Sequence[T]) -> list[T]:
        """This page of a list computed whole."""
        return list(items[self.offset : self.offset + self.limit if self.limit is not None else None])

    def rows(self, db: Session, query: Select) -> tuple[list[Any], int]:
        """This page of a query's rows, and how many rows the query has in all."""
        total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
        page = query.offset(self.offset)
        if self.limit is not None:
            page = page.limit(self.limit)
        return list(db.scalars(page)), total

    def fields(self, total: int) -> dict:
        """`total`, `limit`, `offset` for an object answer (`Page`)."""
        return {"total": total, "limit": self.limit, "offset": self.offset}

    @staticmethod
    def header(response: Response, total: int) -> None:
        """The total of an array answer."""
        response.headers[TOTAL_HEADER] = str(total)


def paging(default: int | None = 100, maximum: int = 1000) -> Any:
    """The `limit` / `offset` query parameters as a dependency: `page: Annotated[Paging, paging(50, 500)]`.
    `default=None`: without `limit` the route answers every item."""
    everything = " (left out: every item)" if default is None else ""

    def dependency(limit: int | None = Query(default, ge=1, le=maximum, description=f"Items per page, at most "
                                             f"{maximum}{everything}."),
                   offset: int = Query(0, ge=0, le=INT4_MAX, description="Items to skip.")) -> Paging:  # fmt: skip
        return Paging(limit, offset)

    return Depends(dependency)


PageAll = Annotated[Paging, paging(None, 1000)]
"""Paging of a route that answers every item when `limit` is left out."""


class Page(Out):
    """The paging fields of an object answer; the items are under the route's own key."""

    total: int = Field(description="Items matching the filters, all pages together.")
    limit: int | None = Field(description="The page size asked for (null: every item).")
    offset: int = Field(description="Items skipped before this page.")
