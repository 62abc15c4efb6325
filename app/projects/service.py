"""Project logic. Services never commit: the request or job boundary does."""

from __future__ import annotations

import re

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, NotFound
from app.models import (
    AuditLog,
    Comparison,
    GuidelineVersion,
    Project,
    ProjectMember,
    ProjectStatus,
    Role,
    User,
)
from app.projects.schemas import ProjectCreate, ProjectUpdate

GOLD_REQUIRED = 1_000_000
"""`required` of a gold comparison: every rater may meet it, it never fills up."""


def audit(db: Session, actor: User | None, action: str, target_type: str | None = None,
          target_id: int | None = None, **details) -> None:  # fmt: skip
    db.add(AuditLog(actor_id=actor.id if actor else None, action=action, target_type=target_type,
                    target_id=target_id, details=details))  # fmt: skip


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "project"


def get_project(db: Session, ref: str | int) -> Project:
    """A project by id or slug."""
    ref = str(ref)
    project = db.get(Project, int(ref)) if ref.isdigit() else None
    if project is None:
        project = db.scalar(select(Project).where(Project.slug == ref))
    if project is None:
        raise NotFound(f"No project {ref!r}.")
    return project


def _annotator_filter(user: User):
    member = exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == user.id)
    return (Project.status != ProjectStatus.archived) & (or_(~Project.members_only, member))


def visible_projects(db: Session, user: User) -> list[Project]:
    query = select(Project).order_by(Project.id)
    if user.role == Role.annotator:
        query = query.where(_annotator_filter(user))
    return list(db.scalars(query))


def get_visible_project(db: Session, ref: str | int, user: User) -> Project:
    project = get_project(db, ref)
    if user.role == Role.annotator and not db.scalar(
        select(exists().where(Project.id == project.id, _annotator_filter(user)))
    ):
        raise Forbidden("You are not a member of this project.")
    return project


def create_project(db: Session, data: ProjectCreate, actor: User | None) -> Project:
    slug = data.slug or slugify(data.name)
    if data.slug is None:
        base, n = slug, 2
        while db.scalar(select(exists().where(Project.slug == slug))):
            slug, n = f"{base}-{n}", n + 1
    elif db.scalar(select(exists().where(Project.slug == slug))):
        raise Conflict(f"A project with slug {slug!r} exists already.")
    from app.config import get_settings

    project = Project(
        slug=slug,
        name=data.name,
        description=data.description,
        mode=data.mode,
        overlap=data.overlap,
        max_overlap=max(data.max_overlap or data.overlap, data.overlap),
        allow_ties=data.allow_ties,
        attributes=[a.model_dump() | {"label": a.label or a.name.replace("_", " ").title()} for a in data.attributes],
        gold_rate=data.gold_rate,
        lease_seconds=data.lease_seconds or get_settings().lease_seconds,
        daily_cap=data.daily_cap,
        members_only=data.members_only,
        guideline_version=1,
        created_by_id=actor.id if actor else None,
    )
    db.add(project)
    db.flush()
    db.add(GuidelineVersion(project_id=project.id, version=1, body=data.guidelines,
                            created_by_id=actor.id if actor else None))  # fmt: skip
    audit(db, actor, "project.create", "project", project.id, slug=slug)
    return project


def current_guidelines(db: Session, project: Project) -> GuidelineVersion:
    return db.scalar(
        select(GuidelineVersion).where(
            GuidelineVersion.project_id == project.id, GuidelineVersion.version == project.guideline_version
        )
    )


def update_project(db: Session, project: Project, data: ProjectUpdate, actor: User | None) -> Project:
    changes = data.model_dump(exclude_unset=True)
    guidelines = changes.pop("guidelines", None)
    if guidelines is not None and guidelines != current_guidelines(db, project).body:
        project.guideline_version += 1
        db.add(GuidelineVersion(project_id=project.id, version=project.guideline_version, body=guidelines,
                                created_by_id=actor.id if actor else None))  # fmt: skip
    old_overlap = project.overlap
    for key, value in changes.items():
        setattr(project, key, value)
    project.max_overlap = max(project.max_overlap, project.overlap)
    if project.overlap != old_overlap:
        # Comparisons still at the old target move to the new one; adaptively raised ones keep theirs.
        db.execute(
            update(Comparison)
            .where(Comparison.project_id == project.id, Comparison.required == old_overlap, ~Comparison.is_gold)
            .values(required=project.overlap)
        )
    audit(db, actor, "project.update", "project", project.id, changes=sorted(changes) + (["guidelines"] if guidelines else []))
    return project


def set_members(db: Session, project: Project, user_ids: list[int], actor: User | None) -> None:
    db.query(ProjectMember).filter(ProjectMember.project_id == project.id).delete()
    from app.models import utcnow

    for user_id in sorted(set(user_ids)):
        db.add(ProjectMember(project_id=project.id, user_id=user_id, added_at=utcnow()))
    audit(db, actor, "project.members", "project", project.id, user_ids=sorted(set(user_ids)))
