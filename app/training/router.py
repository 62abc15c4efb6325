"""`POST /api/v1/jobs`: start a job of any kind (same URL and shape as before): an export through the datasets
domain, every trainer kind through training.service."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field

from app.api import PageAll
from app.auth.deps import DbSession, Staff
from app.datasets.service import request_snapshot
from app.errors import Unprocessable
from app.jobs import service
from app.jobs.schemas import JobOut
from app.limits import Id, Input, varchar
from app.models import JobKind, ModelVersion, Project
from app.projects.service import get_project
from app.training import round_recipe, round_views, rounds
from app.training.schemas import RoundList, RoundOut
from app.training.service import create_training_job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


ModelRef = Id | varchar(ModelVersion.name)


class JobCreate(Input):
    kind: JobKind
    project_id: Id | varchar(Project.slug)
    dataset_id: Id | None = None
    base_model: ModelRef | None = Field(default=None, description="Model version id or name (default: newest policy).")
    reward_model: ModelRef | None = Field(default=None, description="Reward version id or name (ppo/grpo/rloo).")
    params: dict = {}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def create_job(data: JobCreate, db: DbSession, principal: Staff):
    project = get_project(db, data.project_id)
    if data.kind == JobKind.export:
        snapshot = request_snapshot(db, project, data.params, principal.user)
        return service.job_json(service.get_job(db, snapshot.job_id))
    if data.kind == JobKind.verify:
        from app.verifiers.service import create_verify_job

        job = create_verify_job(db, project, base_model=data.base_model, params=data.params, actor=principal.user)
        return service.job_json(job)
    if data.kind == JobKind.serve:  # the version served (base_model) and the server's params
        from app.registry.local_serving import create_serve_job

        if data.base_model is None:
            raise Unprocessable("A serve job names the local version to serve: base_model.")
        return service.job_json(create_serve_job(db, data.base_model, data.params, actor=principal.user))
    if data.kind == JobKind.judge:  # the judge (params.judge) names its model and method
        from app.judges.service import create_judge_job

        return service.job_json(create_judge_job(db, project, params=data.params, actor=principal.user))
    job = create_training_job(db, project, data.kind, dataset_id=data.dataset_id, base_model=data.base_model,
                              reward_model=data.reward_model, params=data.params, actor=principal.user)  # fmt: skip
    return service.job_json(job)


# --- rounds ------------------------------------------------------------------------------------------------------

rounds_router = APIRouter(prefix="/api/v1/projects/{project_ref}", tags=["rounds"])


@rounds_router.get("/rounds", response_model=RoundList)
def list_rounds(project_ref: str, db: DbSession, principal: Staff, page: PageAll):
    """The project's rounds, oldest first, with their jobs, versions and evaluation metrics, and the recipe."""
    project = get_project(db, project_ref)
    all_rounds = rounds.list_rounds(db, project)
    return {"rounds": [round_views.round_json(db, r) for r in page.slice(all_rounds)], **page.fields(len(all_rounds)),
            "recipe": round_recipe.get_recipe(project).model_dump(mode="json")}  # fmt: skip


@rounds_router.post("/rounds", status_code=status.HTTP_202_ACCEPTED, response_model=RoundOut)
def start_round(project_ref: str, db: DbSession, principal: Staff):
    """Start the next round now (409 while one is running)."""
    project = get_project(db, project_ref)
    return round_views.round_json(db, rounds.start_round(db, project, actor=principal.user))


@rounds_router.get("/rounds/recipe", response_model=round_recipe.RoundRecipe)
def get_recipe(project_ref: str, db: DbSession, principal: Staff):
    return round_recipe.get_recipe(get_project(db, project_ref)).model_dump(mode="json")


@rounds_router.put("/rounds/recipe", response_model=round_recipe.RoundRecipe)
def put_recipe(project_ref: str, body: round_recipe.RoundRecipe, db: DbSession, principal: Staff):
    """Change some of the recipe's settings: the ones sent (the others keep their values)."""
    values = body.model_dump(mode="json", exclude_unset=True)
    project = get_project(db, project_ref)
    return round_recipe.set_recipe(db, project, values, actor=principal.user).model_dump(mode="json")


@rounds_router.get("/rounds/{number}", response_model=RoundOut)
def get_round(project_ref: str, number: Id, db: DbSession, principal: Staff):
    return round_views.round_json(db, rounds.get_round(db, get_project(db, project_ref), number))


@rounds_router.post("/rounds/{number}/retry", response_model=RoundOut)
def retry_round(project_ref: str, number: Id, db: DbSession, principal: Staff):
    """Re-queue the failed step of a failed round (and the steps it stopped)."""
    round_ = rounds.get_round(db, get_project(db, project_ref), number)
    return round_views.round_json(db, rounds.retry_step(db, round_, actor=principal.user))


@rounds_router.post("/rounds/{number}/cancel", response_model=RoundOut)
def cancel_round(project_ref: str, number: Id, db: DbSession, principal: Staff):
    """Cancel the round's pending jobs."""
    round_ = rounds.get_round(db, get_project(db, project_ref), number)
    return round_views.round_json(db, rounds.cancel_round(db, round_, actor=principal.user))
