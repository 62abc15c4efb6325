"""JSON API for webhook endpoints and their delivery log. Admins only (endpoints carry secrets)."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from app.auth.deps import Admin, DbSession
from app.limits import INT4_MAX, Id
from app.projects.service import get_project
from app.webhooks import service
from app.webhooks.schemas import WebhookCreate, WebhookUpdate

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


@router.get("")
def list_webhooks(db: DbSession, principal: Admin, project_id: Id | None = None,
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=INT4_MAX)):  # fmt: skip
    return [service.endpoint_json(e) for e in service.list_endpoints(db, project_id=project_id, limit=limit,
                                                                      offset=offset)]  # fmt: skip


@router.post("", status_code=status.HTTP_201_CREATED)
def create_webhook(data: WebhookCreate, db: DbSession, principal: Admin):
    """Register an endpoint. The answer carries its `secret` (`whsec_...`): the only time it is shown."""
    project = get_project(db, data.project_id) if data.project_id is not None else None
    endpoint = service.create_endpoint(db, data.url, data.events, project=project, description=data.description,
                                       actor=principal.user)  # fmt: skip
    return service.endpoint_json(endpoint, with_secret=True)


@router.get("/events")
def event_types(principal: Admin):
    return {"events": list(service.EVENT_TYPES)}


@router.get("/{endpoint_id}")
def get_webhook(endpoint_id: Id, db: DbSession, principal: Admin):
    return service.endpoint_json(service.get_endpoint(db, endpoint_id))


@router.patch("/{endpoint_id}")
def update_webhook(endpoint_id: Id, data: WebhookUpdate, db: DbSession, principal: Admin):
    endpoint = service.get_endpoint(db, endpoint_id)
    return service.endpoint_json(service.update_endpoint(db, endpoint, data.model_dump(), principal.user))


@router.post("/{endpoint_id}/rotate-secret")
def rotate_secret(endpoint_id: Id, db: DbSession, principal: Admin):
    """A new secret, shown once; the old one stops signing at once."""
    endpoint = service.get_endpoint(db, endpoint_id)
    service.rotate_secret(db, endpoint, principal.user)
    return service.endpoint_json(endpoint, with_secret=True)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(endpoint_id: Id, db: DbSession, principal: Admin):
    service.delete_endpoint(db, service.get_endpoint(db, endpoint_id), principal.user)


@router.get("/{endpoint_id}/deliveries")
def list_deliveries(endpoint_id: Id, db: DbSession, principal: Admin,
                    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=INT4_MAX)):  # fmt: skip
    service.get_endpoint(db, endpoint_id)
    return [service.delivery_json(d) for d in service.list_deliveries(db, endpoint_id, limit=limit, offset=offset)]


@router.post("/deliveries/{delivery_id}/redeliver")
def redeliver(delivery_id: Id, db: DbSession, principal: Admin):
    return service.delivery_json(service.redeliver(db, service.get_delivery(db, delivery_id), principal.user))
