"""Errors that carry their HTTP status; the app turns them into {"detail": ...} responses."""

from typing import Any


class RankforgeError(Exception):
    status_code = 400

    def __init__(self, detail: Any = None):
        self.detail = detail if detail is not None else self.__class__.__doc__
        super().__init__(str(self.detail))


class BadRequest(RankforgeError):
    """Bad request."""

    status_code = 400


class Unauthorized(RankforgeError):
    """Authentication required."""

    status_code = 401


class Forbidden(RankforgeError):
    """You do not have access to this."""

    status_code = 403


class NotFound(RankforgeError):
    """Not found."""

    status_code = 404


class Conflict(RankforgeError):
    """Conflict with the current state."""

    status_code = 409


class Gone(RankforgeError):
    """No longer available."""

    status_code = 410


class Unprocessable(RankforgeError):
    """The request is well-formed but its content is invalid."""

    status_code = 422


class PayloadTooLarge(RankforgeError):
    """Payload too large."""

    status_code = 413


class TooManyRequests(RankforgeError):
    """Too many attempts; try again later."""

    status_code = 429
