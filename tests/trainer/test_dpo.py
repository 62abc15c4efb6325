"""DPO: end to end through trainer.run, held-out implicit-reward accuracy, conversational rows."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import dpo
from trainer.data import read_rows
from trainer.models import load_policy, load_tokenizer

pytestmark = pytest.mark.training


def sequence_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of the completion's token log-probs after the prompt (standard rows, as DPO scores them)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0, :-1]
    logps = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(full_ids[1:])[:, None])[:, 0]
    return logps[len(prompt_ids) - 1 :].sum().item()


def test_dpo_job_learns_the_preference_and_writes_a_policy(tmp_path, tiny):
    out = tmp_path / "dpo-policy"
    result = run_job(
        tmp_path, spec_for("dpo", out, base_model=str(tiny.policy), dataset_path=str(tiny.pairs))
    )
    done = result.done
    assert result.returncode == 0 and done["kind"] == "policy"
    metrics = done["metrics"]
    assert metrics["eval/pairs"] == 48
    assert metrics["eval/rewards/accuracies"] >= 0.7, metrics  # chance: 0.5 (ties count as wrong)
    assert metrics["eval/rewards/margins"] > 0
    logged = {name for e in result.of("metrics") for name in e["metrics"]}
    assert {
        "loss/total",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
    } <= logged

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "policy" and manifest["job_kind"] == "dpo"
    assert manifest["params"]["beta"] == 0.1 and manifest["base_model"] == str(tiny.policy)

    # The saved policy prefers held-out chosen completions over rejected ones more than the base policy does.
    tokenizer = load_tokenizer(out)
    trained, base = load_policy(out).eval(), load_policy(tiny.policy).eval()
    wins = 0
    rows = read_rows(tiny.pairs, "test")[:16]
    for row in rows:
        trained_gap = sequence_logp(trained, tokenizer, row["prompt"], row["chosen"]) - sequence_logp(
            trained, tokenizer, row["prompt"], row["rejected"]
        )
        base_gap = sequence_logp(base, tokenizer, row["prompt"], row["chosen"]) - sequence_logp(
            base, tokenizer, row["prompt"], row["rejected"]
        )
        wins += trained_gap > base_gap
    assert wins >= 12


def test_dpo_on_conversational_rows(tmp_path, tiny):
    out_dir = tmp_path / "chat-dpo"
    out_dir.mkdir()
    spec = spec_for("dpo", out_dir, base_model=str(tiny.policy), dataset_path=str(tiny.chat_pairs),
                    params={"num_train_epochs": 2, "precompute_ref_log_probs": False})  # fmt: skip
    metrics = dpo.main(parsed(spec), out_dir)
    assert metrics["eval/pairs"] == 24
    assert metrics["eval/rewards/accuracies"] >= 0.6, metrics
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file()


def test_dpo_refuses_a_kto_snapshot(tmp_path, tiny):
    out_dir = tmp_path / "wrong"
    out_dir.mkdir()
    with pytest.raises(ValueError, match="needs a pairs snapshot"):
        dpo.main(parsed(spec_for("dpo", out_dir, base_model=str(tiny.policy), dataset_path=str(tiny.kto))), out_dir)
