"""JSON API of model endpoints (admins and engineers only; no response ever carries the API key)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import Field

from app.api import PageAll
from app.auth.deps import DbSession, Staff
from app.jobs.schemas import JobOut
from app.jobs.service import job_json
from app.limits import Id, Input, varchar
from app.models import ModelEndpoint, ModelVersion, Project
from app.projects.service import get_project
from app.registry import endpoints
from app.registry.local_serving import create_serve_job
from app.registry.schemas import EndpointChecked, EndpointOut

router = APIRouter(prefix="/api/v1/endpoints", tags=["endpoints"])

Ref = Id | varchar(ModelVersion.name)


class EndpointCreate(Input):
    name: varchar(ModelVersion.name) = Field(min_length=1, description="The model version's unique name")
    base_url: varchar(ModelEndpoint.base_url) = Field(description="e.g. http://10.0.0.5:8000 or https://api.openai.com/v1")
    model: varchar(ModelEndpoint.model) = Field(min_length=1, description="The model's name at the server (GET /v1/models)")
    api_key: str | None = Field(None, max_length=1000, description="Stored encrypted; never shown again")
    api_key_env: varchar(ModelEndpoint.api_key_env) | None = Field(None, description="Or: the environment variable of the worker and web server holding the key")
    project_id: Id | varchar(Project.slug) | None = None
    sampling: dict | None = Field(None, description="Default sampling parameters (temperature, top_p, max_tokens, ...)")
    max_concurrency: int = Field(4, ge=1, le=256)
    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    timeout_seconds: float = Field(60.0, ge=0.1, le=3600)
    price_input: float | None = Field(None, ge=0, le=1e6, description="Price per million prompt tokens")
    price_output: float | None = Field(None, ge=0, le=1e6, description="Price per million completion tokens")
    json_output: bool = Field(False, description="The server supports response_format (JSON schema) for judges")
    check: bool = Field(True, description="Ask GET /v1/models first (the model must be listed)")


class EndpointUpdate(Input):
    base_url: varchar(ModelEndpoint.base_url) | None = None
    model: varchar(ModelEndpoint.model) | None = None
    api_key: str | None = Field(None, max_length=1000, description="A new key (\"\" removes it)")
    api_key_env: varchar(ModelEndpoint.api_key_env) | None = None
    sampling: dict | None = None
    max_concurrency: int | None = Field(None, ge=1, le=256)
    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    timeout_seconds: float | None = Field(None, ge=0.1, le=3600)
    price_input: float | None = Field(None, ge=0, le=1e6)
    price_output: float | None = Field(None, ge=0, le=1e6)
    json_output: bool | None = None
    check: bool = True


class ServeRequest(Input):
    version: Id | varchar(ModelVersion.name) = Field(description="A registered local version (id or name)")
    params: dict = Field({}, description="server (transformers | vllm), device, host, advertise_host, endpoint_name "
                                         "(default VERSION-served), start_timeout")


@router.post("/serve", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def serve_version(data: ServeRequest, db: DbSession, principal: Staff):
    """A `serve` job: the worker serves the local version with `transformers serve` (or vLLM) as the endpoint
    VERSION-served while the job runs; cancelling the job stops the server and marks the endpoint unavailable."""
    return job_json(create_serve_job(db, data.version, data.params, actor=principal.user))


@router.get("", response_model=list[EndpointOut])
def list_endpoints(db: DbSession, principal: Staff, response: Response, page: PageAll):
    """Newest first."""
    rows = endpoints.list_endpoints(db)
    page.header(response, len(rows))
    return [endpoints.endpoint_json(v, e) for v, e in page.slice(rows)]


@router.get("/{ref}", response_model=EndpointOut)
def get_endpoint(ref: Ref, db: DbSession, principal: Staff):
    return endpoints.endpoint_json(*endpoints.get_endpoint(db, ref))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointOut)
def create_endpoint(data: EndpointCreate, db: DbSession, principal: Staff):
    project = get_project(db, data.project_id) if data.project_id is not None else None
    values = data.model_dump(exclude={"project_id", "check"})
    version, endpoint = endpoints.create_endpoint(db, project=project, actor=principal.user, check=data.check, **values)
    return endpoints.endpoint_json(version, endpoint)


@router.patch("/{ref}", response_model=EndpointOut)
def update_endpoint(ref: Ref, data: EndpointUpdate, db: DbSession, principal: Staff):
    version, endpoint = endpoints.get_endpoint(db, ref)
    changes = data.model_dump(exclude={"check"}, exclude_unset=True)
    endpoints.update_endpoint(db, version, endpoint, actor=principal.user, check=data.check, **changes)
    return endpoints.endpoint_json(version, endpoint)


@router.post("/{ref}/check", response_model=EndpointChecked)
def check_endpoint(ref: Ref, db: DbSession, principal: Staff):
    """Ask the server again: GET /v1/models must answer and list the model."""
    version, endpoint = endpoints.get_endpoint(db, ref)
    served = endpoints.check_endpoint(db, version, endpoint)
    return endpoints.endpoint_json(version, endpoint) | {"served": served[:100]}
