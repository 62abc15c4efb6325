"""Project logic. Services never commit: the request or job boundary does."""

from __future__ import annotations

import re

from sqlalchemy import case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.audit import audit
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.limits import INT4_MAX, bad_character, column_length, parse_id
from app.models import (
    Comparison,
    GuidelineVersion,
    Judgment,
    Project,
    ProjectMember,
    ProjectStatus,
    Role,
    User,
)
from app.projects.schemas import ProjectCreate, ProjectUpdate

GOLD_REQUIRED = 1_000_000
"""`required` of a gold comparison: every rater may meet it, it never fills up."""


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "project"


def parse_ref(ref: str | int) -> tuple[int | None, str | None]:
    """A project reference as (id, slug): the id when it is ASCII digits within int4, the slug when it
    could be one (short enough, storable characters); None for what it cannot be."""
    ref = str(ref)
    slug = ref if len(ref) <= column_length(Project.slug) and bad_character(ref) is None else None
    return parse_id(ref), slug


def get_project(db: Session, ref: str | int) -> Project:
    """A project by id or slug."""
    ref = str(ref)
    project_id, slug = parse_ref(ref)
    project = db.get(Project, project_id) if project_id is not None else None
    if project is None and slug is not None:
        project = db.scalar(select(Project).where(Project.slug == slug))
    if project is None:
        raise NotFound(f"No project {ref!r}.")
    return project


def annotator_filter(user: User):
    member = exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == user.id)
    return (Project.status != ProjectStatus.archived) & (or_(~Project.members_only, member))


def rating_filter(user: User):
    """Who may rate a project (claim, submit): everyone unless it is members-only, then only its members, whatever
    their role (admins and engineers who rate are held to the same rule as annotators)."""
    member = exists().where(ProjectMember.project_id == Project.id, ProjectMember.user_id == user.id)
    return or_(~Project.members_only, member)


def may_rate(db: Session, project: Project, user: User) -> bool:
    if not project.members_only:
        return True
    return bool(db.scalar(select(exists().where(ProjectMember.project_id == project.id,
                                                ProjectMember.user_id == user.id))))  # fmt: skip


def revoke_nonmember_leases(db: Session, project: Project) -> int:
    """In a members-only project, end the active leases of raters who are not (or no longer) members: state
    'revoked', slot given back, and a submit of such an assignment is refused. Returns the leases revoked."""
    from app.models import Assignment, TrajectoryLease, utcnow

    if not project.members_only:
        return 0
    member = exists().where(ProjectMember.project_id == project.id, ProjectMember.user_id == Assignment.rater_id)
    revoked = db.execute(
        update(Assignment)
        .where(Assignment.project_id == project.id, Assignment.state == "active", ~member)
        .values(state="revoked", finished_at=utcnow())
        .returning(Assignment.comparison_id)
        .execution_options(synchronize_session=False)
    ).scalars().all()
    counts: dict[int, int] = {}
    for comparison_id in revoked:
        counts[comparison_id] = counts.get(comparison_id, 0) + 1
    for comparison_id, n in counts.items():
        db.execute(update(Comparison).where(Comparison.id == comparison_id).values(n_leases=Comparison.n_leases - n))
    trajectories = db.execute(  # trajectory leases (app.steps): slots count live leases only, so ending them frees them
        update(TrajectoryLease)
        .where(TrajectoryLease.project_id == project.id, TrajectoryLease.state == "active",
               ~exists().where(ProjectMember.project_id == project.id,
                               ProjectMember.user_id == TrajectoryLease.rater_id))
        .values(state="revoked", finished_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount or 0  # fmt: skip
    return len(revoked) + trajectories


def visible_projects(db: Session, user: User) -> list[Project]:
    query = select(Project).order_by(Project.id)
    if user.role == Role.annotator:
        query = query.where(annotator_filter(user))
    return list(db.scalars(query))


def get_visible_project(db: Session, ref: str | int, user: User) -> Project:
    project = get_project(db, ref)
    if user.role == Role.annotator and not db.scalar(
        select(exists().where(Project.id == project.id, annotator_filter(user)))
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
        allow_new_answers=data.allow_new_answers,
        practice_required=data.practice_required or 0,
        practice_pass_rate=data.practice_pass_rate if data.practice_pass_rate is not None else 0.8,
        pay_unit=data.pay_unit,
        pay_rate=data.pay_rate,
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
    # null means "unchanged" except where the column takes it (daily_cap: null is no cap)
    changes = {key: value for key, value in data.model_dump(exclude_unset=True).items()
               if value is not None or key in ("daily_cap", "pay_unit", "pay_rate")}  # fmt: skip
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
    if changes.get("members_only"):
        db.flush()
        revoke_nonmember_leases(db, project)
    return project


def set_members(db: Session, project: Project, user_ids: list[int], actor: User | None) -> None:
    wanted = {user_id for user_id in user_ids if 1 <= user_id <= INT4_MAX}
    known = set(db.scalars(select(User.id).where(User.id.in_(wanted)))) if wanted else set()
    unknown = sorted(set(user_ids) - known)
    if unknown:
        raise Unprocessable(f"user_id: no user {', '.join(map(str, unknown[:10]))}.")
    db.query(ProjectMember).filter(ProjectMember.project_id == project.id).delete()
    from app.models import utcnow

    for user_id in sorted(set(user_ids)):
        db.add(ProjectMember(project_id=project.id, user_id=user_id, added_at=utcnow()))
    audit(db, actor, "project.members", "project", project.id, user_ids=sorted(set(user_ids)))
    db.flush()
    revoke_nonmember_leases(db, project)


def project_overview(db: Session, project: Project) -> dict:
    complete = case((Comparison.n_judgments >= Comparison.required, 1), else_=0)
    open_slots = case((Comparison.required > Comparison.n_judgments, Comparison.required - Comparison.n_judgments),
                      else_=0)  # fmt: skip
    total, done, leased, depth = db.execute(
        select(func.count(), func.coalesce(func.sum(complete), 0), func.coalesce(func.sum(Comparison.n_leases), 0),
               func.coalesce(func.sum(open_slots), 0))
        .where(Comparison.project_id == project.id, ~Comparison.is_gold)
    ).one()  # fmt: skip
    gold = db.scalar(select(func.count()).where(Comparison.project_id == project.id, Comparison.is_gold))
    by_source = dict(
        db.execute(
            select(Judgment.source, func.count()).where(Judgment.project_id == project.id).group_by(Judgment.source)
        ).all()
    )
    return {
        "comparisons": {"total": total, "open": total - done, "complete": done, "gold": gold, "leased": leased},
        "queue_depth": int(depth),
        "judgments": by_source.get("human", 0),
        "judgments_by_source": by_source,
    }
