"""The per-project training page: pick a kind, see its key hyperparameters with their defaults and docs, start a
job (then the job's page follows it)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.errors import RankforgeError
from app.models import DatasetSnapshot, Project
from app.projects.service import get_project
from app.registry.service import list_versions, newest_version
from app.training.kinds import (
    DEFAULTS,
    FIELD_DOCS,
    KEY_PARAMS,
    SNAPSHOT_FORMAT,
    TRAINING_KINDS,
    kind_page_facts,
)
from app.training.service import create_training_job
from app.web import render

router = APIRouter(tags=["pages"])


def _param_fields(kind: str, values: dict | None = None, names: tuple[str, ...] | None = None) -> list[dict]:
    """Form fields for `names` (the kind's key params by default); a value that is not a number, flag or text
    (a list, an object, or a default of none) is shown and read as JSON."""
    values = values or {}
    fields = []
    for name in KEY_PARAMS[kind] if names is None else names:
        default, value = DEFAULTS[kind][name], values.get(name, DEFAULTS[kind][name])
        kind_of = type(default).__name__ if isinstance(default, (bool, int, float, str)) else "json"
        shown = json.dumps(value) if kind_of == "json" else value
        fields.append({"name": name, "default": json.dumps(default) if kind_of == "json" else default,
                       "doc": FIELD_DOCS[kind].get(name, ""), "value": shown, "type": kind_of})  # fmt: skip
    return fields


def _other_params(kind: str) -> tuple[str, ...]:
    """Every other hyperparameter of the kind (max_length and the like: what the job page's warnings mention)."""
    return tuple(name for name in DEFAULTS[kind] if name not in KEY_PARAMS[kind])


def _train_context(
    db, project: Project, kind: str, form: dict | None = None, error: str | None = None
) -> dict:
    wanted = SNAPSHOT_FORMAT.get(kind)
    snapshots = list(db.scalars(select(DatasetSnapshot).where(DatasetSnapshot.project_id == project.id,
                                                              DatasetSnapshot.status == "ready")
                                .order_by(DatasetSnapshot.id.desc())))  # fmt: skip
    if wanted:
        snapshots = [s for s in snapshots if s.format == wanted]
    return {
        "project": project, "kind": kind, "kinds": TRAINING_KINDS, "facts": kind_page_facts(kind),
        "snapshot_format": wanted, "snapshots": snapshots,
        "policies": list_versions(db, kind="policy"), "rewards": list_versions(db, kind="reward"),
        "default_policy": newest_version(db, "policy", project.id),
        "default_reward": newest_version(db, "reward", project.id),
        "fields": _param_fields(kind, (form or {}).get("params")),
        "more_fields": _param_fields(kind, (form or {}).get("params"), _other_params(kind)),
        "form": form or {}, "error": error,
    }  # fmt: skip


@router.get("/projects/{project_ref}/train")
def train_page(project_ref: str, request: Request, db: DbSession, principal: Staff, kind: str = TRAINING_KINDS[0],
               dataset_id: str = ""):  # fmt: skip
    """The form; `dataset_id` preselects a snapshot (the dataset page's "Train on this snapshot")."""
    project = get_project(db, project_ref)
    kind = kind if kind in TRAINING_KINDS else TRAINING_KINDS[0]
    return render(request, "training/train.html", _train_context(db, project, kind, {"dataset_id": dataset_id[:20]}))


def _read_param(raw: str, default):
    if default is None or isinstance(default, (list, dict)):
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # a plain word where a default of none allows text (e.g. a model name)
    if isinstance(default, bool):
        return raw in ("on", "true", "1", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@router.post("/projects/{project_ref}/train")
async def start_training(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    form = await request.form()
    kind = str(form.get("kind", ""))
    if kind not in TRAINING_KINDS:
        return render(
            request, "error.html", {"status": 422, "message": f"Unknown kind {kind!r}."}, status_code=422
        )
    params, error = {}, None
    # A browser leaves an unchecked box out of the form: a flag the form showed (named in `shown_flag`) and did not
    # send is False; a flag it did not show keeps its default (a script posting only the fields it sets).
    shown_flags = set(form.getlist("shown_flag"))
    for name in DEFAULTS[kind]:
        raw = str(form.get(f"param_{name}", "")).strip()
        default = DEFAULTS[kind][name]
        if raw == "" and not (isinstance(default, bool) and name in shown_flags):
            continue
        try:
            value = _read_param(raw, default)
        except ValueError:
            error = f"{name}: {raw!r} is not a {type(default).__name__}."
            break
        if value != default:
            params[name] = value
    if kind_page_facts(kind)["arena"] and form.get("arena"):
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
