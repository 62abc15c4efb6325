"""The training job kinds, derived from the trainer's one list (trainer.params.KIND_INFO, torch-free), plus the
job options the app reads itself."""

from __future__ import annotations

from trainer.params import DEFAULTS, FIELD_DOCS, KIND_INFO, KINDS

TRAINING_KINDS: tuple[str, ...] = KINDS
SNAPSHOT_FORMAT: dict[str, str] = {k: i.dataset_format for k, i in KIND_INFO.items() if i.dataset_format}
"""Kinds that train on a dataset snapshot, and its format (the others read the project's prompts)."""
PROMPT_KINDS: tuple[str, ...] = tuple(k for k, i in KIND_INFO.items() if i.reads_prompts)
KEY_PARAMS: dict[str, tuple[str, ...]] = {k: i.key_params for k, i in KIND_INFO.items()}
"""The few hyperparameters that matter, shown on the training page and in `rankforge train --help`."""
APP_PARAMS = {
    "launcher": "python or accelerate (accelerate launch runs the trainer on many GPUs or nodes)",
    "accelerate_config": "with launcher accelerate: a shipped config (cpu, ddp, fsdp, deepspeed_zero2, "
    "deepspeed_zero3; trainer/accelerate/) or a config file path",
    "seed": "random seed of the run",
    "snapshot": "spec of the fresh snapshot taken when no dataset is given (format, filters, split)",
    "arena": "generate: also pair each new completion with the newest completion of every other model",
    "max_prompts": "generate/ppo/grpo/rloo: use at most this many of the project's prompts (newest first)",
    "prompt_ids": "generate/score/ppo/grpo/rloo: only these prompts of the project (a round's prompts)",
    "base_model_from": "id of a job this one depends on: its model version becomes the base when this job starts",
    "reward_model_from": "id of a job this one depends on: its model version becomes the reward model",
    "round_id": "the round this job is a step of (set by the round driver)",
}
"""Job params the app reads itself; every other key is a trainer hyperparameter (trainer.params)."""

__all__ = ["APP_PARAMS", "DEFAULTS", "FIELD_DOCS", "KEY_PARAMS", "PROMPT_KINDS", "SNAPSHOT_FORMAT", "TRAINING_KINDS",
           "needs_reward_model", "split_params"]  # fmt: skip


def needs_reward_model(kind: str, trainer_params: dict) -> bool:
    if kind in ("ppo", "score"):
        return True
    if kind in ("grpo", "rloo"):
        rewards = trainer_params.get("rewards")
        return rewards is None or any(r.get("name") == "reward_model" for r in rewards if isinstance(r, dict))
    return False


def split_params(params: dict | None) -> tuple[dict, dict]:
    """A job's params as (app params, trainer hyperparameters)."""
    params = dict(params or {})
    return {k: params.pop(k) for k in list(params) if k in APP_PARAMS}, params
