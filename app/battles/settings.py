"""A project's battle settings: the one definition of battle mode (stored in battle_settings, one row a project;
no row means the defaults, battle mode off)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, create_model, field_validator
from sqlalchemy.orm import Session

from app.audit import audit
from app.errors import Unprocessable
from app.limits import Input
from app.models import BattleSettingsRow, Project, User, utcnow

MAX_BLOCKLIST = 500


class BattleSettings(Input):
    """Battle mode of a project (PUT /api/v1/projects/{id}/battle-settings)."""

    enabled: bool = Field(default=False, description="Battle mode: raters may open the Battle page and vote.")
    versions: list[str] = Field(default=[], max_length=100, description="Names of the endpoint versions that take "
                                "part; empty: every policy endpoint version registered to the project.")
    pairing: Literal["uniform", "overlap"] = Field(default="uniform", description="uniform: every pair equally often; "
                                                   "overlap: pairs whose leaderboard intervals overlap most more often.")
    reveal: bool = Field(default=True, description="Show the two versions' names after the vote.")
    max_tokens: int = Field(default=512, ge=1, le=32_768, description="Most tokens one side may write per turn.")
    timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Most seconds one side may take per turn; "
                                   "a side past it fails and voids the battle.")
    max_turns: int = Field(default=5, ge=1, le=50, description="Turns per battle (the first prompt and follow-ups).")
    max_prompt_chars: int = Field(default=4000, ge=1, le=100_000)
    turns_per_minute: int = Field(default=6, ge=1, le=10_000, description="Per rater: prompts and follow-ups sent "
                                  "in any minute (counted in the database, per account).")
    turns_per_hour: int = Field(default=120, ge=1, le=100_000)
    blocklist: list[str] = Field(default=[], max_length=MAX_BLOCKLIST, description="The project's text rules: a prompt "
                                 "holding one of these words or phrases (case-insensitive, whole words) is refused.")

    @field_validator("blocklist")
    @classmethod
    def _clean_blocklist(cls, value: list[str]) -> list[str]:
        terms = [" ".join(term.split()) for term in value]
        if any(len(term) > 200 for term in terms):
            raise ValueError("a blocklist entry is longer than 200 characters")
        return sorted({term for term in terms if term}, key=str.lower)

    @field_validator("versions")
    @classmethod
    def _clean_versions(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in value if name.strip()))

    def blocked(self, text: str) -> str | None:
        """The first blocklist entry `text` holds (as whole words, any case, any spacing), else None."""
        for term in self.blocklist:
            pattern = r"(?<!\w)" + r"\s+".join(re.escape(word) for word in term.split()) + r"(?!\w)"
            if re.search(pattern, text, flags=re.IGNORECASE):
                return term
        return None


BattleSettingsPatch = create_model(
    "BattleSettingsPatch", __base__=Input, __doc__="Some of a project's battle settings; the others keep their values.",
    **{name: (field.annotation | None, Field(default=None, description=field.description))
       for name, field in BattleSettings.model_fields.items()},
)  # fmt: skip
"""The PUT body: every field of BattleSettings, optional (checked as a whole by set_settings once merged)."""


def get_settings(db: Session, project: Project) -> BattleSettings:
    row = db.get(BattleSettingsRow, project.id)
    return BattleSettings.model_validate(row.settings if row else {})


def set_settings(db: Session, project: Project, values: dict, actor: User | None) -> BattleSettings:
    """Replace the given keys of the project's settings (others keep their values); validated as a whole."""
    row = db.get(BattleSettingsRow, project.id)
    try:
        settings = BattleSettings.model_validate(((row.settings if row else {}) or {}) | dict(values))
    except ValidationError as error:
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from error
    if row is None:
        row = BattleSettingsRow(project_id=project.id)
        db.add(row)
    row.settings = settings.model_dump(mode="json")
    row.updated_at = utcnow()
    audit(db, actor, "project.battle_settings", "project", project.id, enabled=settings.enabled)
    db.flush()
    return settings
