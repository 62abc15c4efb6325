"""generate and score jobs: end to end through trainer.run, and the sampling/scoring helpers in process."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import generate, reward
from trainer.data import read_prompts, read_rows
from trainer.models import load_policy, load_tokenizer
from trainer.params import parse_params

pytestmark = pytest.mark.training

PROMPTS = [
    {"prompt_id": 7, "prompt": "Write a short reply about cats.\n"},
    {"prompt_id": 8, "prompt": [{"role": "user", "content": "Write a short reply about tea."}]},
    {"prompt_id": 9, "prompt": "Write a short reply about snow.\n"},
]


def test_generate_job_writes_n_completions_per_prompt(tmp_path, tiny):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "generations"
    params = {"num_completions": 3, "max_new_tokens": 8, "temperature": 0.8, "top_p": 0.9, "batch_size": 2}
    result = run_job(
        tmp_path,
        spec_for("generate", out, base_model=str(tiny.policy), prompts_path=str(prompts), params=params),
    )
    done = result.done
    assert done["kind"] == "generations"
    assert done["metrics"]["generate/prompts"] == 3 and done["metrics"]["generate/completions"] == 9

    lines = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [line["prompt_id"] for line in lines] == [7, 8, 9]
    for line in lines:
        assert len(line["completions"]) == 3
        for completion in line["completions"]:
            assert isinstance(completion["text"], str)
            assert completion["finish_reason"] in ("eos", "length")
            assert completion["params"]["temperature"] == 0.8 and completion["params"]["top_p"] == 0.9
            assert completion["params"]["max_new_tokens"] == 8 and completion["params"]["model"] == str(
                tiny.policy
            )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "generations" and manifest["job_kind"] == "generate"


def test_finish_reason_matches_the_token_budget_and_greedy_is_deterministic(tiny):
    tokenizer, model = load_tokenizer(tiny.policy), load_policy(tiny.policy).eval()
    prompts = [p["prompt"] for p in PROMPTS] * 3
    sampled = generate.generate_completions(
        model, tokenizer, prompts, parse_params("generate", {"num_completions": 4, "max_new_tokens": 24})
    )
    for completions in sampled:
        for completion in completions:
            if completion["finish_reason"] == "length":
                assert completion["new_tokens"] == 24
            else:
                assert completion["new_tokens"] < 24
    greedy = generate.generate_completions(
        model,
        tokenizer,
        prompts[:2],
        parse_params("generate", {"num_completions": 3, "temperature": 0, "max_new_tokens": 6}),
    )
    for completions in greedy:
        assert len({c["text"] for c in completions}) == 1


def test_prompts_come_from_the_snapshot_when_no_prompts_file(tiny):
    prompts = read_prompts(parsed(spec_for("generate", tiny.root / "x", dataset_path=str(tiny.pairs))))
    texts = [p["prompt"] for p in prompts]
    assert len(texts) == len(set(texts)) == len({row["prompt"] for row in read_rows(tiny.pairs, "train")})
    assert all(isinstance(p["prompt_id"], int) for p in prompts)


def test_score_job_ranks_completions_with_a_trained_reward_model(tmp_path, tiny):
    reward_dir = tmp_path / "reward"
    reward_dir.mkdir()
    reward.main(parsed(spec_for("reward", reward_dir, base_model=str(tiny.reward), dataset_path=str(tiny.pairs),
                         params={"num_train_epochs": 1, "eval_split": ""})), reward_dir)  # fmt: skip

    lines, good_ids = [], set()
    for number, row in enumerate(read_rows(tiny.pairs, "test")[:6]):
        good, bad = 100 + 2 * number, 101 + 2 * number
        good_ids.add(good)
        completions = [
            {"completion_id": good, "text": row["chosen"]},
            {"completion_id": bad, "text": row["rejected"]},
        ]
        lines.append({"prompt_id": number, "prompt": row["prompt"], "completions": completions})
    prompts = tmp_path / "to-score.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))

    out = tmp_path / "scores"
    result = run_job(
        tmp_path, spec_for("score", out, reward_model=str(reward_dir), prompts_path=str(prompts))
    )
    assert result.done["kind"] == "scores" and result.done["metrics"]["scores/count"] == 12
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 12 and all(isinstance(s["score"], float) for s in scores)
    by_prompt: dict[int, dict[bool, float]] = {}
    for s in scores:
        by_prompt.setdefault(s["prompt_id"], {})[s["completion_id"] in good_ids] = s["score"]
    assert sum(pair[True] > pair[False] for pair in by_prompt.values()) >= 5


def test_score_needs_an_existing_reward_model(tmp_path, tiny):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt_id": 1, "prompt": "x", "completions": []}) + "\n")
    missing = tmp_path / "no-reward"
    result = run_job(
        tmp_path, spec_for("score", tmp_path / "out", reward_model=str(missing), prompts_path=str(prompts))
    )
    assert (
        result.returncode == 1
        and "reward model" in result.last["message"]
        and str(missing) in result.last["message"]
    )
