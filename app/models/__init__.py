"""All ORM models; importing this package registers every table on Base.metadata."""

from app.models.base import Base, start_of_day, utcnow
from app.models.battle import Battle, BattleSettingsRow, BattleTurn
from app.models.comparison import (
    UNSCORED_GAP,
    Assignment,
    Comparison,
    Completion,
    Judgment,
    PracticeAnswer,
    Prompt,
)
from app.models.dataset import DatasetSnapshot
from app.models.job import TERMINAL_STATUSES, Job, JobDependency, JobKind, JobMetric, JobStatus, SchedulerLock
from app.models.judge import (
    AI_POLICIES,
    JUDGE_METHODS,
    AIPolicy,
    AIVerdict,
    Judge,
    JudgeAnswerCache,
    JudgeTemplate,
)
from app.models.project import GuidelineVersion, Mode, Project, ProjectMember, ProjectStatus
from app.models.registry import ModelEndpoint, ModelVersion
from app.models.review import REVIEW_RESOLUTIONS, FlagReview
from app.models.round import ROUND_ACTIVE, ROUND_ENDED, Round, RoundStatus
from app.models.steps import StepJudgment, TrajectoryLease
from app.models.tally import BattleTally
from app.models.user import ApiToken, AuditLog, AuthSession, LoginFailure, Role, User
from app.models.verdict import AUDIT_STATUSES, VERDICT_REASONS, Verdict
from app.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = [
    "BattleTally",
    "Battle",
    "BattleSettingsRow",
    "BattleTurn",
    "AI_POLICIES",
    "JUDGE_METHODS",
    "AIPolicy",
    "AIVerdict",
    "Judge",
    "JudgeAnswerCache",
    "JudgeTemplate",
    "REVIEW_RESOLUTIONS",
    "AUDIT_STATUSES",
    "ROUND_ACTIVE",
    "ROUND_ENDED",
    "UNSCORED_GAP",
    "VERDICT_REASONS",
    "TERMINAL_STATUSES",
    "ApiToken",
    "Assignment",
    "AuditLog",
    "AuthSession",
    "Base",
    "Comparison",
    "Completion",
    "DatasetSnapshot",
    "FlagReview",
    "GuidelineVersion",
    "Job",
    "JobDependency",
    "JobKind",
    "JobMetric",
    "JobStatus",
    "Judgment",
    "LoginFailure",
    "Mode",
    "ModelEndpoint",
    "ModelVersion",
    "PracticeAnswer",
    "Project",
    "ProjectMember",
    "ProjectStatus",
    "Prompt",
    "Role",
    "Round",
    "RoundStatus",
    "SchedulerLock",
    "StepJudgment",
    "TrajectoryLease",
    "User",
    "Verdict",
    "WebhookDelivery",
    "WebhookEndpoint",
    "start_of_day",
    "utcnow",
]
