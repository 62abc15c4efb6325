"""Dataset pages (admins and engineers): list, detail with a live status partial, downloads, delete, and
the export form posted from a project page."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, time

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup
from sqlalchemy import select

from app import charts
from app.api import newest_first
from app.auth.deps import Admin, DbSession, Staff
from app.charts import Axis
from app.datasets import service
from app.errors import Conflict, RankforgeError, Unprocessable
from app.limits import Id
from app.models import DatasetSnapshot, Job, Project, User
from app.projects.service import get_project
from app.store import open_location
from app.web import is_htmx, render
from trainer.params import KIND_INFO

router = APIRouter(tags=["pages"])

PREVIEW_ROWS = 5
PREVIEW_CHARS = 600
"""A preview cell longer than this is cut: the page shows the shape of the rows, the file has the rest."""


@router.get("/datasets")
def datasets_page(request: Request, db: DbSession, principal: Staff, project_id: Id | None = None):
    snapshots = list(db.scalars(newest_first(DatasetSnapshot, project_id).limit(200)))
    projects = _names(db, Project, Project.name, {s.project_id for s in snapshots})
    creators = _names(db, User, User.username, {s.created_by_id for s in snapshots if s.created_by_id})
    flash = "Dataset deleted." if request.query_params.get("deleted") else None
    return render(request, "datasets/list.html",
                  {"snapshots": snapshots, "projects": projects, "creators": creators, "flash": flash})  # fmt: skip


def _names(db, model, column, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(db.execute(select(model.id, column).where(model.id.in_(ids))).all())


@router.get("/datasets/{dataset_id}")
def dataset_page(dataset_id: Id, request: Request, db: DbSession, principal: Staff):
    """The detail page; an htmx request gets only the status partial (it polls itself while building)."""
    snapshot = service.get_snapshot(db, dataset_id)
    job = db.get(Job, snapshot.job_id) if snapshot.job_id else None
    if is_htmx(request):
        response = render(request, "datasets/_status.html",
                          {"snapshot": snapshot, "job": job, "status": effective_status(snapshot, job)})  # fmt: skip
        if effective_status(snapshot, job) != "building":
            response.headers["HX-Refresh"] = "true"  # finished: reload once to show files, preview, chart
        return response
    return render(request, "datasets/detail.html", _detail_context(db, snapshot, job))


def effective_status(snapshot: DatasetSnapshot, job: Job | None) -> str:
    """The snapshot's status, or `failed` when its job gave up (e.g. the last attempt's worker died)."""
    if snapshot.status == "building" and job is not None and job.status in ("failed", "cancelled"):
        return "failed"
    return snapshot.status


def _detail_context(db, snapshot: DatasetSnapshot, job: Job | None) -> dict:
    project = db.get(Project, snapshot.project_id)
    creator = db.get(User, snapshot.created_by_id) if snapshot.created_by_id else None
    manifest = snapshot.manifest or {}
    return {
        "snapshot": snapshot,
        "job": job,
        "status": effective_status(snapshot, job),
        "project": project,
        "creator": creator,
        "spec_json": json.dumps(snapshot.spec, indent=2, sort_keys=True),
        "guideline_versions": manifest.get("guideline_versions", []),
        "file_sizes": {name: info.get("bytes") for name, info in manifest.get("files", {}).items()},
        "preview": preview_rows(snapshot) if snapshot.status == "ready" else [],
        "chart": pairs_per_day_svg(manifest.get("rows_per_day") or {}, snapshot.format),
        "train_kinds": [kind for kind, info in KIND_INFO.items() if info.dataset_format == snapshot.format],
    }


def preview_rows(snapshot: DatasetSnapshot, limit: int = PREVIEW_ROWS) -> list[dict[str, str]]:
    """The first rows of the train split (test when train is empty), each value as short text."""
    artifact = open_location(service.snapshot_location(snapshot))  # read as it streams, from any store
    for split in ("train", "test"):
        if f"{split}.jsonl" not in (snapshot.files or []):
            continue
        rows = []
        with io.TextIOWrapper(artifact.open_file(f"{split}.jsonl"), encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                rows.append({key: _short(value) for key, value in row.items()})
                if len(rows) >= limit:
                    break
        if rows:
            return rows
    return []


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + " …"


def pairs_per_day_svg(rows_per_day: dict[str, int], export_format: str) -> Markup:
    """Rows per day of the judgments behind the snapshot, as a bar chart (app.charts)."""
    label = "Pairs" if export_format == "pairs" else "Rows"
    days = sorted(d for d in rows_per_day if _is_date(d))  # "unknown": judgments without a date
    return charts.bar_chart(
        f"{label} per day of judgment", [datetime.fromisoformat(d) for d in days], [rows_per_day[d] for d in days],
        x_axis=Axis("Day of the judgment", "UTC"), y_axis=Axis(label, "per day"), bar_span=86400,
        empty="This snapshot's manifest records no dates: snapshots built by this version record the rows of "
              "each day of judgment; export again to see them.")  # fmt: skip


@router.get("/datasets/{dataset_id}/files/{name:path}")
def download_page_file(dataset_id: Id, name: str, db: DbSession, principal: Staff):
    """Download one file of a ready snapshot (name checked against the manifest, hashes verified)."""
    return service.ready_download(db, dataset_id, name)


@router.post("/datasets/{dataset_id}/delete")
def delete_page(dataset_id: Id, request: Request, db: DbSession, principal: Admin):
    snapshot = service.get_snapshot(db, dataset_id)
    try:
        service.delete_snapshot(db, snapshot, principal.user)
    except Conflict as error:
        job = db.get(Job, snapshot.job_id) if snapshot.job_id else None
        context = _detail_context(db, snapshot, job) | {"error": str(error.detail)}
        return render(request, "datasets/detail.html", context, status_code=409)
    return RedirectResponse("/datasets?deleted=1", status_code=303)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _day(text: str, field: str) -> datetime | None:
    """'' -> None; '2024-05-01' -> midnight (the end date is exclusive: the caller adds a day)."""
    if not text.strip():
        return None
    try:
        return datetime.combine(date.fromisoformat(text.strip()), time.min)
    except ValueError as error:
        raise Unprocessable(f"{field}: write a date like 2024-05-31.") from error


@router.post("/projects/{project_ref}/datasets")
def export_page(project_ref: str, request: Request, db: DbSession, principal: Staff,
                format: str = Form("pairs"), date_from: str = Form(""), date_to: str = Form(""),
                min_agreement: float = Form(0.0), min_votes: int = Form(1), exclude_unsafe: bool = Form(False),
                exclude_gold: bool = Form(False), include_ai: bool = Form(False), test_fraction: float = Form(0.1),
                seed: int = Form(0), conversational: str = Form("auto"), hf_datasets: bool = Form(False)):  # fmt: skip
    """The project page's export form: queue the snapshot's export job and go to its page."""
    from datetime import timedelta

    project = get_project(db, project_ref)
    try:
        start, end = _day(date_from, "From"), _day(date_to, "To")
        params = {
            "format": format,
            "filters": {
                "date_from": start.isoformat() if start else None,
                "date_to": (end + timedelta(days=1)).isoformat() if end else None,  # inclusive in the form
                "min_agreement": min_agreement, "min_votes": min_votes, "exclude_unsafe": exclude_unsafe,
                "exclude_gold": exclude_gold, "sources": ["human", "imported", "ai"] if include_ai else ["human", "imported"],
            },
            "split": {"test_fraction": test_fraction, "seed": seed},
            "conversational": {"true": True, "false": False}.get(conversational),  # "auto" (or absent): None
            "hf_datasets": hf_datasets,
        }  # fmt: skip
        snapshot = service.request_snapshot(db, project, params, principal.user)
    except RankforgeError as error:
        return render(request, "error.html", {"status": 422, "message": f"Export not started: {error.detail}"},
                      status_code=422)  # fmt: skip
    return RedirectResponse(f"/datasets/{snapshot.id}", status_code=303)
