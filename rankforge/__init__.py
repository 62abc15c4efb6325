"""The Rankforge Python client: `from rankforge import Rankforge`. httpx only; no server code, no torch."""

from rankforge.client import Rankforge
from rankforge.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectionFailed,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RankforgeError,
    RateLimitError,
    ServerError,
    ValidationError,
    WaitTimeout,
)
from rankforge.types import Dataset, ImportResult, Job, ModelVersion, Project, Webhook

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ConnectionFailed",
    "Dataset",
    "ImportResult",
    "Job",
    "JobFailedError",
    "ModelVersion",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Project",
    "Rankforge",
    "RankforgeError",
    "RateLimitError",
    "ServerError",
    "ValidationError",
    "WaitTimeout",
    "Webhook",
]
