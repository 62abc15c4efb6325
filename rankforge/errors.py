"""Exceptions raised by the client. API errors carry the HTTP status and the API's `detail`."""

from __future__ import annotations

from typing import Any


class RankforgeError(Exception):
    """Base of every error the client raises."""


class APIError(RankforgeError):
    """The server answered with an error status. `status_code` and `detail` (the API's `{"detail": ...}`)."""

    def __init__(self, status_code: int, detail: Any, *, method: str = "", url: str = ""):
        self.status_code, self.detail, self.method, self.url = status_code, detail, method, url
        super().__init__(f"{status_code} {method} {url}: {detail}".replace("  ", " "))


class BadRequestError(APIError):
    """400"""


class AuthenticationError(APIError):
    """401: no token, or a wrong one."""


class PermissionDeniedError(APIError):
    """403: the token's user may not do this."""


class NotFoundError(APIError):
    """404"""


class ConflictError(APIError):
    """409"""


class PayloadTooLargeError(APIError):
    """413"""


class ValidationError(APIError):
    """422: the request was understood but its content is invalid (`detail` says what)."""


class RateLimitError(APIError):
    """429 (after the retries ran out)."""


class ServerError(APIError):
    """5xx (after the retries ran out, for idempotent calls)."""


STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 422: ValidationError, 429: RateLimitError,
}  # fmt: skip


def error_for(status_code: int, detail: Any, *, method: str = "", url: str = "") -> APIError:
    cls = STATUS_ERRORS.get(status_code) or (ServerError if status_code >= 500 else APIError)
    return cls(status_code, detail, method=method, url=url)


class ConnectionFailed(RankforgeError):
    """The server could not be reached (after the retries, for idempotent calls)."""


class JobFailedError(RankforgeError):
    """A job (or the export behind a dataset) that was waited for ended failed or cancelled."""

    def __init__(self, job: Any, message: str):
        self.job = job
        super().__init__(message)


class WaitTimeout(RankforgeError, TimeoutError):
    """`wait(..., timeout=...)` ran out before the job or dataset finished."""
