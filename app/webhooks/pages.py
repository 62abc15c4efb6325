"""Webhook pages: the endpoints (create, the secret shown once) and one endpoint's delivery log with manual
redelivery, enable/disable, and the notice when it was disabled after repeated failures."""

from __future__ import annotations

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from app.auth.deps import Admin, DbSession
from app.errors import RankforgeError
from app.limits import INT4_MAX, Id
from app.models import Project
from app.projects.service import get_project
from app.web import render
from app.webhooks import service

router = APIRouter(tags=["pages"])
PAGE_SIZE = 50


def _list_context(db) -> dict:
    return {"endpoints": service.list_endpoints(db), "events": service.EVENT_TYPES,
            "projects": list(db.scalars(select(Project).order_by(Project.id))), "form": {}}  # fmt: skip


@router.get("/webhooks")
def webhooks_page(request: Request, db: DbSession, principal: Admin):
    return render(request, "webhooks/list.html", _list_context(db))


@router.post("/webhooks")
async def create_webhook_page(request: Request, db: DbSession, principal: Admin, url: str = Form(""),
                              project: str = Form(""), description: str = Form("")):  # fmt: skip
    events = (await request.form()).getlist("events")
    form = {"url": url, "project": project, "description": description, "events": events}
    try:
        owner = get_project(db, project) if project.strip() else None
        endpoint = service.create_endpoint(db, url.strip(), list(events), project=owner,
                                           description=description.strip(), actor=principal.user)  # fmt: skip
    except RankforgeError as error:
        context = _list_context(db) | {"error": str(error.detail), "form": form}
        return render(request, "webhooks/list.html", context, status_code=error.status_code)
    # The secret is shown on this answer only (not a redirect: it must not land in a URL or the history).
    context = _list_context(db) | {"created": endpoint, "secret": service.signing_secret(endpoint)}
    return render(request, "webhooks/list.html", context, status_code=201)


@router.get("/webhooks/{endpoint_id}")
def webhook_page(endpoint_id: Id, request: Request, db: DbSession, principal: Admin,
                 page: int = Query(1, ge=1, le=INT4_MAX)):  # fmt: skip
    endpoint = service.get_endpoint(db, endpoint_id)
    page = max(1, page)
    deliveries = service.list_deliveries(db, endpoint.id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    return render(request, "webhooks/detail.html", {
        "endpoint": endpoint, "secret_hint": service.secret_hint(endpoint), "deliveries": deliveries[:PAGE_SIZE], "page": page,
        "has_next": len(deliveries) > PAGE_SIZE, "saved": request.query_params.get("saved"),
        "project": db.get(Project, endpoint.project_id) if endpoint.project_id else None,
    })  # fmt: skip


@router.post("/webhooks/{endpoint_id}/enabled")
def set_enabled_page(endpoint_id: Id, db: DbSession, principal: Admin, enabled: bool = Form(False)):
    service.update_endpoint(db, service.get_endpoint(db, endpoint_id), {"enabled": enabled}, principal.user)
    return RedirectResponse(f"/webhooks/{endpoint_id}?saved={'enabled' if enabled else 'disabled'}", status_code=303)


@router.post("/webhooks/{endpoint_id}/delete")
def delete_page(endpoint_id: Id, db: DbSession, principal: Admin):
    service.delete_endpoint(db, service.get_endpoint(db, endpoint_id), principal.user)
    return RedirectResponse("/webhooks", status_code=303)


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver_page(delivery_id: Id, db: DbSession, principal: Admin):
    delivery = service.redeliver(db, service.get_delivery(db, delivery_id), principal.user)
    return RedirectResponse(f"/webhooks/{delivery.endpoint_id}?saved=redelivery+queued", status_code=303)
