"""GRPO on a verifiable reward alone (no reward model, no humans): the prompt rows carry a `reference` as the app
writes them (JSON text), the "verifier" reward checks each completion against it, and the policy learns."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import child_env, run_job, spec_for
from tests.trainer.test_grpo import FAST_GROUPS
from tests.trainer.test_ppo import KEYWORD, ONE_THREAD, build_rl_world

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def rl_world(tmp_path_factory, tiny):
    return build_rl_world(tmp_path_factory.getbasetemp() / "rl-world", tiny)


def test_grpo_learns_from_the_verifier_reward(tmp_path, rl_world):
    reference = json.dumps({"rule": "regex", "pattern": rf"\b{KEYWORD}\b", "mode": "search"})
    rows = [json.loads(line) for line in rl_world.prompts.read_text().splitlines()]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": r["prompt_id"], "prompt": r["prompt"],
                                           "reference": reference, "tests": None}) + "\n" for r in rows))  # fmt: skip
    params = {**FAST_GROUPS, "max_steps": 20, "learning_rate": 1e-3, "rewards": [{"name": "verifier", "weight": 1.0}]}
    spec = spec_for("grpo", tmp_path / "policy", base_model=str(rl_world.base), prompts_path=str(prompts), params=params)
    result = run_job(tmp_path, spec, env=child_env() | ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = result.done["metrics"]
    # the verifier's pass rate on fresh samples of held-out prompts rises clearly
    assert metrics["eval/rewards/verifier_after"] > metrics["eval/rewards/verifier_before"] + 0.2, metrics
    assert metrics["eval/kl_to_reference"] > 0.0
