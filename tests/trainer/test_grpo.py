"""GRPO and RLOO end to end through trainer.run with weighted rewards: a verifiable rule that reads a prompt-row
field, a length penalty, and the reward model. Same synthetic keyword task as tests/trainer/test_ppo.py; learning
is checked on topics never trained on, by sampling the saved checkpoint."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import child_env, parsed, run_job, spec_for
from tests.trainer.test_ppo import HELD_OUT_TOPICS, ONE_THREAD, build_rl_world, keyword_rate, one_torch_thread
from trainer import grpo

pytestmark = pytest.mark.training

FAST_GROUPS = {
    "per_device_train_batch_size": 16,
    "num_generations": 8,
    "max_completion_length": 16,
    "temperature": 0.7,
    "eval_prompts": 6,
    "logging_steps": 5,
}
KEYWORD_RULES = [
    # "keyword" is a field of every prompt row: the rule reads the expected word from it
    {"name": "exact_match", "weight": 1.0, "answer_field": "keyword", "mode": "contains"},
    {"name": "length_penalty", "weight": 0.5, "max_length": 14, "unit": "tokens"},
]


@pytest.fixture(scope="module")
def rl_world(tmp_path_factory, tiny):
    return build_rl_world(tmp_path_factory.getbasetemp() / "rl-world", tiny)


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


def test_grpo_learns_a_verifiable_rule(tmp_path, rl_world):
    out = tmp_path / "grpo-policy"
    params = {**FAST_GROUPS, "max_steps": 20, "learning_rate": 1e-3, "rewards": KEYWORD_RULES}
    spec = spec_for(
        "grpo", out, base_model=str(rl_world.base), prompts_path=str(rl_world.prompts), params=params
    )
    result = run_job(tmp_path, spec, env=child_env() | ONE_THREAD)
    done = result.done
    assert result.returncode == 0 and done["kind"] == "policy"
    metrics = done["metrics"]

    # The weighted reward of fresh samples on held-out prompts rises clearly; KL to the reference is reported.
    assert metrics["eval/held_out"] is True
    assert metrics["eval/score_after"] > metrics["eval/score_before"] + 0.2, metrics
    assert metrics["eval/rewards/exact_match_after"] > metrics["eval/rewards/exact_match_before"] + 0.25
    assert metrics["eval/kl_to_reference"] > 0.0
    # TRL logged each reward under its own name, and the KL term (beta > 0)
    logged = set().union(*[e["metrics"] for e in result.of("metrics")])
    assert {"rewards/exact_match/mean", "rewards/length_penalty/mean", "train/reward", "train/kl"} <= logged

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["job_kind"] == "grpo" and manifest["params"]["rewards"] == KEYWORD_RULES
    before = keyword_rate(rl_world.base, HELD_OUT_TOPICS, temperature=rl_world.temperature)
    after = keyword_rate(out, HELD_OUT_TOPICS, temperature=rl_world.temperature)
    print(f"grpo: reward {metrics['eval/score_before']:.2f} -> {metrics['eval/score_after']:.2f}, KL "
          f"{metrics['eval/kl_to_reference']:.2f}; keyword rate on unseen topics {before:.2f} -> {after:.2f}")  # fmt: skip
    assert after >= before + 0.2, (before, after)


def test_rloo_runs_end_to_end_with_reward_model_and_rule(tmp_path, rl_world):
    out = tmp_path / "rloo-policy"
    rewards = [
        {"name": "reward_model", "weight": 0.2},
        {"name": "regex", "weight": 1.0, "pattern": r"\bplease\b"},
    ]
    params = {**FAST_GROUPS, "max_steps": 20, "learning_rate": 1e-3, "rewards": rewards}
    spec = spec_for("rloo", out, base_model=str(rl_world.base), reward_model=str(rl_world.reward),
                    prompts_path=str(rl_world.prompts), params=params)  # fmt: skip
    result = run_job(tmp_path, spec, env=child_env() | ONE_THREAD)
    done = result.done
    assert result.returncode == 0 and (out / "config.json").is_file()
    metrics = done["metrics"]
    assert {"rewards/reward_model/mean", "rewards/regex/mean"} <= set(metrics)
    print(f"rloo: reward {metrics['eval/score_before']:.2f} -> {metrics['eval/score_after']:.2f}, "
          f"KL {metrics['eval/kl_to_reference']:.2f}")  # fmt: skip
    assert metrics["eval/score_after"] > metrics["eval/score_before"]  # loose: RLOO learns too
    assert metrics["eval/rewards/reward_model_after"] > metrics["eval/rewards/reward_model_before"]


def test_grpo_on_snapshot_chat_prompts_defaults_to_the_reward_model(tmp_path, tiny, rl_world, one_thread):
    """No prompts_path: the conversational snapshot's prompts (train; test held out). No params.rewards: the
    spec's reward model alone, reading prompt + completion through the chat template."""
    spec = spec_for("grpo", tmp_path / "o", base_model=str(rl_world.base), reward_model=str(rl_world.reward),
                    dataset_path=str(tiny.chat_pairs), params={**FAST_GROUPS, "max_steps": 2, "eval_prompts": 2})  # fmt: skip
    metrics = grpo.main_grpo(parsed(spec), tmp_path)
    assert metrics["train/steps"] == 2 and metrics["eval/prompts"] == 2 and metrics["eval/held_out"] is True
    assert "rewards/reward_model/mean" in metrics and "eval/rewards/reward_model_after" in metrics
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.json").is_file()


def test_grpo_errors_are_clear(tmp_path, rl_world, one_thread):
    def spec(**params):
        return spec_for("grpo", tmp_path / "o", base_model=str(rl_world.base), prompts_path=str(rl_world.prompts),
                        params={**FAST_GROUPS, **params})  # fmt: skip

    with pytest.raises(ValueError, match="unknown reward 'bleu'"):
        grpo.main_grpo(parsed(spec(rewards=[{"name": "bleu"}])), tmp_path)
    with pytest.raises(ValueError, match="no reward"):  # neither params.rewards nor a reward model
        grpo.main_grpo(parsed(spec()), tmp_path)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        grpo.main_rloo(parsed(spec(rewards=KEYWORD_RULES, per_device_train_batch_size=12)), tmp_path)
    with pytest.raises(
        ValueError, match="'answer'.*do not have"
    ):  # the rule's field is not in the prompt rows
        grpo.main_grpo(parsed(spec(rewards=[{"name": "exact_match"}], max_steps=1)), tmp_path)
