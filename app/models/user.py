from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, CreatedMixin, IdMixin


class Role(StrEnum):
    admin = "admin"
    annotator = "annotator"
    engineer = "engineer"


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "user"

    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    labels: Mapped[dict | None] = mapped_column()
    """Rater groups: free-form key=value labels set by admins (e.g. expertise=medicine, locale=fr); figures can be
    read per group (app.users.service.group_members)."""
    last_login_at: Mapped[datetime | None]


class AuthSession(CreatedMixin, Base):
    """A browser session. The cookie holds a random token; only its sha256 is stored."""

    __tablename__ = "auth_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User] = relationship(lazy="raise")


class ApiToken(IdMixin, CreatedMixin, Base):
    """An API token, shown once; stored as its sha256 (tokens are long random strings)."""

    __tablename__ = "api_token"

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="raise")


class LoginFailure(IdMixin, CreatedMixin, Base):
    __tablename__ = "login_failure"
    __table_args__ = (Index("ix_login_failure_username_ip_created_at", "username", "ip", "created_at"),)

    username: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64))


class AuditLog(IdMixin, CreatedMixin, Base):
    __tablename__ = "audit_log"

    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[int | None]
    details: Mapped[dict] = mapped_column(default=dict)
