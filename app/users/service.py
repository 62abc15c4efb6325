"""User management. Never commits."""

from __future__ import annotations

import re

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from app.api import get_or_404
from app.audit import audit
from app.auth.service import hash_password, revoke_user_sessions
from app.errors import Conflict, Unprocessable
from app.groups import parse_labels
from app.models import ApiToken, Role, User, utcnow

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")


def create_user(db: Session, username: str, role: str, password: str, actor: User | None) -> User:
    if not USERNAME.match(username):
        raise Unprocessable("Usernames are 2 to 64 letters, digits, '.', '_' or '-'.")
    if role not in set(Role):
        raise Unprocessable(f"Unknown role {role!r}; use admin, annotator or engineer.")
    if len(password) < 8:
        raise Unprocessable("The password must have at least 8 characters.")
    if db.scalar(select(exists().where(User.username == username))):
        raise Conflict(f"User {username!r} exists already.")
    user = User(username=username, role=role, password_hash=hash_password(password), is_active=True)
    db.add(user)
    db.flush()
    audit(db, actor, "user.create", "user", user.id, username=username, role=role)
    return user


def get_user(db: Session, user_id: int) -> User:
    return get_or_404(db, User, user_id, "user")


def set_active(db: Session, user: User, active: bool, actor: User | None) -> None:
    """(De)activate; deactivating also ends the user's browser sessions and revokes every API token."""
    if not active and actor is not None and user.id == actor.id:
        raise Unprocessable("You cannot deactivate yourself.")
    user.is_active = active
    if not active:
        revoke_user_sessions(db, user.id)
        # Revoked for good: reactivating the account must not bring old (possibly leaked) tokens back.
        db.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    audit(db, actor, "user.activate" if active else "user.deactivate", "user", user.id)


def set_role(db: Session, user: User, role: str, actor: User | None) -> None:
    if role not in set(Role):
        raise Unprocessable(f"Unknown role {role!r}.")
    user.role = role
    revoke_user_sessions(db, user.id)
    audit(db, actor, "user.role", "user", user.id, role=role)


def set_labels(db: Session, user: User, labels: dict[str, str], actor: User | None) -> None:
    """Replace a user's group labels (app.groups: at most MAX_LABELS, one value per key)."""
    checked = parse_labels(",".join(f"{key}={value}" for key, value in labels.items()))
    user.labels = checked or None
    audit(db, actor, "user.labels", "user", user.id, labels=checked)


def reset_password(db: Session, user: User, password: str, actor: User | None) -> None:
    if len(password) < 8:
        raise Unprocessable("The password must have at least 8 characters.")
    user.password_hash = hash_password(password)
    revoke_user_sessions(db, user.id)
    audit(db, actor, "user.password_reset", "user", user.id)
