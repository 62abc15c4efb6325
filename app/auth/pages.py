"""Login and logout pages."""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from app.auth import service
from app.auth.deps import ANON_CSRF_COOKIE, SESSION_COOKIE, AnyUser, DbSession, public
from app.config import get_settings
from app.db import session_scope
from app.errors import Forbidden, RankforgeError
from app.web import render

router = APIRouter(tags=["pages"])


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(value: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid. Browsers read a backslash
    # as "/" and drop tabs and newlines, so /<backslash>evil.example or /<tab>/evil.example would leave the site.
    if not value or not value.startswith("/") or value.startswith("//") or urlparse(value).netloc:
        return "/projects"
    if "\\" in value or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "/projects"
    return value


def cookie_secure(request: Request) -> bool:
    configured = get_settings().cookie_secure
    if configured is not None:
        return configured
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


@router.get("/login", dependencies=[Depends(public)])
def login_page(request: Request, next: str | None = None):
    return render(request, "auth/login.html", {"next": _safe_next(next)})


@router.post("/login", dependencies=[Depends(public)])
def login(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form(""),
          next: str = Form("/projects")):  # fmt: skip
    cookie_token = request.cookies.get(ANON_CSRF_COOKIE, "")
    if not cookie_token or not secrets.compare_digest(cookie_token, csrf_token):
        raise Forbidden("Missing or wrong CSRF token. Reload the page and try again.")
    error: RankforgeError | None = None
    # Its own unit of work, committed even when the password is wrong: the failure must be counted.
    with session_scope(write=True) as db:
        try:
            user = service.authenticate(db, username, password, client_ip(request))
        except RankforgeError as failure:
            error = failure
        else:
            token, _ = service.create_session(db, user, ip=client_ip(request),
                                              user_agent=request.headers.get("user-agent"))  # fmt: skip
    if error is not None:
        return render(request, "auth/login.html", {"error": str(error.detail), "next": _safe_next(next),
                                                   "username": username}, status_code=error.status_code)  # fmt: skip
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=cookie_secure(request),
                        max_age=get_settings().session_hours * 3600, path="/")  # fmt: skip
    return response


@router.post("/logout")
def logout(db: DbSession, principal: AnyUser):
    if principal.auth_session is not None:
        service.revoke_session(db, principal.auth_session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", dependencies=[Depends(public)])
def home():
    return RedirectResponse("/projects", status_code=303)
