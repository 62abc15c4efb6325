"""JSON API for user management (admins): list, create, change role, (de)activate, reset password."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import Field
from sqlalchemy import select

from app.api import PageAll
from app.auth.deps import Admin, DbSession
from app.errors import Unprocessable
from app.limits import Id, Input, varchar
from app.models import User
from app.users import service
from app.users.schemas import UserOut

PASSWORD_MAX = 1024

router = APIRouter(prefix="/api/v1/users", tags=["users"])


class UserCreate(Input):
    username: varchar(User.username)
    role: varchar(User.role)
    password: str = Field(min_length=8, max_length=PASSWORD_MAX)


class UserUpdate(Input):
    role: varchar(User.role) | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=PASSWORD_MAX)
    labels: dict[str, str] | None = Field(default=None, description="Rater groups: {key: value}, replacing the "
                                          "user's labels ({} clears them).")


@router.get("", response_model=list[UserOut])
def list_users(db: DbSession, principal: Admin, response: Response, page: PageAll):
    """By id."""
    users, total = page.rows(db, select(User).order_by(User.id))
    page.header(response, total)
    return users


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def create_user(data: UserCreate, db: DbSession, principal: Admin):
    return service.create_user(db, data.username, data.role, data.password, principal.user)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: Id, db: DbSession, principal: Admin):
    return service.get_user(db, user_id)


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: Id, data: UserUpdate, db: DbSession, principal: Admin):
    user = service.get_user(db, user_id)
    if data.role is not None and data.role != user.role:
        if user.id == principal.user.id:
            raise Unprocessable("You cannot change your own role.")
        service.set_role(db, user, data.role, principal.user)
    if data.is_active is not None and data.is_active != user.is_active:
        service.set_active(db, user, data.is_active, principal.user)
    if data.password is not None:
        service.reset_password(db, user, data.password, principal.user)
    if data.labels is not None:
        service.set_labels(db, user, data.labels, principal.user)
    return user
