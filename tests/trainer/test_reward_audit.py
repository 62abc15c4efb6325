"""Reward-model audits (issue 26): a reward model trained on length-biased labels shows the bias in its audit; one
trained on balanced labels does not. Planted task, tiny models, the real reward job (trainer.run) each time.

Answers are filler words; a "good" answer carries the keyword. Short answers have 2-4 words, long ones 10-14.
  length-biased labels: the longer answer is chosen in 85% of pairs, whatever the keyword says (people who vote
                        for length);
  balanced labels:      the answer with the keyword is chosen; it is the longer one in half the pairs.
The held-out split follows the same rule as the train split (as a project's export would).
"""

from __future__ import annotations

import json
import random

import pytest

from tests.trainer.conftest import run_job, spec_for
from trainer.audit import reward_audit
from trainer.card import model_card
from trainer.tiny import _FILLERS, KEYWORD, build_tiny_reward, train_tokenizer, write_snapshot

pytestmark = pytest.mark.training


def _answer(rng: random.Random, long: bool, keyword: bool) -> str:
    words = [rng.choice(_FILLERS) for _ in range(rng.randint(10, 14) if long else rng.randint(2, 4))]
    if keyword:
        words[rng.randrange(len(words))] = KEYWORD
    return " ".join(words)


def planted_pairs(n: int, seed: int, *, length_biased: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        chosen_long = rng.random() < 0.85 if length_biased else index % 2 == 0
        keyword_in_chosen = rng.random() < 0.5 if length_biased else True
        chosen = _answer(rng, chosen_long, keyword_in_chosen)
        rejected = _answer(rng, not chosen_long, not keyword_in_chosen)
        rows.append({"prompt": f"Reply number {index % 7}.\n", "chosen": chosen, "rejected": rejected,
                     "comparison_id": seed * 10_000 + index, "prompt_id": index % 7, "margin": 1, "weight": 1.0,
                     "group_chosen": ["locale=de"] if index % 3 else ["locale=fr"],
                     "group_rejected": ["locale=fr"] if index % 3 == 0 and index % 2 else [],
                     "category": "short" if index % 2 else "long"})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = {
        name: (planted_pairs(160, 1, length_biased=biased), planted_pairs(80, 2, length_biased=biased))
        for name, biased in (("biased", True), ("balanced", False))
    }
    texts = [row[k] for train, test in data.values() for row in train + test for k in ("prompt", "chosen", "rejected")]
    model = build_tiny_reward(root / "start", train_tokenizer(texts, vocab_size=256), seed=0)
    out = {}
    for name, (train, test) in data.items():
        snapshot = write_snapshot(root / f"snapshot-{name}", {"train": train, "test": test})
        target = root / f"reward-{name}"
        result = run_job(root, spec_for("reward", target, base_model=str(model), dataset_path=str(snapshot),
                                        params={"num_train_epochs": 4, "learning_rate": 3e-3}))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        out[name] = target
    return out


def test_length_biased_labels_show_in_the_audit_and_balanced_ones_do_not(audits):
    biased = json.loads((audits["biased"] / "manifest.json").read_text())["audit"]
    balanced = json.loads((audits["balanced"] / "manifest.json").read_text())["audit"]
    for audit in (biased, balanced):
        assert audit["split"] == "test" and audit["pairs"] == 80
    # The length-biased model learned length: right when the chosen answer is longer, wrong when it is shorter.
    assert biased["length_bias"] is True, biased
    assert biased["accuracy_chosen_longer"] - biased["accuracy_chosen_shorter"] > 0.5, biased
    assert biased["length_balanced"] < biased["accuracy"] - 0.15, biased
    assert biased["score_length_correlation"] > 0.5, biased
    # The balanced model learned the keyword: length says nothing about its verdicts.
    assert balanced["length_bias"] is False, balanced
    assert balanced["accuracy"] >= 0.8, balanced
    assert abs(balanced["accuracy_chosen_longer"] - balanced["accuracy_chosen_shorter"]) <= 0.2, balanced
    assert abs(balanced["score_length_correlation"]) <= 0.3, balanced
    # Groups and categories where rows carry them; the card shows the audit.
    assert set(balanced["by_group"]) == {"locale=de", "locale=fr"} and set(balanced["by_category"]) == {"short", "long"}
    card = (audits["biased"] / "README.md").read_text()
    assert "## Reward-model audit" in card and "| length bias | yes |" in card
    assert "| length bias | no |" in (audits["balanced"] / "README.md").read_text()


def test_audit_figures_by_hand():
    rows = [{"chosen": "a" * c, "rejected": "a" * r, "group_chosen": g1, "group_rejected": g2, "category": cat}
            for c, r, g1, g2, cat in [(10, 2, ["g=a"], [], "x"), (10, 2, ["g=a"], ["g=b"], "x"),
                                      (2, 10, ["g=b"], [], "y"), (2, 10, [], ["g=a"], None), (5, 5, [], [], "y")]]  # fmt: skip
    # scores: the model prefers the longer answer each time; the equal-length pair ties.
    audit = reward_audit(rows, [1.0, 1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0, 0.5], split="test")
    assert audit["accuracy"] == pytest.approx(2.5 / 5)
    assert audit["accuracy_chosen_longer"] == 1.0 and audit["accuracy_chosen_shorter"] == 0.0
    assert audit["length_balanced"] == 0.5 and audit["pairs_chosen_longer"] == 2
    # g=a: right on rows 0 and 1 (voted chosen), and on row 3 it voted for the rejected answer, which the model
    # also preferred: 3 of 3. g=b: wrong on row 1 (voted rejected, model chose chosen), wrong on row 2: 0 of 2.
    assert audit["by_group"] == {"g=a": {"pairs": 3, "accuracy": 1.0}, "g=b": {"pairs": 2, "accuracy": 0.0}}
    assert audit["by_category"] == {"x": {"pairs": 2, "accuracy": 1.0}, "y": {"pairs": 2, "accuracy": 0.25}}
    assert audit["length_bias"] is False  # too few pairs on each side to judge
    assert "too few pairs" in audit["findings"][0]
    assert "## Reward-model audit" in model_card({"job_kind": "reward", "kind": "reward", "audit": audit})
