"""The audit log: who did what to which object. Every domain records its actions here; services never commit,
so an audit row lands in the same transaction as the change it describes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import AuditLog, User


def audit(db: Session, actor: User | None, action: str, target_type: str | None = None,
          target_id: int | None = None, **details) -> None:  # fmt: skip
    db.add(AuditLog(actor_id=actor.id if actor else None, action=action, target_type=target_type,
                    target_id=target_id, details=details))  # fmt: skip
