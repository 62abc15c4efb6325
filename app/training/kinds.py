"""The training job kinds, derived from the trainer's one kind table (trainer.params.KIND_INFO, torch-free), plus
the job options the app reads itself. Per-kind behaviour is asked of the table's fields, never of kind names.

    TRAINING_KINDS   every trainer kind (the CLI's and the training page's list)
    POLICY_UPDATES   kinds a round may use as its policy update
    SNAPSHOT_FORMAT  kind -> the snapshot format it trains on           KEY_PARAMS   kind -> its key params
"""

from __future__ import annotations

from app.jobs.trainer_child import LAUNCH_PARAMS
from trainer.params import DEFAULTS, FIELD_DOCS, KIND_INFO, KINDS

TRAINING_KINDS: tuple[str, ...] = KINDS
SNAPSHOT_FORMAT: dict[str, str] = {k: i.dataset_format for k, i in KIND_INFO.items() if i.dataset_format}
"""Kinds that train on a dataset snapshot, and its format (the others read the project's prompts)."""
PROMPT_KINDS: tuple[str, ...] = tuple(k for k, i in KIND_INFO.items() if i.reads_prompts)
POLICY_UPDATES: tuple[str, ...] = tuple(k for k, i in KIND_INFO.items() if i.round_update)
"""Kinds a round's recipe may use as its policy update."""
KEY_PARAMS: dict[str, tuple[str, ...]] = {k: i.key_params for k, i in KIND_INFO.items()}
"""The few hyperparameters that matter, shown on the training page and in `rankforge train --help`."""
APP_PARAMS = {
    **LAUNCH_PARAMS,
    "seed": "random seed of the run",
    "snapshot": "spec of the fresh snapshot taken when no dataset is given (format, filters, split)",
    "arena": "generate: also pair each new completion with the newest completion of every other model",
    "max_prompts": "generate/ppo/grpo/rloo: use at most this many of the project's prompts (newest first)",
    "prompt_ids": "generate/score/ppo/grpo/rloo: only these prompts of the project (a round's prompts)",
    "base_model_from": "id of a job this one depends on: its model version becomes the base when this job starts",
    "reward_model_from": "id of a job this one depends on: its model version becomes the reward model",
    "dataset_from": "id of a job this one depends on: the snapshot it trained on becomes this job's dataset",
    "round_id": "the round this job is a step of (set by the round driver)",
}
"""Job params the app reads itself; every other key is a trainer hyperparameter (trainer.params)."""

__all__ = ["APP_PARAMS", "DEFAULTS", "FIELD_DOCS", "KEY_PARAMS", "KIND_INFO", "POLICY_UPDATES",
           "PROMPT_KINDS", "SNAPSHOT_FORMAT", "TRAINING_KINDS", "kind_page_facts", "needs_reward_model",
           "split_params"]  # fmt: skip


def needs_reward_model(kind: str, trainer_params: dict) -> bool:
    """Whether a job of this kind with these hyperparameters needs a reward model version (the table's
    reward_model: always, never, or when its weighted rewards name the reward model or give none)."""
    need = KIND_INFO[kind].reward_model
    if need == "by_rewards":
        rewards = trainer_params.get("rewards")
        return rewards is None or any(r.get("name") == "reward_model" for r in rewards if isinstance(r, dict))
    return need == "required"


def split_params(params: dict | None) -> tuple[dict, dict]:
    """A job's params as (app params, trainer hyperparameters): the one place they are told apart."""
    params = dict(params or {})
    return {k: params.pop(k) for k in list(params) if k in APP_PARAMS}, params


def kind_page_facts(kind: str) -> dict:
    """What the training page shows for a kind, from the table: which model pickers, which options."""
    info = KIND_INFO[kind]
    return {"title": info.title, "base_model": info.base_model is not None,
            "reward_model": info.reward_model != "none", "arena": info.output == "generations"}  # fmt: skip
