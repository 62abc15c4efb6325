"""Request dependencies: the database session, who is calling, role checks and CSRF.

Every route declares who may call it with `require(...)` (or `public`); a test walks the route
table to make sure none is left open by accident.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth import service
from app.db import session_factory
from app.errors import Forbidden, Unauthorized
from app.models import AuthSession, Role, User

SESSION_COOKIE = "rf_session"
ANON_CSRF_COOKIE = "rf_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Unauthorized):
    """Log in first."""


def _session(write: bool) -> Iterator[Session]:
    session = session_factory(write=write)()
    try:
        yield session
        session.commit()
    except BaseException:
        # Detach first: rollback would expire every loaded object, and the error page still reads
        # the caller's user and CSRF token from them after this session is gone.
        session.expunge_all()
        session.rollback()
        raise
    finally:
        session.close()


def get_db(request: Request) -> Iterator[Session]:
    """One session per request; committed when the endpoint returns, before the response is sent.

    Requests that may write (POST, PUT, PATCH, DELETE) get a write session: on SQLite their transactions
    begin IMMEDIATE, so a read-then-write handler never fails with "database is locked" because the
    worker committed in between (see `app.db.session_scope`)."""
    yield from _session(write=request.method not in SAFE_METHODS)


DbSession = Annotated[Session, Depends(get_db, scope="function")]


@contextmanager
def request_session() -> Iterator[Session]:
    """A read session as a `with` block, for endpoints that do all their database work in their own thread
    (and take the write lock themselves with `write_transaction` where they write)."""
    yield from _session(write=False)


@dataclass
class Principal:
    user: User
    auth_session: AuthSession | None
    """Set for browser sessions; None for API tokens (which need no CSRF token)."""

    @property
    def csrf_token(self) -> str:
        return self.auth_session.csrf_token if self.auth_session else ""


def _principal_from_request(request: Request, db: Session) -> Principal | None:
    """Who is calling (API token or session cookie), remembered on the request."""
    if hasattr(request.state, "principal"):
        return request.state.principal
    principal = None
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        user = service.user_for_api_token(db, authorization[7:].strip())
        if user is None:
            raise Unauthorized("Invalid or revoked API token.")
        principal = Principal(user=user, auth_session=None)
    elif token := request.cookies.get(SESSION_COOKIE):
        found = service.session_for_token(db, token)
        if found is not None:
            principal = Principal(user=found[1], auth_session=found[0])
    request.state.principal = principal
    return principal


def get_principal(request: Request, db: DbSession) -> Principal | None:
    principal = _principal_from_request(request, db)
    # End the read so the connection goes back to the pool within this thread hop. Holding it until
    # the endpoint gets a worker thread deadlocks under load: every thread waits for a connection
    # while every connection waits, with its request, for a thread.
    db.commit()
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(get_principal)]


async def check_csrf(request: Request, principal: Principal) -> None:
    if request.method in SAFE_METHODS or principal.auth_session is None:
        return
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get("csrf_token")
    if not sent or not secrets.compare_digest(str(sent), principal.csrf_token):
        raise Forbidden("Missing or wrong CSRF token. Reload the page and try again.")


def require(*roles: Role):
    """Dependency: a logged-in, active user with one of `roles` (any role when none are given)."""
    allowed = set(roles) or set(Role)

    async def dependency(request: Request, principal: OptionalPrincipal) -> Principal:
        if principal is None:
            raise LoginRequired()
        await check_csrf(request, principal)
        if principal.user.role not in allowed:
            raise Forbidden(f"This needs the role {' or '.join(sorted(allowed))}.")
        return principal

    dependency.allowed_roles = allowed  # read by the route-table test
    return dependency


def require_in_endpoint(*roles: Role):
    """Dependency for sync endpoints on the hot path that authenticate in their own thread.

    `require(...)` costs three threadpool hops before the endpoint's own (session, principal, role
    check); under load each hop queues behind every other request. This one only declares the roles
    (no hop) and hands them to the endpoint, which must call `authenticate(request, db, roles)` first.
    A caller with no credentials at all is refused here, before the request body is validated (as
    `require(...)` does); a token or session is checked against the database by `authenticate`.
    """
    allowed = frozenset(roles or Role)

    async def dependency(request: Request) -> frozenset[Role]:
        has_token = request.headers.get("authorization", "").lower().startswith("bearer ")
        if not has_token and not request.cookies.get(SESSION_COOKIE):
            raise LoginRequired()
        return allowed

    dependency.allowed_roles = set(allowed)  # read by the route-table test
    return dependency


def authenticate(request: Request, db: Session, allowed: frozenset[Role]) -> Principal:
    """`require(...)`'s checks, in the caller's thread and transaction (see `require_in_endpoint`).

    The CSRF token of a browser session must come as the X-CSRF-Token header: these endpoints take
    JSON bodies, never forms.
    """
    principal = _principal_from_request(request, db)
    if principal is None:
        raise LoginRequired()
    if request.method not in SAFE_METHODS and principal.auth_session is not None:
        sent = request.headers.get(CSRF_HEADER)
        if not sent or not secrets.compare_digest(str(sent), principal.csrf_token):
            raise Forbidden("Missing or wrong CSRF token. Reload the page and try again.")
    if principal.user.role not in allowed:
        raise Forbidden(f"This needs the role {' or '.join(sorted(allowed))}.")
    return principal


async def public() -> None:
    """Marks a route as open to anyone (login page, health check, static)."""


public.allowed_roles = None

AnyUser = Annotated[Principal, Depends(require())]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Staff = Annotated[Principal, Depends(require(Role.admin, Role.engineer))]
"""Admins and engineers: datasets, jobs, models."""


def anon_csrf_token(request: Request) -> str:
    """CSRF token for forms shown before login (double-submit cookie)."""
    token = request.cookies.get(ANON_CSRF_COOKIE)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.set_anon_csrf = token
    return token
