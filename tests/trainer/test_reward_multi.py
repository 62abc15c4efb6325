"""Multi-objective reward (issue 14): attribute heads learn planted scores, the folded scalar follows the weights."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.conftest import run_job, spec_for
from trainer.data import read_rows
from trainer.encoding import encode_sequence
from trainer.models import load_reward, load_tokenizer, reward_scores
from trainer.reward_multi import load_multi_head, predict
from trainer.tiny import attribute_rows, build_tiny_policy, keyword_texts, train_tokenizer, write_snapshot

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def ratings_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratings")
    train, test = attribute_rows(160, seed=11), attribute_rows(40, seed=12)
    tokenizer = train_tokenizer(keyword_texts(train + test), vocab_size=384)
    base = build_tiny_policy(root / "base", tokenizer, seed=0)
    snapshot = write_snapshot(root / "snapshot-ratings", {"train": train, "test": test}, fmt="ratings")
    return base, snapshot


def test_heads_learn_planted_attributes_and_the_scalar_follows_the_weights(tmp_path, ratings_world):
    base, snapshot = ratings_world
    out = tmp_path / "multi"
    params = {"attribute_weights": {"helpful": 2.0, "verbose": -0.5}, "preference_weight": 0.5,
              "num_train_epochs": 6, "learning_rate": 2e-3, "per_device_train_batch_size": 16}  # fmt: skip
    result = run_job(tmp_path, spec_for("reward_multi", out, base_model=str(base), dataset_path=str(snapshot),
                                        params=params), timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = result.done["metrics"]
    print({k: v for k, v in metrics.items() if k.startswith("eval/")})
    assert metrics["eval/helpful/correlation"] >= 0.8, metrics
    assert metrics["eval/verbose/correlation"] >= 0.8, metrics
    assert metrics["eval/preference_accuracy"] >= 0.8, metrics
    assert metrics["eval/helpful/rmse"] < 1.2 and metrics["eval/verbose/rmse"] < 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "reward" and manifest["job_kind"] == "reward_multi"
    # The audit (issue 26) of the folded scalar, on the held-out preference pairs.
    assert manifest["audit"]["split"] == "test" and manifest["audit"]["pairs"] == metrics["eval/pairs"]
    assert "## Reward-model audit" in (out / "README.md").read_text()

    # The output is an ordinary one-label reward model whose score is the weighted sum of the heads.
    tokenizer = load_tokenizer(out)
    scalar_model = load_reward(out, tokenizer=tokenizer)
    assert scalar_model.config.num_labels == 1
    heads = json.loads((out / "heads" / "heads.json").read_text())
    assert heads["attributes"] == ["helpful", "verbose"] and heads["attribute_weights"] == [2.0, -0.5]
    multi = load_multi_head(out / "heads", tokenizer, 3)
    rows = read_rows(snapshot, "test")[:24]
    sequences = [encode_sequence(r["prompt"], r["completion"], tokenizer, 512) for r in rows]
    outputs = predict(multi, sequences, tokenizer.pad_token_id, torch.device("cpu"), 8)
    expected = outputs @ torch.tensor([2.0, -0.5, 0.5])
    scalar = torch.tensor(reward_scores(scalar_model, tokenizer, sequences, batch_size=8, max_length=512))
    assert torch.allclose(scalar, expected, atol=1e-3), (scalar[:4], expected[:4])
