"""Reward functions for GRPO/RLOO (and anything else that scores completions), combinable into one reward.

A job's params name the rewards and their weights:

    {"rewards": [
        {"name": "reward_model", "weight": 1.0},                       # spec["reward_model"], or "path": ...
                                        # a process reward model: + "prm_outcome": "min" (default) or "last"
        {"name": "exact_match", "weight": 0.5, "answer_field": "answer"},
        {"name": "numeric_match", "weight": 0.5, "answer_field": "answer", "tolerance": 0.01},
        {"name": "regex", "weight": 0.2, "pattern": "^Answer: "},
        {"name": "json_schema", "weight": 1.0, "schema": {"type": "object", "required": ["name"]}},
        {"name": "length_penalty", "weight": 0.1, "max_length": 128, "unit": "tokens"},
        {"name": "verifier", "weight": 1.0}     # the prompt rows' reference / tests (trainer/rewards/verifier.py)
    ]}

Every entry but "name", "weight" and "label" is passed to the reward's constructor (see trainer/rewards/rules.py).
"label" renames a reward in metrics (needed when the same rule appears twice). Prompt rows may carry extra fields
(e.g. "answer") that rules read per row. `build_rewards` turns the list into WeightedReward items; TRL trainers take
their functions and weights (logging each one under rewards/<label>/...), and `MultiObjectiveReward` sums them into
one reward for code that wants a single number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.rewards.rules import (
    ExactMatch,
    JsonSchemaMatch,
    LengthPenalty,
    NumericMatch,
    RegexMatch,
    completion_text,
    exact_match_score,
    extract_final_answer,
    extract_json,
    extract_number,
    json_schema_score,
    length_penalty_score,
    numeric_match_score,
    regex_score,
)
from trainer.rewards.verifier import VerifierReward

RULES: dict[str, type] = {
    "exact_match": ExactMatch,
    "numeric_match": NumericMatch,
    "regex": RegexMatch,
    "json_schema": JsonSchemaMatch,
    "length_penalty": LengthPenalty,
    "verifier": VerifierReward,
}
REWARD_NAMES = ("reward_model", *RULES)

__all__ = [
    "REWARD_NAMES",
    "RULES",
    "MultiObjectiveReward",
    "WeightedReward",
    "build_rewards",
    "completion_text",
    "exact_match_score",
    "extract_final_answer",
    "extract_json",
    "extract_number",
    "json_schema_score",
    "length_penalty_score",
    "numeric_match_score",
    "regex_score",
]


@dataclass
class WeightedReward:
    """One objective: a reward function f(prompts, completions, completion_ids=None, **columns), its weight and label."""

    label: str
    weight: float
    func: Callable[..., list[float | None]]


def build_rewards(
    reward_specs: list[dict[str, Any]] | None,
    *,
    reward_model_path: str | Path | None = None,
    device: Any = None,
    policy_eos_token_id: int | None = None,
) -> list[WeightedReward]:
    """WeightedReward items for a params["rewards"] list.

    No list (None or empty) means the reward model alone, so a plain `{"reward_model": path}` spec works.
    A "reward_model" entry uses its own "path" or else `reward_model_path` (the spec's reward_model).
    """
    if not reward_specs:
        if reward_model_path is None:
            raise ValueError(
                "no reward: set params.rewards (e.g. [{'name': 'exact_match', 'answer_field': 'answer'}]) "
                "or the spec's reward_model"
            )
        reward_specs = [{"name": "reward_model", "weight": 1.0}]
    if not isinstance(reward_specs, list):
        raise ValueError(f"params.rewards must be a list of objects, got {type(reward_specs).__name__}")

    rewards: list[WeightedReward] = []
    for index, entry in enumerate(reward_specs):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(
                f"params.rewards[{index}] must be an object with a 'name' (one of {list(REWARD_NAMES)})"
            )
        params = dict(entry)
        name = params.pop("name")
        weight = float(params.pop("weight", 1.0))
        label = str(params.pop("label", name))
        if name == "reward_model":
            from trainer.prm import is_prm  # torch only when a model is used
            from trainer.rewards.reward_model import ProcessRewardModelReward, RewardModelReward

            path = params.pop("path", None) or reward_model_path
            if path is None:
                raise ValueError(
                    f"params.rewards[{index}] is 'reward_model' but the spec has no reward_model (and no 'path')"
                )
            params.setdefault("policy_eos_token_id", policy_eos_token_id)
            if "prm_outcome" in params and not is_prm(path):
                raise ValueError(f"params.rewards[{index}]: prm_outcome applies to a process reward model (a prm "
                                 f"version); {path} is not one")  # fmt: skip
            model_reward = ProcessRewardModelReward if is_prm(path) else RewardModelReward
            func: Callable[..., Any] = _construct(model_reward, name, index, params, path=path, device=device)
        elif name in RULES:
            func = _construct(RULES[name], name, index, params)
        else:
            raise ValueError(f"params.rewards[{index}]: unknown reward {name!r}; known: {list(REWARD_NAMES)}")
        func.__name__ = label
        rewards.append(WeightedReward(label=label, weight=weight, func=func))

    labels = [r.label for r in rewards]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"params.rewards: reward(s) {duplicates} appear twice; give each a distinct 'label'")
    return rewards


def _construct(
    factory: Callable[..., Any], name: str, index: int, params: dict[str, Any], **fixed: Any
) -> Any:
    try:
        return factory(**fixed, **params)
    except TypeError as exc:  # an unknown or misspelt param
        raise ValueError(f"params.rewards[{index}] ({name}): {exc}") from exc


class MultiObjectiveReward:
    """The weighted sum of several rewards as one reward function (TRL signature).

    A component that returns None for a row (not applicable) is left out of that row's sum; a row where every
    component is None gets None. The last call's per-component scores stay in `last_components`.
    """

    def __init__(self, rewards: list[WeightedReward]):
        if not rewards:
            raise ValueError("MultiObjectiveReward needs at least one reward")
        self.rewards = rewards
        self.__name__ = "multi_objective"
        self.last_components: dict[str, list[float | None]] = {}

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any
    ) -> list[float | None]:
        totals: list[float | None] = [None] * len(completions)
        self.last_components = {}
        for reward in self.rewards:
            scores = reward.func(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
            )
            if len(scores) != len(completions):
                raise ValueError(
                    f"reward {reward.label!r} returned {len(scores)} scores for {len(completions)}"
                )
            self.last_components[reward.label] = list(scores)
            for i, score in enumerate(scores):
                if score is None:
                    continue
                totals[i] = (totals[i] or 0.0) + reward.weight * float(score)
        return totals
