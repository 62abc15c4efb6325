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


class EmptyExport(Unprocessable):
    """The filters match no judgments: say so instead of writing an empty file."""


class ImportValidationError(Unprocessable):
    """An import file is rejected whole. ``errors`` holds the first problems (app.imports.parsers.LineError:
    line number and message), ``total`` counts all of them."""

    MAX_REPORTED = 100

    def __init__(self, errors: list, total: int | None = None):
        self.errors = list(errors)[: self.MAX_REPORTED]
        self.total = len(errors) if total is None else total
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"import rejected: {self.total} error{'s' if self.total != 1 else ''}"]
        for error in self.errors:
            where = "file" if error.line == 0 else f"line {error.line}"
            lines.append(f"  {where}: {error.message}")
        if self.total > len(self.errors):
            lines.append(f"  ... and {self.total - len(self.errors)} more")
        return "\n".join(lines)


class JobFailed(RankforgeError):
    """A job could not finish (its child process failed, its input is unusable). Raised inside the worker and
    recorded on the job as its error; never an HTTP answer."""

    status_code = 500


class JobCancelled(RankforgeError):
    """The job was cancelled while it ran."""

    status_code = 409


class BackupError(RankforgeError):
    """A backup or restore could not be made (a missing tool, a damaged backup, a non-empty target). Raised by
    app.backup for the CLI, which prints it; never an HTTP answer."""

    status_code = 500


class SecretKeyError(RankforgeError):
    """The server's secret key (RANKFORGE_SECRET_KEY, or the generated key file) is missing, malformed, or not
    the one a stored secret was encrypted with (app.crypto). A configuration fault, not the caller's."""

    status_code = 503


class FiguresPending(RankforgeError):
    """A large project's figures are being computed by a worker (app.quality.figures); try again shortly."""

    status_code = 503


class EndpointError(Unprocessable):
    """A model endpoint did not answer as an OpenAI-compatible server should (unreachable, wrong model name,
    refused address)."""
