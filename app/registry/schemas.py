"""Response models of the model registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.api import Out, Page


class ModelVersionOut(Out):
    id: int
    name: str
    kind: str = Field(description="policy or reward")
    path: str
    project_id: int | None
    base_version_id: int | None = Field(description="The base of a LoRA adapter, or the version this one was "
                                        "trained from.")
    job_id: int | None
    dataset_id: int | None
    dataset_sha256: str | None
    metrics: dict[str, Any]
    adapter: bool = Field(description="A LoRA adapter on its base version rather than a full checkpoint.")
    created_at: datetime

    @classmethod
    def of(cls, version) -> ModelVersionOut:
        fields = {name: getattr(version, name) for name in cls.model_fields if name != "adapter"}
        return cls.model_validate(fields | {"metrics": version.metrics or {},
                                            "adapter": bool((version.manifest or {}).get("adapter"))})  # fmt: skip


class ModelVersionDetail(ModelVersionOut):
    manifest: dict[str, Any] = Field(description="The checkpoint's manifest.json (files, model card, lineage).")


class EndpointSettings(Out):
    """How the endpoint is called; never the API key itself."""

    base_url: str
    model: str = Field(description="The model's name at the server.")
    has_api_key: bool
    api_key_env: str | None
    sampling: dict[str, Any]
    max_concurrency: int
    requests_per_minute: int | None
    timeout_seconds: float
    price_input: float | None
    price_output: float | None
    json_output: bool
    checked_at: datetime | None
    unavailable: str | None = Field(None, description="Why it cannot be used now (its serve job stopped, ...); "
                                    "null: available.")
    served_by_job_id: int | None = Field(None, description="The worker's serve job running its server, if any.")


class EndpointOut(ModelVersionOut):
    """A model version served elsewhere behind an OpenAI-compatible API."""

    endpoint: EndpointSettings


class EndpointChecked(EndpointOut):
    served: list[str] = Field(description="The model names the server lists (the first 100).")


class StoredFileOut(Out):
    name: str = Field(description="The file's path inside the version's directory.")
    sha256: str
    bytes: int
    url: str = Field(description="Where to download it: a presigned URL where the artifact store signs them (S3), "
                     "else this API's streaming download (send the token).")


class ModelFilesOut(Page):
    id: int
    location: str = Field(description="Where the version lives in the artifact store (a path or a URL).")
    sha256: str = Field(description="SHA-256 of the lines 'name\\0file sha256\\n' over the files, sorted by name.")
    files: list[StoredFileOut]
