"""The endpoints page: model versions served elsewhere, and a form to add one (admins and engineers; the key is
written once and never shown again); and the version page's Serve button (a `serve` job for the worker)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.errors import RankforgeError, Unprocessable
from app.limits import Id
from app.models import Project
from app.projects.service import get_project
from app.registry import endpoints
from app.registry.local_serving import create_serve_job
from app.web import render

router = APIRouter(tags=["pages"])


def _context(db) -> dict:
    return {"endpoints": [endpoints.endpoint_json(v, e) for v, e in endpoints.list_endpoints(db)],
            "projects": list(db.scalars(select(Project).order_by(Project.id))), "form": {}}  # fmt: skip


def _number(value: str, cast, name: str):
    value = (value or "").strip()
    if not value:
        return None
    try:
        return cast(value)
    except ValueError:
        raise Unprocessable(f"{name} must be a number.") from None


@router.post("/models/{version_id:int}/serve")
def serve_version_page(version_id: Id, db: DbSession, principal: Staff, server: str = Form("transformers"),
                       device: str = Form("")):  # fmt: skip
    """Start a serve job for this local version (the version page's button); its job page follows it."""
    params = {"server": server.strip()} | ({"device": device.strip()} if device.strip() else {})
    job = create_serve_job(db, version_id, params, actor=principal.user)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/models/endpoints")
def endpoints_page(request: Request, db: DbSession, principal: Staff):
    return render(request, "models/endpoints.html", _context(db))


@router.post("/models/endpoints")
def add_endpoint_page(request: Request, db: DbSession, principal: Staff, name: str = Form(""),
                      base_url: str = Form(""), model: str = Form(""), api_key: str = Form(""),
                      api_key_env: str = Form(""), project: str = Form(""), max_concurrency: str = Form("4"),
                      requests_per_minute: str = Form(""), timeout_seconds: str = Form("60"),
                      price_input: str = Form(""), price_output: str = Form("")):  # fmt: skip
    form = {"name": name, "base_url": base_url, "model": model, "api_key_env": api_key_env, "project": project,
            "max_concurrency": max_concurrency, "requests_per_minute": requests_per_minute,
            "timeout_seconds": timeout_seconds, "price_input": price_input, "price_output": price_output}  # fmt: skip
    try:
        owner = get_project(db, project) if project.strip() else None
        version, _endpoint = endpoints.create_endpoint(
            db, name=name.strip(), base_url=base_url, model=model, api_key=api_key.strip() or None,
            api_key_env=api_key_env.strip() or None, project=owner,
            max_concurrency=_number(max_concurrency, int, "max_concurrency") or 4,
            requests_per_minute=_number(requests_per_minute, int, "requests_per_minute"),
            timeout_seconds=_number(timeout_seconds, float, "timeout_seconds") or 60.0,
            price_input=_number(price_input, float, "price_input"),
            price_output=_number(price_output, float, "price_output"), actor=principal.user)  # fmt: skip
    except RankforgeError as error:  # the form comes back filled in, the key field empty (never echoed)
        return render(request, "models/endpoints.html", _context(db) | {"error": str(error.detail), "form": form},
                      status_code=error.status_code)  # fmt: skip
    return render(request, "models/endpoints.html", _context(db) | {"created": version.name}, status_code=201)
