"""Job pages: the list (live), one job (a status partial that polls itself, progress with ETA, metric curves
drawn on the server as inline SVG, log tail, cancel) and the per-project training page."""

from __future__ import annotations

import contextlib
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.errors import RankforgeError
from app.jobs import service
from app.jobs.training import KEY_PARAMS
from app.models import TERMINAL_STATUSES, DatasetSnapshot, Job, JobMetric, ModelVersion, Project, utcnow
from app.projects.service import get_project
from app.registry.service import list_versions, newest_version
from app.web import is_htmx, render

router = APIRouter(tags=["pages"])

CURVES = (("Loss", ("loss",)), ("Reward", ("reward", "score", "accurac", "margin")), ("KL", ("kl",)))
"""Charts on the job page: a metric goes into the first chart whose words its name contains."""
MAX_SERIES = 4
CHART_W, CHART_H, PAD = 360, 160, 28
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def line_chart(title: str, series: dict[str, list[tuple[int, float]]]) -> Markup:
    """An inline SVG line chart (no script, no inline style: the page's CSP allows neither)."""
    points = [p for values in series.values() for p in values]
    if not points:
        return Markup("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x):
        return PAD + (x - x0) / (x1 - x0) * (CHART_W - 2 * PAD)

    def sy(y):
        return CHART_H - PAD - (y - y0) / (y1 - y0) * (CHART_H - 2 * PAD)

    parts = [f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line x1="{PAD}" y1="{CHART_H - PAD}" x2="{CHART_W - PAD}" y2="{CHART_H - PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{CHART_H - PAD}" stroke="#888"/>',
             f'<text x="{PAD}" y="{PAD - 8}" font-size="11" fill="currentColor">{escape(title)}</text>',
             f'<text x="2" y="{PAD + 4}" font-size="9" fill="currentColor">{_fmt(y1)}</text>',
             f'<text x="2" y="{CHART_H - PAD}" font-size="9" fill="currentColor">{_fmt(y0)}</text>',
             f'<text x="{CHART_W - PAD}" y="{CHART_H - 8}" font-size="9" text-anchor="end" fill="currentColor">step {x1}</text>']  # fmt: skip
    for index, (name, values) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        parts.append(f'<text x="{PAD + 4 + index * 84}" y="{CHART_H - 6}" font-size="9" fill="{color}">'
                     f"{escape(name[:18])}</text>")  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))


def metric_charts(rows: list[JobMetric]) -> list[Markup]:
    series: dict[str, dict[str, list[tuple[int, float]]]] = {title: {} for title, _ in CURVES}
    for row in rows:
        for name, value in (row.values or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                continue
            for title, words in CURVES:
                if any(word in name.lower() for word in words):
                    chart = series[title]
                    if name in chart or len(chart) < MAX_SERIES:
                        chart.setdefault(name, []).append((row.step, float(value)))
                    break
    return [line_chart(title, values) for title, values in series.items() if values]


def eta_seconds(job: Job) -> float | None:
    if job.status != "running" or not job.started_at or job.progress <= 0.01:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return elapsed * (1 - job.progress) / job.progress


def _status_context(db, job: Job) -> dict:
    metrics = list(
        db.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.step, JobMetric.id))
    )
    version_id = (job.result or {}).get("model_version_id")
    return {
        "job": job, "live": job.status not in TERMINAL_STATUSES, "charts": metric_charts(metrics),
        "last_metrics": metrics[-1].values if metrics else {}, "eta": eta_seconds(job),
        "version": db.get(ModelVersion, version_id) if version_id else None,
        "dataset": db.get(DatasetSnapshot, job.dataset_id) if job.dataset_id else None,
        "base": db.get(ModelVersion, job.base_model_id) if job.base_model_id else None,
        "reward": db.get(ModelVersion, job.reward_model_id) if job.reward_model_id else None,
        "project": db.get(Project, job.project_id) if job.project_id else None,
    }  # fmt: skip


@router.get("/jobs")
def jobs_page(request: Request, db: DbSession, principal: Staff, project_id: int | None = None):
    query = select(Job).order_by(Job.id.desc()).limit(200)
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    jobs = list(db.scalars(query))
    projects = {p.id: p for p in db.scalars(select(Project))}
    context = {"jobs": jobs, "projects": projects, "live": any(j.status not in TERMINAL_STATUSES for j in jobs),
               "project_id": project_id}  # fmt: skip
    if is_htmx(request):
        return render(request, "jobs/_table.html", context)
    return render(request, "jobs/list.html", context)


@router.get("/jobs/{job_id}")
def job_page(job_id: int, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    return render(request, "jobs/detail.html", _status_context(db, job))


@router.get("/jobs/{job_id}/status")
def job_status_partial(job_id: int, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    return render(request, "jobs/_status.html", _status_context(db, job))


@router.post("/jobs/{job_id}/cancel")
def cancel_job_page(job_id: int, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    with contextlib.suppress(RankforgeError):  # already finished: the page shows how
        service.request_cancel(db, job)
    if is_htmx(request):
        db.commit()
        return render(request, "jobs/_status.html", _status_context(db, job))
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _param_fields(kind: str, values: dict | None = None) -> list[dict]:
    from trainer.params import DEFAULTS, FIELD_DOCS

    values = values or {}
    return [{"name": name, "default": DEFAULTS[kind][name], "doc": FIELD_DOCS[kind].get(name, ""),
             "value": values.get(name, DEFAULTS[kind][name]),
             "type": type(DEFAULTS[kind][name]).__name__} for name in KEY_PARAMS[kind]]  # fmt: skip


def _train_context(
    db, project: Project, kind: str, form: dict | None = None, error: str | None = None
) -> dict:
    from app.jobs.training import SNAPSHOT_FORMAT, TRAINING_KINDS

    wanted = SNAPSHOT_FORMAT.get(kind)
    snapshots = list(db.scalars(select(DatasetSnapshot).where(DatasetSnapshot.project_id == project.id,
                                                              DatasetSnapshot.status == "ready")
                                .order_by(DatasetSnapshot.id.desc())))  # fmt: skip
    if wanted:
        snapshots = [s for s in snapshots if s.format == wanted]
    return {
        "project": project, "kind": kind, "kinds": TRAINING_KINDS, "snapshot_format": wanted, "snapshots": snapshots,
        "policies": list_versions(db, kind="policy"), "rewards": list_versions(db, kind="reward"),
        "default_policy": newest_version(db, "policy", project.id),
        "default_reward": newest_version(db, "reward", project.id),
        "fields": _param_fields(kind, (form or {}).get("params")), "form": form or {}, "error": error,
    }  # fmt: skip


@router.get("/projects/{project_id}/train")
def train_page(project_id: int, request: Request, db: DbSession, principal: Staff, kind: str = "reward"):
    from app.jobs.training import TRAINING_KINDS

    project = get_project(db, project_id)
    kind = kind if kind in TRAINING_KINDS else "reward"
    return render(request, "training/train.html", _train_context(db, project, kind))


def _read_param(raw: str, default):
    if isinstance(default, bool):
        return raw in ("on", "true", "1", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@router.post("/projects/{project_id}/train")
async def start_training(project_id: int, request: Request, db: DbSession, principal: Staff):
    from app.jobs.training import TRAINING_KINDS, create_training_job
    from trainer.params import DEFAULTS

    project = get_project(db, project_id)
    form = await request.form()
    kind = str(form.get("kind", ""))
    if kind not in TRAINING_KINDS:
        return render(
            request, "error.html", {"status": 422, "message": f"Unknown kind {kind!r}."}, status_code=422
        )
    params, error = {}, None
    for name in KEY_PARAMS[kind]:
        raw = str(form.get(f"param_{name}", "")).strip()
        default = DEFAULTS[kind][name]
        if raw == "" and not isinstance(default, bool):
            continue
        try:
            value = _read_param(raw, default)
        except ValueError:
            error = f"{name}: {raw!r} is not a {type(default).__name__}."
            break
        if value != default:
            params[name] = value
    if kind == "generate" and form.get("arena"):
        params["arena"] = True
    dataset = str(form.get("dataset_id", "")).strip()
    base, reward = str(form.get("base_model", "")).strip(), str(form.get("reward_model", "")).strip()
    if error is None:
        try:
            job = create_training_job(db, project, kind, dataset_id=int(dataset) if dataset else None,
                                      base_model=base or None, reward_model=reward or None, params=params,
                                      actor=principal.user)  # fmt: skip
        except RankforgeError as failure:
            error = str(failure.detail)
        else:
            db.commit()
            return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    db.rollback()
    context = _train_context(db, project, kind, {"params": params, "dataset_id": dataset, "base_model": base,
                                                  "reward_model": reward}, error)  # fmt: skip
    return render(request, "training/train.html", context, status_code=422)
