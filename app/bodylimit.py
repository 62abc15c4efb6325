"""Request bodies are bounded before they are read (pure ASGI middleware).

FastAPI reads and parses a route's body (forms and multipart uploads into temp files included) before it
runs the route's dependencies, so without this a 100 MiB upload to any form route was received in full
before the 401 or 403. Here, before the app sees the request:

- A `Content-Length` above the route's limit is answered 413 at once, unread. Imports may be
  `max_import_bytes` (plus room for the multipart envelope); every other route `max_body_bytes`; the login
  form 64 KiB.
- A body sent without a length (chunked) is counted as it arrives; past the limit the app is told the client
  left and the answer is 413, whatever the app was doing with the body.
- A request with no credentials at all (no bearer token, no session cookie) to any route but the public
  ones is answered 401 (a browser: a redirect to the login page) without reading its body.
- A request with credentials has them checked against the database first (the bearer token or the session),
  whatever its body (JSON included: an invalid token gets 401 with nothing read or parsed); a multipart one
  from a browser session must also carry its CSRF token, in the
  `X-CSRF-Token` header (htmx sends it) or as the form's first field, found within the first 64 KiB.
  Only then is the body handed on; multipart parts other than files are capped by Starlette at 1 MiB, files
  by the route's limit.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC_BODY_PATHS = frozenset({"/login"})
"""Routes that take a body from anyone (checked against the route table by a test)."""
LOGIN_LIMIT = 64 * 2**10
MULTIPART_ENVELOPE = 64 * 2**10
CSRF_SCAN_BYTES = 64 * 2**10
IMPORT_PATH = re.compile(r"^/(?:api/v1/)?projects/[^/]+/import$")
_CSRF_PART = re.compile(rb'content-disposition:[^\r\n]*name="csrf_token"[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)\r\n',
                        re.IGNORECASE)  # fmt: skip


def body_limit(path: str) -> int:
    """The most bytes a request body to `path` may have."""
    from app.config import get_settings

    settings = get_settings()
    if IMPORT_PATH.match(path):
        return settings.max_import_bytes + MULTIPART_ENVELOPE
    if path in PUBLIC_BODY_PATHS:
        return LOGIN_LIMIT
    return settings.max_body_bytes


class _Refused(Exception):
    def __init__(self, response: Response):
        self.response = response


def _too_large(limit: int) -> Response:
    return JSONResponse({"detail": f"The request body is larger than this route's limit of {limit} bytes."},
                        status_code=413, headers={"Connection": "close"})  # fmt: skip


def _login_required(scope) -> Response:
    request = Request(scope)
    path = scope["path"]
    if request.headers.get("hx-request"):
        return JSONResponse({"detail": "Log in first."}, status_code=401, headers={"HX-Redirect": "/login"})
    if not path.startswith("/api/") and "text/html" in request.headers.get("accept", ""):
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    return JSONResponse({"detail": "Log in first."}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _csrf_refused() -> Response:
    return JSONResponse({"detail": "Missing or wrong CSRF token. Reload the page and try again."}, status_code=403)


def _check_credentials(headers: Headers, cookie: str | None) -> str | None:
    """None when the token or session is valid; else "login". Returns the session's CSRF token as
    "csrf:<token>" for a browser session."""
    from app.auth import service
    from app.auth.deps import request_session

    authorization = headers.get("authorization", "")
    with request_session() as db:
        if authorization.lower().startswith("bearer "):
            return None if service.user_for_api_token(db, authorization[7:].strip()) else "login"
        found = service.session_for_token(db, cookie or "")
        return "login" if found is None else "csrf:" + found[0].csrf_token


class BodyLimitMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        try:
            receive = await self._admit(scope, receive)
        except _Refused as refused:
            return await refused.response(scope, receive, send)

        limit = body_limit(scope["path"])
        state = {"received": 0, "over": False, "started": False}

        async def counted_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # the 413 below answers instead
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _too_large(limit)(scope, receive, send)

    async def _admit(self, scope, receive):
        """Refuse what must not be read; return the receive callable that replays what was read to decide."""
        headers = Headers(scope=scope)
        path = scope["path"]
        limit = body_limit(path)
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise _Refused(JSONResponse({"detail": "Bad Content-Length."}, status_code=400))
            if int(length) > limit:
                raise _Refused(_too_large(limit))
        if path in PUBLIC_BODY_PATHS:
            return receive
        from app.auth.deps import SESSION_COOKIE

        cookie = Request(scope).cookies.get(SESSION_COOKIE)
        has_token = headers.get("authorization", "").lower().startswith("bearer ")
        if not has_token and not cookie:
            raise _Refused(_login_required(scope))
        # Every body (JSON and raw ones too: FastAPI parses those before the route's dependencies run) waits for
        # the credentials to be checked: a bogus token or session must not get megabytes read and parsed.
        try:
            verdict = await run_in_threadpool(_check_credentials, headers, cookie)
        except Exception as error:
            # Outside FastAPI's handlers here: a database outage must still be the 503 + Retry-After every route gives.
            from app.outage import database_unavailable_response, is_database_unavailable

            if not is_database_unavailable(error):
                raise
            raise _Refused(database_unavailable_response(Request(scope), error)) from error
        if verdict == "login":
            raise _Refused(_login_required(scope))
        content_type = headers.get("content-type", "").lower()
        is_multipart = content_type.startswith("multipart/form-data")
        if verdict is None or not is_multipart:
            # A token needs no CSRF; a JSON body's or a small form's CSRF token is checked by the route's dependency.
            return receive
        expected = verdict.removeprefix("csrf:")
        sent = headers.get("x-csrf-token")
        if sent:
            if not secrets.compare_digest(sent, expected):
                raise _Refused(_csrf_refused())
            return receive
        # No header: the token must be the form's first field (csrf_field() comes first in every form).
        buffered, prefix, more = [], b"", True
        while more and len(prefix) < CSRF_SCAN_BYTES:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            prefix += message.get("body", b"")
            more = message.get("more_body", False)
        match = _CSRF_PART.search(prefix[: CSRF_SCAN_BYTES + 4096])
        if match is None or not secrets.compare_digest(match.group(1), expected.encode()):
            raise _Refused(_csrf_refused())

        async def replay():
            if buffered:
                return buffered.pop(0)
            return await receive()

        return replay
