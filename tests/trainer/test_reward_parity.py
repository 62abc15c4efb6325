"""Parity of the reward job's inputs with a plain TRL RewardTrainer (issue 26 point 7; bench/parity.py measures it).

Pinned: on HH-RLHF-style transcripts the product's token ids of prompt + chosen and prompt + rejected equal TRL's own
tokenization (prompt + answer + EOS) for every pair that fits max_length; the pairs that do not fit are exactly those
TRL drops, and the product keeps them with the prompt's START cut: the tokenizer's head, the end of the conversation
and the whole answer with its EOS survive. With group_by_length off the product samples as TRL does.
"""

from __future__ import annotations

import random

import pytest
from datasets import Dataset
from torch.utils.data import RandomSampler
from trl import RewardConfig, RewardTrainer

from trainer import reward
from trainer.encoding import prepare_tokenizer
from trainer.models import load_reward, load_tokenizer
from trainer.params import RewardArgs
from trainer.tiny import train_tokenizer

pytestmark = pytest.mark.training

WORDS = [
    "how",
    "do",
    "I",
    "make",
    "my",
    "neighbour",
    "stop",
    "playing",
    "loud",
    "music",
    "at",
    "night",
    "please",
    "help",
    "me",
    "with",
    "this",
    "problem",
    "sure",
]


def hh_rows(n: int, seed: int = 0) -> list[dict]:
    """Transcripts shaped like HH-RLHF rows: "\\n\\nHuman: ...\\n\\nAssistant:" prompts of 1 to 4 turns."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        turns = []
        for _turn in range(rng.randint(1, 4)):
            turns.append("\n\nHuman: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 25))))
            turns.append("\n\nAssistant: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 25))))
        prompt = "".join(turns[:-1]) + "\n\nAssistant:"
        chosen, rejected = (" " + " ".join(rng.choices(WORDS, k=rng.randint(2, 20))) for _ in range(2))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    rows = hh_rows(200, seed=1)
    tok = train_tokenizer([r[k] for r in rows for k in ("prompt", "chosen", "rejected")], vocab_size=400)
    prepare_tokenizer(tok)
    return tok


def trl_ids(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """TRL's own preparation of text pairs (EOS added, prompt + answer tokenized, over-long pairs dropped)."""
    config = RewardConfig(
        output_dir="unused", max_length=max_length, report_to="none", bf16=False, use_cpu=True
    )
    dataset = Dataset.from_list(rows).map(lambda row, i: {"index": i}, with_indices=True)
    return list(RewardTrainer._prepare_dataset(None, dataset, tokenizer, config, "train"))


def test_product_ids_equal_trl_ids_and_long_pairs_keep_their_answer(tokenizer):
    rows = hh_rows(120, seed=2)
    max_length = 64
    product, fit = reward._training_rows(rows, RewardArgs(), tokenizer, max_length)
    trl = trl_ids(rows, tokenizer, max_length)
    assert 10 < len(trl) < len(rows) - 10  # some pairs fit, some do not: both cases are exercised
    assert fit.dropped == 0  # no answer alone is longer than max_length here

    kept = {row["index"]: row for row in trl}
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    truncated = 0
    for index, (row, mine) in enumerate(zip(rows, product, strict=True)):
        if index in kept:  # fits: the very same ids as TRL
            assert mine["chosen_ids"] == kept[index]["chosen_ids"]
            assert mine["rejected_ids"] == kept[index]["rejected_ids"]
            continue
        truncated += 1  # TRL dropped it; the product keeps it, cut at the prompt's start
        for column in ("chosen", "rejected"):
            ids = mine[f"{column}_ids"]
            answer = tokenizer(row[column], add_special_tokens=False)["input_ids"] + [eos]
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            head = [bos] if tokenizer("x")["input_ids"][:1] == [bos] else []
            assert len(ids) <= max_length
            assert ids[: len(head)] == head
            assert ids[-len(answer) :] == answer  # the whole answer and its EOS
            middle = ids[len(head) : len(ids) - len(answer)]
            assert middle and prompt[-len(middle) :] == middle  # the END of the conversation
    assert truncated == fit.truncated == len(rows) - len(trl)


def test_group_by_length_off_samples_as_trl(tmp_path, tokenizer):
    from trainer.tiny import build_tiny_reward

    checkpoint = build_tiny_reward(tmp_path / "reward", tokenizer, seed=0)
    tok = load_tokenizer(checkpoint)
    rows = hh_rows(24, seed=3)
    for group, grouped_sampler in ((True, True), (False, False)):
        args = RewardArgs(max_length=256, group_by_length=group)
        model = load_reward(checkpoint, tokenizer=tok)
        trainer = reward.make_trainer(model, tok, rows, args, tmp_path / f"scratch-{group}", seed=0)
        sampler = trainer._get_train_sampler()
        assert (trainer.row_lengths is not None) is grouped_sampler
        assert isinstance(sampler, RandomSampler) is not grouped_sampler
