"""Passwords (argon2), server-side sessions, API tokens and login throttling. Never commits."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.errors import TooManyRequests, Unauthorized
from app.limits import bad_character, column_length, strip_bad_characters
from app.models import ApiToken, AuthSession, LoginFailure, User, utcnow

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps the time of "no such user" close to "wrong password". Made on first use, not
    at import: one argon2 hash costs ~0.3 s, which every process (CLI, worker, each web process) paid."""
    return _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def _recent_failures(db: Session, username: str, ip: str) -> tuple[int, int]:
    """(failures for this account from this address, failures for this account from anywhere) in the window."""
    since = utcnow() - timedelta(minutes=get_settings().login_lock_minutes)
    from_here, total = db.execute(
        select(func.count().filter(LoginFailure.ip == ip), func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.username == username, LoginFailure.created_at >= since)
    ).one()
    return int(from_here), int(total)


def prune_login_failures(db: Session) -> int:
    """Delete failure rows older than the lock window (they no longer count). Returns the rows deleted."""
    since = utcnow() - timedelta(minutes=get_settings().login_lock_minutes)
    return db.execute(delete(LoginFailure).where(LoginFailure.created_at < since)).rowcount or 0


def _serialize_attempts(db: Session, username: str) -> None:
    """Attempts on one account run one at a time, from the count of its failures to the recording of this one, so
    parallel wrong passwords cannot all read the count before any of them is recorded. PostgreSQL: a transaction
    advisory lock on the account's name (released at commit). SQLite: pruning old failures is a write, which
    takes the database's write lock up front and holds it to commit (other writers wait, see app.db)."""
    if db.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"rankforge-login:" + username.encode()).digest()[:8], "big", signed=True)
        db.execute(select(func.pg_advisory_xact_lock(key)))
    prune_login_failures(db)


def authenticate(db: Session, username: str, password: str, ip: str) -> User:
    """Check a login. Failures are recorded; too many from one address lock that account there, and too many
    from all addresses together (RANKFORGE_LOGIN_MAX_FAILURES_PER_USER) lock it everywhere, so rotating
    addresses does not help an attacker. `ip` is the client address as app.proxies resolved it.

    Raises TooManyRequests while locked (the password is not even checked), Unauthorized otherwise.
    The caller must commit even on failure, so the failure is counted.
    """
    settings = get_settings()
    username = username.strip()
    # A name no account can have (too long, or with characters the database refuses) is a plain failure,
    # counted under a storable form of it.
    possible = len(username) <= column_length(User.username) and bad_character(username) is None
    if not possible:
        username = strip_bad_characters(username)[: column_length(User.username)]
    ip = (ip or "unknown")[:64]
    _serialize_attempts(db, username)
    from_here, total = _recent_failures(db, username, ip)
    if from_here >= settings.login_max_failures:
        raise TooManyRequests(
            f"Too many failed logins for this account from your address; "
            f"try again in {settings.login_lock_minutes} minutes."
        )
    if total >= settings.login_max_failures_per_user:
        raise TooManyRequests(
            f"Too many failed logins for this account; try again in {settings.login_lock_minutes} minutes."
        )
    user = db.scalar(select(User).where(User.username == username)) if possible else None
    ok = verify_password(user.password_hash if user else _dummy_hash(), password)
    if not (user and ok and user.is_active):
        db.add(LoginFailure(username=username, ip=ip))
        raise Unauthorized("Wrong username or password.")
    db.execute(delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.ip == ip))
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


def create_session(db: Session, user: User, *, ip: str | None, user_agent: str | None) -> tuple[str, AuthSession]:
    """Returns (cookie token, session row). Only the token's hash is stored."""
    token = new_token()
    row = AuthSession(
        id=sha256_hex(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(hours=get_settings().session_hours),
        ip=ip,
        user_agent=(user_agent or "")[:255],
    )
    db.add(row)
    return token, row


_SESSION_AND_USER = (
    select(AuthSession, User).join(User, User.id == AuthSession.user_id).where(AuthSession.id == bindparam("id"))
)
_TOKEN_AND_USER = (
    select(User, ApiToken.revoked_at).join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("hash"))
)  # fmt: skip
"""Built once: every authenticated request runs one of these (building a statement costs more CPU than
PostgreSQL spends answering it)."""


def session_for_token(db: Session, token: str) -> tuple[AuthSession, User] | None:
    row = db.execute(_SESSION_AND_USER, {"id": sha256_hex(token)}).first()
    if row is None:
        return None
    session, user = row
    if session.revoked_at is not None or session.expires_at <= utcnow() or not user.is_active:
        return None
    return session, user


def revoke_session(db: Session, session_id: str) -> None:
    row = db.get(AuthSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()


def revoke_user_sessions(db: Session, user_id: int) -> None:
    for row in db.scalars(select(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))):
        row.revoked_at = utcnow()


def create_api_token(db: Session, user: User, name: str) -> str:
    """Returns the token itself: shown once, stored only as its hash."""
    token = new_token("rf_")
    db.add(ApiToken(user_id=user.id, name=name, token_hash=sha256_hex(token), prefix=token[:7]))
    return token


def user_for_api_token(db: Session, token: str) -> User | None:
    row = db.execute(_TOKEN_AND_USER, {"hash": sha256_hex(token)}).first()
    if row is None:
        return None
    user, revoked_at = row
    if revoked_at is not None or not user.is_active:
        return None
    return user
