"""A project's round recipe: the settings its rounds run with (stored in project.round_recipe; a round keeps the
recipe it started with). The round flow is app.training.rounds.

    RoundRecipe        the settings, checked (unknown keys and bad values: 422)
    get_recipe(project) -> RoundRecipe      set_recipe(db, project, values, actor) -> RoundRecipe
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import audit
from app.errors import Unprocessable
from app.limits import Input, PositiveInt4
from app.models import JobKind, Project, Prompt, User
from app.training.kinds import POLICY_UPDATES
from app.training.service import validated_params

MAX_MINUTES = 10_000_000.0
PolicyUpdate = Literal[POLICY_UPDATES]  # type: ignore[valid-type]
"""The kinds a round may use as its policy update (the kind table's round_update)."""


class RoundRecipe(Input):
    """A project's settings for its rounds (stored in project.round_recipe)."""

    model_config = ConfigDict(extra="forbid")

    pool_batch: str | None = Field(default=None, max_length=100,
                                   description="Generate for the prompts of this batch; None: every prompt.")
    prompts_per_round: int = Field(default=32, ge=1, le=100_000, description="Unused pool prompts per round.")
    samples_per_prompt: int = Field(default=2, ge=2, le=16, description="Completions sampled per prompt.")
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=64, ge=1, le=32_768)
    policy_update: PolicyUpdate = POLICY_UPDATES[0]
    update_params: dict = Field(default={}, description="Hyperparameters of the policy update (trainer.params).")
    retrain_reward: bool = Field(default=True, description="Retrain the reward model each round (always for "
                                                           "ppo, grpo and rloo).")  # fmt: skip
    reward_params: dict = Field(default={}, description="Hyperparameters of the reward job.")
    train_on: Literal["all", "round"] = Field(default="all", description="all: every judgment so far (earlier "
                                              "rounds' too); round: this round's comparisons only.")  # fmt: skip
    score_before_rating: bool = Field(default=True, description="Order the round's comparisons by reward-model "
                                      "uncertainty (a score job) when a reward model exists.")  # fmt: skip
    eval_fraction: float = Field(default=0.1, ge=0.0, le=0.5, description="Share of the pool held out for "
                                 "evaluation, never trained on.")  # fmt: skip
    eval_min_prompts: int = Field(default=20, ge=0, le=100_000,
                                  description="At least this many evaluation prompts when the pool allows.")
    eval_prompt_ids: list[PositiveInt4] = Field(default=[], max_length=100_000,
                                       description="The evaluation prompts (chosen once, then fixed).")
    complete_share: float = Field(default=1.0, gt=0.0, le=1.0,
                                  description="Train once this share of the round's comparisons is complete.")
    deadline_minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES,
                                           description="Or once rating took this long.")
    eval_complete_share: float = Field(default=1.0, gt=0.0, le=1.0)
    eval_deadline_minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES)
    judge: str | None = Field(default=None, max_length=100, description="A judge of the project (name or id) that "
                              "labels the round's comparisons once they are generated (a judge job); the AI policy "
                              "decides what its verdicts change.")  # fmt: skip
    train_on_ai: bool = Field(default=False, description="Train on AI judgments too (source ai), not only humans'.")
    auto_after_previous: bool = Field(default=False, description="Start the next round when one finishes.")
    auto_every_minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES,
                                             description="Start one every T minutes...")
    auto_min_judgments: int = Field(default=0, ge=0, le=2**31 - 1,
                                    description="...once at least this many new judgments exist.")

def get_recipe(project: Project) -> RoundRecipe:
    return RoundRecipe.model_validate(project.round_recipe or {})


def set_recipe(db: Session, project: Project, values: dict, actor: User | None = None) -> RoundRecipe:
    """Update the recipe with `values` (unknown keys and bad values: 422; the update's and reward's
    hyperparameters are checked against the trainer's)."""
    try:
        recipe = RoundRecipe.model_validate((project.round_recipe or {}) | dict(values))
    except ValidationError as error:
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from error
    validated_params(recipe.policy_update, recipe.update_params)
    validated_params(JobKind.reward, recipe.reward_params)
    if recipe.eval_prompt_ids:
        found = set(db.scalars(select(Prompt.id).where(Prompt.project_id == project.id,
                                                       Prompt.id.in_(recipe.eval_prompt_ids))))  # fmt: skip
        missing = [i for i in recipe.eval_prompt_ids if i not in found]
        if missing:
            raise Unprocessable(f"eval_prompt_ids: no prompt {missing[0]} in project {project.slug}.")
    project.round_recipe = recipe.model_dump(mode="json")
    audit(db, actor, "project.round_recipe", "project", project.id)
    return recipe
