"""JSON API for webhook endpoints and their delivery log. Admins only (endpoints carry secrets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from app.api import Paging, paging
from app.auth.deps import Admin, DbSession
from app.limits import Id
from app.projects.service import get_project
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryOut,
    EventTypes,
    WebhookCreate,
    WebhookOut,
    WebhookUpdate,
    WebhookWithSecret,
)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


@router.get("", response_model=list[WebhookOut])
def list_webhooks(db: DbSession, principal: Admin, response: Response, page: Annotated[Paging, paging(100, 1000)],
                  project_id: Id | None = None):  # fmt: skip
    """By id."""
    endpoints = service.list_endpoints(db, project_id=project_id)  # a handful: counted as a whole
    page.header(response, len(endpoints))
    return [service.endpoint_json(e) for e in page.slice(endpoints)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookWithSecret)
def create_webhook(data: WebhookCreate, db: DbSession, principal: Admin):
    """Register an endpoint. The answer carries its `secret` (`whsec_...`): the only time it is shown."""
    project = get_project(db, data.project_id) if data.project_id is not None else None
    endpoint = service.create_endpoint(db, data.url, data.events, project=project, description=data.description,
                                       actor=principal.user)  # fmt: skip
    return service.endpoint_json(endpoint, with_secret=True)


@router.get("/events", response_model=EventTypes)
def event_types(principal: Admin):
    return {"events": list(service.EVENT_TYPES)}


@router.get("/{endpoint_id}", response_model=WebhookOut)
def get_webhook(endpoint_id: Id, db: DbSession, principal: Admin):
    return service.endpoint_json(service.get_endpoint(db, endpoint_id))


@router.patch("/{endpoint_id}", response_model=WebhookOut)
def update_webhook(endpoint_id: Id, data: WebhookUpdate, db: DbSession, principal: Admin):
    endpoint = service.get_endpoint(db, endpoint_id)
    return service.endpoint_json(service.update_endpoint(db, endpoint, data.model_dump(), principal.user))


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookWithSecret)
def rotate_secret(endpoint_id: Id, db: DbSession, principal: Admin):
    """A new secret, shown once; the old one stops signing at once."""
    endpoint = service.get_endpoint(db, endpoint_id)
    service.rotate_secret(db, endpoint, principal.user)
    return service.endpoint_json(endpoint, with_secret=True)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(endpoint_id: Id, db: DbSession, principal: Admin):
    service.delete_endpoint(db, service.get_endpoint(db, endpoint_id), principal.user)


@router.get("/{endpoint_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(endpoint_id: Id, db: DbSession, principal: Admin, response: Response,
                    page: Annotated[Paging, paging(50, 500)]):  # fmt: skip
    """Newest first."""
    service.get_endpoint(db, endpoint_id)
    deliveries, total = page.rows(db, service.deliveries_query(endpoint_id))
    page.header(response, total)
    return [service.delivery_json(d) for d in deliveries]


@router.post("/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut)
def redeliver(delivery_id: Id, db: DbSession, principal: Admin):
    return service.delivery_json(service.redeliver(db, service.get_delivery(db, delivery_id), principal.user))
