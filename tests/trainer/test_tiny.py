"""trainer.tiny: tokenizer, tiny checkpoints any HF loader accepts, the CLI, the synthetic snapshot."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.trainer.conftest import ROOT, child_env
from trainer.data import read_manifest, read_snapshot, snapshot_format
from trainer.tiny import KEYWORD, keyword_pairs, read_texts, train_tokenizer


def test_tokenizer_has_separate_pad_and_eos_and_a_chat_template():
    tokenizer = train_tokenizer(["hello world", "What is 2 + 3? The answer is 5."], vocab_size=300)
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>" and tokenizer.bos_token == "<s>"
    assert tokenizer.unk_token == "<unk>"
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}) == 3
    text = "Ünïcode and emoji 🙂 still encode"  # byte-level: nothing unknown
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert (
        tokenizer.apply_chat_template(messages, tokenize=False)
        == "<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>\nHi</s>\n<|assistant|>\n"


def test_tiny_checkpoints_load_with_auto_classes(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.chat_template
    policy = AutoModelForCausalLM.from_pretrained(tiny.policy)
    assert policy.config.pad_token_id == tokenizer.pad_token_id
    assert sum(p.numel() for p in policy.parameters()) < 500_000  # tiny: trains in seconds on CPU
    reward = AutoModelForSequenceClassification.from_pretrained(tiny.reward)
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tokenizer.pad_token_id


def test_cli_builds_policy_and_reward(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"prompt": "Say hi", "completions": [{"text": "hi there"}]}) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "trainer.tiny", str(tmp_path / "models"), "--texts", str(texts)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout.strip().splitlines()[-1])
    assert paths == {
        "policy": str(tmp_path / "models" / "policy"),
        "reward": str(tmp_path / "models" / "reward"),
    }
    assert AutoModelForCausalLM.from_pretrained(paths["policy"]).config.num_hidden_layers == 2
    assert AutoModelForSequenceClassification.from_pretrained(paths["reward"]).config.num_labels == 1
    assert read_texts(texts) == ["Say hi", "hi there"]


def test_keyword_pairs_have_the_learnable_property():
    rows = keyword_pairs(50, seed=3)
    assert rows == keyword_pairs(50, seed=3)
    for row in rows:
        assert KEYWORD in row["chosen"].split() and KEYWORD not in row["rejected"].split()
        assert len(row["chosen"].split()) == len(row["rejected"].split())  # one word differs, nothing else
    chat = keyword_pairs(3, seed=3, conversational=True)
    assert chat[0]["prompt"][0]["role"] == "user" and chat[0]["chosen"][0]["role"] == "assistant"


def test_written_snapshot_follows_the_contract(tiny):
    manifest = read_manifest(tiny.pairs)
    assert manifest["format"] == "pairs" == snapshot_format(tiny.pairs)
    assert manifest["rows"] == {"train": 128, "test": 48}
    for name, entry in manifest["files"].items():
        data = (tiny.pairs / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    dataset = read_snapshot(tiny.pairs, "test")
    assert len(dataset) == 48 and {"prompt", "chosen", "rejected", "margin", "weight"} <= set(
        dataset.column_names
    )
    with pytest.raises(FileNotFoundError, match="no validation split"):
        read_snapshot(tiny.pairs, "validation")
