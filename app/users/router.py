"""JSON API for user management (admins): list, create, change role, (de)activate, reset password."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth.deps import Admin, DbSession
from app.errors import Unprocessable
from app.models import ApiToken, User, utcnow
from app.users import service

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def user_json(user: User) -> dict:
    return {"id": user.id, "username": user.username, "role": user.role, "is_active": user.is_active,
            "created_at": user.created_at, "last_login_at": user.last_login_at}  # fmt: skip


def set_active(db: Session, user: User, active: bool, actor: User) -> None:
    """(De)activate; deactivating also ends the user's browser sessions and revokes every API token."""
    if not active and user.id == actor.id:
        raise Unprocessable("You cannot deactivate yourself.")
    service.set_active(db, user, active, actor)
    if not active:
        db.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                   .values(revoked_at=utcnow()))  # fmt: skip


class UserCreate(BaseModel):
    username: str
    role: str
    password: str = Field(min_length=8)


class UserUpdate(BaseModel):
    role: str | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=8)


@router.get("")
def list_users(db: DbSession, principal: Admin):
    return [user_json(u) for u in db.scalars(select(User).order_by(User.id))]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(data: UserCreate, db: DbSession, principal: Admin):
    return user_json(service.create_user(db, data.username, data.role, data.password, principal.user))


@router.get("/{user_id}")
def get_user(user_id: int, db: DbSession, principal: Admin):
    return user_json(service.get_user(db, user_id))


@router.patch("/{user_id}")
def update_user(user_id: int, data: UserUpdate, db: DbSession, principal: Admin):
    user = service.get_user(db, user_id)
    if data.role is not None and data.role != user.role:
        if user.id == principal.user.id:
            raise Unprocessable("You cannot change your own role.")
        service.set_role(db, user, data.role, principal.user)
    if data.is_active is not None and data.is_active != user.is_active:
        set_active(db, user, data.is_active, principal.user)
    if data.password is not None:
        service.reset_password(db, user, data.password, principal.user)
    return user_json(user)
