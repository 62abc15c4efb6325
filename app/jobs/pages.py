"""Job pages: the list (live), one job (a status partial that polls itself, progress with ETA, metric curves
drawn on the server as inline SVG, log tail, cancel). The training page lives with training (app.training.pages)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup
from sqlalchemy import select

from app import charts
from app.api import newest_first
from app.auth.deps import DbSession, Staff
from app.charts import Axis
from app.errors import RankforgeError
from app.jobs import service
from app.limits import Id
from app.models import (
    TERMINAL_STATUSES,
    Completion,
    DatasetSnapshot,
    Job,
    JobMetric,
    ModelVersion,
    Project,
    utcnow,
)
from app.models.job import KINDS_WITH_CURVES
from app.models.job import PARAM_DEFAULTS as DEFAULTS
from app.web import garbled, is_htmx, render

router = APIRouter(tags=["pages"])

CURVES = (("Loss", ("loss",), ""), ("Reward", ("reward", "score", "accurac", "margin"), ""), ("KL", ("kl",), "nats"))
"""Charts on the job page (title, words, unit): a metric goes into the first chart whose words its name contains."""
MAX_SERIES = 4


def metric_charts(rows: list[JobMetric], kind: str) -> list[Markup]:
    """The job's curves by training step (one chart per CURVES entry that has metrics); with no metrics yet, one
    chart's empty state saying when they appear."""
    series: dict[str, dict[str, dict[int, float]]] = {title: {} for title, _, _ in CURVES}
    for row in rows:
        for name, value in (row.values or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                continue
            for title, words, _ in CURVES:
                if any(word in name.lower() for word in words):
                    chart = series[title]
                    if name in chart or len(chart) < MAX_SERIES:
                        chart.setdefault(name, {})[row.step] = float(value)
                    break
    out = []
    for title, _, unit in CURVES:
        curves = series[title]
        if not curves:
            continue
        steps = sorted({step for values in curves.values() for step in values})
        out.append(charts.line_chart(
            f"{title} by training step", steps, {name: [values.get(s) for s in steps] for name, values in curves.items()},
            x_axis=Axis("Training step", kind="number"), y_axis=Axis(title, unit), gaps=False,
            empty="No values yet."))  # fmt: skip
    if not out and kind in KINDS_WITH_CURVES:
        out.append(charts.empty_chart("Training curves", "Loss, reward and KL curves appear here while the job "
                                      "runs: the trainer reports them every logging_steps steps."))  # fmt: skip
    return out


def eta_seconds(job: Job) -> float | None:
    if job.status != "running" or not job.started_at or job.progress <= 0.01:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return elapsed * (1 - job.progress) / job.progress


DROPPED_WARN_SHARE = 0.05
"""The job page warns when a training job left out more than this share of its rows (too long for max_length)."""


def dropped_warning(job: Job) -> str | None:
    """A warning when the trainer dropped more than 5% of its pairs or rows (their completion alone is longer
    than max_length; longer prompts are cut at their start and kept), else None."""
    metrics = (job.result or {}).get("metrics") or {}
    for unit in ("pairs", "rows"):
        total, dropped = metrics.get(f"train/{unit}"), metrics.get(f"train/{unit}_dropped")
        numbers = isinstance(total, (int, float)) and isinstance(dropped, (int, float)) and total > 0
        if numbers and dropped / total > DROPPED_WARN_SHARE:
            truncated = metrics.get(f"train/{unit}_truncated", 0)
            return (f"{int(dropped)} of {int(total)} training {unit} ({dropped / total:.0%}) were dropped: their "
                    f"completion alone is longer than max_length. Raise max_length to keep them "
                    f"({int(truncated)} more were kept with the start of their prompt cut).")  # fmt: skip
    return None


LOG_SHOWN_CHARS = 4000


def log_from_line(text: str, limit: int = LOG_SHOWN_CHARS) -> str:
    """The end of a log, at most `limit` characters, starting at a line boundary: when the log is cut (here, or
    when it was stored: the job keeps only its last LOG_TAIL_CHARS), the cut line's fragment is left out."""
    cut = len(text) > limit or len(text) >= service.LOG_TAIL_CHARS
    tail = text[-limit:]
    newline = tail.find("\n")
    if cut and 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    return tail


def effective_params(job: Job) -> list[dict]:
    """Every parameter the job ran with: the kind's defaults (trainer.params) overlaid with what was set, each with
    whether it was set for this job; kinds without trainer defaults list what was set."""
    defaults = DEFAULTS.get(job.kind, {})
    params = job.params or {}
    names = list(defaults) + [name for name in params if name not in defaults]
    return [{"name": name, "value": params.get(name, defaults.get(name)), "set": name in params} for name in names]


PHASE_NAMES = {"startup": "start-up", "read_snapshot": "read snapshot", "read_prompts": "read prompts", "load_model": "load model",
               "tokenize": "tokenize", "prepare": "prepare", "train": "train", "generate": "generate",
               "evaluate": "evaluate", "save": "save"}  # fmt: skip
"""The trainer's time/<phase>_s metrics (trainer.timing), in the order the job page lists them."""


def time_phases(job: Job) -> dict | None:
    """Where a finished job's time went: [(phase, seconds)], the total, threads and processes; None when the
    trainer reported no phases."""
    metrics = (job.result or {}).get("metrics") or {}
    phases = [(label, metrics[f"time/{name}_s"]) for name, label in PHASE_NAMES.items()
              if isinstance(metrics.get(f"time/{name}_s"), (int, float))]  # fmt: skip
    if not phases:
        return None
    return {"phases": phases, "total": metrics.get("time/total_s"), "threads": metrics.get("system/threads"),
            "processes": metrics.get("system/processes")}  # fmt: skip


def unprintable_warning(db, job: Job) -> str | None:
    """A warning when completions a job wrote are garbled (app.web.garbled): they go to raters next."""
    ids = (job.result or {}).get("completion_ids") or []
    if not ids:
        return None
    texts = db.scalars(select(Completion.text).where(Completion.id.in_(ids[:5000]))).all()
    garbage = sum(1 for text in texts if garbled(text))
    if not garbage:
        return None
    return (f"{garbage} of {len(texts)} completions this job wrote are garbled (unprintable characters, undecodable "
            f"bytes): raters would see garbage. Pause the project or lower the batch's priority on the dashboard, "
            f"and check the policy and its tokenizer before the next generate job.")  # fmt: skip


def _status_context(db, job: Job) -> dict:
    metrics = list(
        db.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.step, JobMetric.id))
    )
    version_id = (job.result or {}).get("model_version_id")
    return {
        "job": job, "live": job.status not in TERMINAL_STATUSES, "charts": metric_charts(metrics, job.kind),
        "last_metrics": metrics[-1].values if metrics else {}, "eta": eta_seconds(job),
        "version": db.get(ModelVersion, version_id) if version_id else None,
        "dataset": db.get(DatasetSnapshot, job.dataset_id) if job.dataset_id else None,
        "base": db.get(ModelVersion, job.base_model_id) if job.base_model_id else None,
        "reward": db.get(ModelVersion, job.reward_model_id) if job.reward_model_id else None,
        "project": db.get(Project, job.project_id) if job.project_id else None,
        "dropped_warning": dropped_warning(job), "depends_on": service.dependencies(db, job.id),
        "time_phases": time_phases(job),
        "params": effective_params(job), "log": log_from_line(job.log_tail or ""),
        "unprintable_warning": unprintable_warning(db, job),
    }  # fmt: skip


@router.get("/jobs")
def jobs_page(request: Request, db: DbSession, principal: Staff, project_id: Id | None = None):
    jobs = list(db.scalars(newest_first(Job, project_id).limit(200)))
    projects = {p.id: p for p in db.scalars(select(Project))}
    context = {"jobs": jobs, "projects": projects, "live": any(j.status not in TERMINAL_STATUSES for j in jobs),
               "project_id": project_id}  # fmt: skip
    if is_htmx(request):
        return render(request, "jobs/_table.html", context)
    return render(request, "jobs/list.html", context)


@router.get("/jobs/{job_id}")
def job_page(job_id: Id, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    return render(request, "jobs/detail.html", _status_context(db, job))


@router.get("/jobs/{job_id}/status")
def job_status_partial(job_id: Id, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    return render(request, "jobs/_status.html", _status_context(db, job))


@router.post("/jobs/{job_id}/cancel")
def cancel_job_page(job_id: Id, request: Request, db: DbSession, principal: Staff):
    job = service.get_job(db, job_id)
    with contextlib.suppress(RankforgeError):  # already finished: the page shows how
        service.request_cancel(db, job)
    if is_htmx(request):
        db.commit()
        return render(request, "jobs/_status.html", _status_context(db, job))
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
