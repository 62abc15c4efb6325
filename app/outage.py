"""A database that is down or unreachable answers 503 with Retry-After, not 500.

Raised anywhere in a request (a dependency, the endpoint, the commit at the end), these errors mean the
database could not be reached or lost the connection (PostgreSQL restarting, a failover, the pool timing out,
SQLite's write lock held past busy_timeout): the request did not happen and can be retried as it is. Nothing
of the error (host, port, SQL, parameters) reaches the client. Other database errors (constraint violations,
bugs) stay 500s.
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable right now; nothing was changed. Try again in a few seconds."

log = logging.getLogger("rankforge.outage")

try:  # the PostgreSQL driver; raw cursors (statistics' COPY) raise its errors unwrapped
    import psycopg

    _DRIVER_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError,
                                                       sqlite3.OperationalError)  # fmt: skip
except ImportError:  # pragma: no cover - psycopg is a dependency
    _DRIVER_ERRORS = (sqlite3.OperationalError,)

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # the connection pool had nothing to give within its timeout
    *_DRIVER_ERRORS,
)


def is_database_unavailable(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, UNAVAILABLE_ERRORS)


def database_unavailable_response(request: Request, error: BaseException):
    # Logged without the statement or its parameters (engines hide them too): one line, the error's class.
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, type(error).__name__)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    wants_html = not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")
    if wants_html and not request.headers.get("hx-request"):
        from app.web import templates

        try:
            return templates.TemplateResponse(request, "error.html", {"status": 503, "message": MESSAGE, "user": None,
                                                                      "csrf_token": ""},
                                              status_code=503, headers=headers)  # fmt: skip
        except Exception:  # noqa: BLE001 - the error page must not turn the 503 into a 500
            pass
    return JSONResponse({"detail": MESSAGE}, status_code=503, headers=headers)


def register(app) -> None:
    """Install the handlers on a FastAPI app."""

    async def handler(request: Request, error: Exception):
        if not is_database_unavailable(error):
            raise error
        return database_unavailable_response(request, error)

    for error_class in (*UNAVAILABLE_ERRORS, sa_exc.DBAPIError):
        app.add_exception_handler(error_class, handler)
