"""Creating training jobs with every default resolved at once, so the job page shows what will run.
Services never commit: the request or CLI command does."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.audit import audit
from app.datasets.service import parse_spec
from app.errors import Unprocessable
from app.jobs.service import create_job
from app.jobs.trainer_child import check_launch_params
from app.models import DatasetSnapshot, Job, ModelVersion, Project, User
from app.registry.endpoints import is_endpoint
from app.registry.service import get_version, newest_version
from app.training.kinds import (
    DEFAULTS,
    KIND_INFO,
    SNAPSHOT_FORMAT,
    TRAINING_KINDS,
    needs_reward_model,
    split_params,
)
from trainer.params import parse_params
from trainer.results import SCORING_MODEL_KINDS


def validated_params(kind: str, params: dict | None) -> tuple[dict, dict]:
    """(app params, trainer params), the trainer's checked by trainer.params (torch-free): clear 422s."""
    app_params, trainer_params = split_params(params)
    check_launch_params(app_params)
    ids = app_params.get("prompt_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids)):
        raise Unprocessable("params.prompt_ids must be a list of prompt ids.")
    for name in ("base_model_from", "reward_model_from", "dataset_from", "round_id"):
        if app_params.get(name) is not None and not (isinstance(app_params[name], int) and app_params[name] > 0):
            raise Unprocessable(f"params.{name} must be an id.")
    try:
        parse_params(kind, trainer_params)
    except ValueError as error:
        raise Unprocessable(f"params: {error}") from error
    return app_params, trainer_params


def _resolve_version(db: Session, ref, kind: str, project: Project, *, local_only: bool = False) -> ModelVersion | None:
    if ref not in (None, ""):
        return get_version(db, ref, kind=kind)
    return newest_version(db, kind, project.id, local_only=local_only)


def _resolve_reward(db: Session, ref, project: Project) -> ModelVersion | None:
    """The reward model a job names (a reward model or a process reward model: trainer.results.SCORING_MODEL_KINDS),
    else the project's newest reward model."""
    if ref in (None, ""):
        return newest_version(db, "reward", project.id)
    version = get_version(db, ref)
    if version.kind not in SCORING_MODEL_KINDS:
        raise Unprocessable(f"Model version {version.name!r} is a {version.kind} model, not a reward model "
                            f"({' or '.join(SCORING_MODEL_KINDS)}).")  # fmt: skip
    return version


def create_training_job(db: Session, project: Project, kind: str, *, dataset_id: int | None = None,
                        base_model=None, reward_model=None, params: dict | None = None,
                        actor: User | None = None, depends_on: list[int] | tuple = ()) -> Job:  # fmt: skip
    """Queue a training job with every default resolved now, so the job page shows what will run."""
    kind = str(kind)
    if kind not in TRAINING_KINDS:
        raise Unprocessable(f"Unknown training kind {kind!r}; known: {', '.join(TRAINING_KINDS)}.")
    info = KIND_INFO[kind]
    if info.domain == "judges":  # a judge job names its judge (params.judge), which fixes its model and method
        from app.judges.service import create_judge_job

        return create_judge_job(db, project, params=params, actor=actor, depends_on=depends_on)
    app_params, trainer_params = validated_params(kind, params)
    if "attribute_weights" in DEFAULTS[kind] and "attribute_weights" not in trainer_params:
        # the project's attribute weights combine the heads into the scalar reward (issue 14)
        trainer_params["attribute_weights"] = {a["name"]: float(a.get("weight", 1.0)) for a in project.attributes or []}
    if dataset_id is not None:
        snapshot = db.get(DatasetSnapshot, dataset_id)
        if snapshot is None or snapshot.project_id != project.id:
            raise Unprocessable(f"No dataset {dataset_id} in project {project.slug}.")
        wanted = SNAPSHOT_FORMAT.get(kind)
        if wanted and snapshot.format != wanted:
            raise Unprocessable(
                f"A {kind} job needs a {wanted} snapshot; dataset {dataset_id} is {snapshot.format}."
            )
        if snapshot.status == "failed":
            raise Unprocessable(f"Dataset {dataset_id} failed to build: {snapshot.error}")
    elif kind in SNAPSHOT_FORMAT and app_params.get("dataset_from") is None:  # else: the one its dependency built
        spec = dict(app_params.get("snapshot") or {}) | {"format": SNAPSHOT_FORMAT[kind]}
        app_params["snapshot"] = parse_spec(spec).model_dump(mode="json")  # validated now, built by the job
    base = None
    if info.base_model == "any" and base_model not in (None, ""):
        base = get_version(db, base_model)  # a reward model may start from a policy or from a reward/encoder base
    elif info.base_model is not None:
        base = _resolve_version(db, base_model, "policy", project, local_only=not info.endpoint)
        if base is None:
            raise Unprocessable("No policy model version is registered: register one (`rankforge models add` or "
                                "`rankforge models init-tiny`) or pass base_model.")  # fmt: skip
    if base is not None and not info.endpoint and is_endpoint(db, base):
        raise Unprocessable(f"Model version {base.name!r} is an endpoint (served elsewhere, over HTTP): a {kind} job "
                            "needs a local checkpoint; only generate jobs (and judges) may use an endpoint.")  # fmt: skip
    reward = None
    if needs_reward_model(kind, trainer_params) or reward_model not in (None, ""):
        reward = _resolve_reward(db, reward_model, project)
        if reward is None:
            raise Unprocessable(f"A {kind} job needs a reward model version and none is registered: train one "
                                "(a reward job) or pass reward_model.")  # fmt: skip
    job = create_job(db, kind, project_id=project.id, params=app_params | trainer_params, dataset_id=dataset_id,
                     base_model_id=base.id if base else None, reward_model_id=reward.id if reward else None,
                     actor=actor, depends_on=depends_on)  # fmt: skip
    audit(db, actor, "job.create", "job", job.id, kind=kind)
    return job
