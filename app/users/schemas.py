"""Response models of the users API."""

from __future__ import annotations

from datetime import datetime

from app.api import Out


class UserOut(Out):
    id: int
    username: str
    role: str
    is_active: bool
    labels: dict[str, str] | None = None
    created_at: datetime
    last_login_at: datetime | None
