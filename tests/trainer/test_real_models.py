"""Any local checkpoint trains out of the box: encoders (BERT-style, no EOS, no chat template) as reward models,
GPT-2-style decoders (no pad, no chat template) as policies; long prompts are cut at their start, not dropped.

The checkpoints are built here from configs (trainer.tiny) with locally trained tokenizers, once per session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import dpo, generate, reward
from trainer.encoding import (
    PLAIN_CHAT_TEMPLATE,
    PLAIN_TEMPLATE_NAME,
    encode_pair,
    encode_sequence,
    tokenizer_setup,
)
from trainer.models import load_tokenizer
from trainer.tiny import build_tiny_encoder, build_tiny_gpt2, keyword_pairs, keyword_texts, write_snapshot

pytestmark = pytest.mark.training
FAST = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 96}


@dataclass
class Bases:
    encoder: Path
    gpt2: Path


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> Bases:
    root = tmp_path_factory.mktemp("bases")
    texts = keyword_texts(keyword_pairs(64, seed=1)) + ["User: Assistant: System:"]
    return Bases(
        encoder=build_tiny_encoder(root / "encoder", texts, vocab_size=400),
        gpt2=build_tiny_gpt2(root / "gpt2", texts, vocab_size=400),
    )


def test_an_encoder_without_eos_trains_a_reward_model_on_string_rows_and_scores(tmp_path, tiny, bases):
    """Before: TypeError 'endswith first arg must be str or a tuple of str, not NoneType' inside TRL."""
    out = tmp_path / "encoder-reward"
    result = run_job(tmp_path, spec_for("reward", out, base_model=str(bases.encoder), dataset_path=str(tiny.pairs),
                                        params=FAST))  # fmt: skip
    metrics = result.done["metrics"]
    assert metrics["train/steps"] == 3 and metrics["train/pairs_used"] == metrics["train/pairs"] == 128
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["eos_source"] == "sep" and manifest["tokenizer"]["eos_token"] == "[SEP]"
    assert manifest["tokenizer"]["encoder"] is True and manifest["adapter"] is False
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "[SEP]" in card
    assert manifest["dataset_sha256"] in card and "`max_steps` | 3" in card and "`eval/accuracy`" in card

    # Scoring reads the trained checkpoint exactly as training did: [CLS] prompt completion [SEP].
    tokenizer = load_tokenizer(out, role="reward model")
    ids = encode_sequence("Write about tea.\n", "please tea", tokenizer)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and ids.count(ids[-1]) == 1
    prompts = tmp_path / "to-score.jsonl"
    prompts.write_text(json.dumps({"prompt_id": 1, "prompt": [{"role": "user", "content": "tea?"}],
                                   "completions": [{"completion_id": 7, "text": "please tea"}]}) + "\n")  # fmt: skip
    scored = run_job(tmp_path, spec_for("score", tmp_path / "scores", reward_model=str(out), prompts_path=str(prompts)))
    assert scored.done["metrics"]["scores/count"] == 1


def test_an_encoder_trains_on_conversational_rows_with_the_plain_template(tmp_path, tiny, bases):
    """Before: 'Cannot use chat template functions because tokenizer.chat_template is not set'."""
    out = tmp_path / "out"
    out.mkdir()
    metrics = reward.main(parsed(spec_for("reward", out, base_model=str(bases.encoder),
                                          dataset_path=str(tiny.chat_pairs), params=FAST)), out)  # fmt: skip
    assert metrics["train/steps"] == 3 and metrics["eval/pairs"] == 24
    tokenizer = load_tokenizer(out)
    assert tokenizer.chat_template == PLAIN_CHAT_TEMPLATE  # saved: scoring later uses the same template
    assert tokenizer_setup(tokenizer).chat_template == PLAIN_TEMPLATE_NAME


def test_a_gpt2_style_decoder_without_template_or_pad_trains_dpo_and_generates(tmp_path, tiny, bases):
    """Before: the chat-template error on conversational rows."""
    tokenizer = load_tokenizer(bases.gpt2)
    setup = tokenizer_setup(tokenizer)
    assert setup.chat_template == PLAIN_TEMPLATE_NAME and setup.pad_source == "eos" and setup.eos_source == "own"
    out = tmp_path / "dpo"
    out.mkdir()
    metrics = dpo.main(parsed(spec_for("dpo", out, base_model=str(bases.gpt2), dataset_path=str(tiny.chat_pairs),
                                       params=FAST)), out)  # fmt: skip
    assert metrics["train/steps"] == 3 and metrics["train/pairs_dropped"] == 0

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": i, "prompt": [{"role": "user", "content": f"About {t}?"}]})
                               + "\n" for i, t in enumerate(["tea", "snow", "maps"])))  # fmt: skip
    generated = tmp_path / "generated"
    generated.mkdir()
    gen_metrics = generate.main(parsed(spec_for("generate", generated, base_model=str(out),
                                                prompts_path=str(prompts),
                                                params={"max_new_tokens": 6, "num_completions": 2})), generated)  # fmt: skip
    assert gen_metrics["generate/completions"] == 6
    assert len((generated / "generations.jsonl").read_text().splitlines()) == 3


def test_an_encoder_as_a_policy_is_refused_before_training_naming_it(tmp_path, tiny, bases):
    out = tmp_path / "dpo-encoder"
    result = run_job(tmp_path, spec_for("dpo", out, base_model=str(bases.encoder), dataset_path=str(tiny.pairs),
                                        params=FAST))  # fmt: skip
    assert result.returncode == 1
    message = result.last["message"]
    assert str(bases.encoder) in message and "encoder" in message and "cannot be a policy" in message
    assert not result.of("metrics")


def test_long_prompts_lose_their_start_and_only_overlong_completions_are_dropped(tmp_path, tiny):
    tokenizer = load_tokenizer(tiny.policy)
    conversation = [{"role": "user", "content": "tea " * 60}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "and now about snow"}]  # fmt: skip
    encoded = encode_pair(conversation, ["please snow", "snow"], tokenizer, 40)
    assert encoded.truncated and len(encoded.prompt_ids) + len(encoded.completion_ids[0]) == 40
    tail = tokenizer.decode(encoded.prompt_ids)
    assert tail.rstrip().endswith("<|assistant|>") and "about snow" in tail  # the end of the conversation is kept
    assert encode_pair(conversation, ["please " * 60], tokenizer, 40) is None

    rows = keyword_pairs(24, seed=9)
    for index, row in enumerate(rows):
        row["prompt"] = "tea " * 80 + row["prompt"]  # every prompt alone is longer than max_length
        if index < 3:
            row["rejected"] = "snow " * 80  # a completion no cut of the prompt can make fit
    snapshot = write_snapshot(tmp_path / "long", {"train": rows})
    out = tmp_path / "out"
    out.mkdir()
    params = FAST | {"max_length": 48, "eval_split": ""}
    metrics = reward.main(parsed(spec_for("reward", out, base_model=str(tiny.reward), dataset_path=str(snapshot),
                                          params=params)), out)  # fmt: skip
    assert metrics["train/pairs"] == 24 and metrics["train/pairs_dropped"] == 3
    assert metrics["train/pairs_truncated"] == 21 and metrics["train/pairs_used"] == 21

    out_dpo = tmp_path / "out-dpo"
    out_dpo.mkdir()
    metrics = dpo.main(parsed(spec_for("dpo", out_dpo, base_model=str(tiny.policy), dataset_path=str(snapshot),
                                       params=params)), out_dpo)  # fmt: skip
    assert metrics["train/pairs_dropped"] == 3 and metrics["train/pairs_truncated"] == 21
