"""Rater groups: free-form `key=value` labels admins give users (expertise=medicine, locale=fr, ...), in user.labels.

One definition of the format and of group membership, for the users domain (which sets labels) and every figure
read per group (the leaderboard's group filter, app.quality.service.leaderboard)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Unprocessable
from app.models import User

LABEL_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,50}$")
MAX_LABELS = 20


def parse_group(text: str) -> tuple[str, str]:
    """A group as written in a filter or a form, `key=value`, each part 1-50 letters, digits, '_', '.' or '-'."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not LABEL_PART.match(key) or not LABEL_PART.match(value):
        raise Unprocessable(f"A group is key=value, each 1-50 letters, digits, '_', '.' or '-'; got {text[:60]!r}.")
    return key, value


def parse_labels(text: str) -> dict[str, str]:
    """`key=value` pairs separated by commas or new lines (the admin page's field); empty: no labels."""
    labels = dict(parse_group(part) for part in re.split(r"[,\n]", text) if part.strip())
    if len(labels) > MAX_LABELS:
        raise Unprocessable(f"At most {MAX_LABELS} labels per user.")
    return labels


def group_members(db: Session, group: str) -> set[int]:
    """Ids of the users labelled with this `key=value` group."""
    key, value = parse_group(group)
    return {user_id for user_id, labels in db.execute(select(User.id, User.labels).where(User.labels.is_not(None)))
            if (labels or {}).get(key) == value}  # fmt: skip


def all_groups(db: Session) -> list[str]:
    """Every `key=value` group some user carries, sorted."""
    return sorted({f"{k}={v}" for (labels,) in db.execute(select(User.labels).where(User.labels.is_not(None)))
                   for k, v in (labels or {}).items()})  # fmt: skip
