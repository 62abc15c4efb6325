"""The judge kind: both orders asked and averaged (a judge that always answers "first" has position bias 1.0 and no
preference), Bradley-Terry for K-way, the reward / generative / rules methods through `python -m trainer.run`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.trainer.conftest import run_job, spec_for
from trainer.judge import bradley_terry, combine_orders, judge_generative, judge_rules, verdict_from_scores
from trainer.params import JudgeArgs


class WordTokenizer:
    """Whitespace words to stable ids; no chat template."""

    chat_template = None
    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [sum(map(ord, w)) % 997 + 1 for w in text.split()]}


class AlwaysFirst(torch.nn.Module):
    """A judge built to always answer the first label, whatever it reads."""

    def __init__(self, first_id: int, vocab: int = 1000):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.first_id, self.vocab = first_id, vocab

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.first_id] = 30.0
        return type("Out", (), {"logits": logits})()


class PrefersWord(torch.nn.Module):
    """Prefers whichever response holds `word`, and also leans to the first shown by `lean` nats."""

    def __init__(self, tokenizer, word: str, lean: float):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.a, self.b = (tokenizer(x)["input_ids"][0] for x in ("A", "B"))
        self.word = tokenizer(word)["input_ids"][0]
        self.marker = tokenizer("Response")["input_ids"][0]
        self.lean = lean

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = torch.zeros(*input_ids.shape, 1000)
        for row, ids in enumerate(input_ids.tolist()):
            marks = [i for i, t in enumerate(ids) if t == self.marker]  # "Response A:" ... "Response B:" ...
            first = self.word in ids[marks[-2] : marks[-1]]
            logits[row, -1, self.a] = self.lean + (2.0 if first else -2.0)
            logits[row, -1, self.b] = 0.0
        return type("Out", (), {"logits": logits})()


def rows(n: int, k: int = 2):
    return [{"comparison_id": i, "prompt": f"question {i}", "guidelines": "be kind",
             "completions": [{"completion_id": 10 * i + j, "text": f"answer {j}" + (" please" if j == 0 else "")}
                             for j in range(k)]} for i in range(n)]  # fmt: skip


def test_both_orders_cancel_an_always_first_judge_and_measure_its_bias():
    tokenizer = WordTokenizer()
    model = AlwaysFirst(tokenizer("A")["input_ids"][0])
    verdicts = judge_generative(model, tokenizer, rows(4), JudgeArgs(method="generative"))
    assert len(verdicts) == 4
    for verdict in verdicts:
        assert verdict["p_first"] == pytest.approx([1.0, 1.0])  # asked twice, answered "first" twice
        assert verdict["pairs"][0][2] == pytest.approx(0.5)  # no preference once the orders are averaged
        assert len(verdict["ranking"]) == 1 and verdict["confidence"] == 0.5  # a tie, not a verdict
    one_order = judge_generative(model, tokenizer, rows(1), JudgeArgs(method="generative", both_orders=False))
    assert one_order[0]["pairs"][0][2] == pytest.approx(1.0)  # asked once, the bias would be the verdict


def test_averaging_keeps_a_real_preference_and_cancels_a_lean():
    tokenizer = WordTokenizer()
    model = PrefersWord(tokenizer, "please", lean=1.0)
    verdicts = judge_generative(model, tokenizer, rows(3), JudgeArgs(method="generative", batch_size=2))
    for i, verdict in enumerate(verdicts):
        assert verdict["ranking"] == [[10 * i], [10 * i + 1]]
        # first-shown logit margin is lean +/- 2: P(first) = s(3) in one order and s(-1) in the other
        s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        assert verdict["p_first"] == pytest.approx([s(3.0), s(-1.0)], abs=1e-5)
        assert verdict["pairs"][0][2] == pytest.approx((s(3.0) + 1 - s(-1.0)) / 2, abs=1e-5)
        assert verdict["confidence"] == pytest.approx((s(3.0) + 1 - s(-1.0)) / 2, abs=1e-5)
    assert combine_orders(0.9, 0.3) == pytest.approx(0.8)


def test_k_way_bradley_terry_and_reward_verdicts():
    strengths = bradley_terry([1, 2, 3], [(1, 2, 0.8), (2, 3, 0.8), (1, 3, 0.95)])
    assert strengths[1] > strengths[2] > strengths[3]
    verdict = verdict_from_scores({5: 0.0, 6: 2.0, 7: 1.0})
    assert verdict["ranking"] == [[6], [7], [5]]
    assert verdict["confidence"] == pytest.approx(1 / (1 + math.exp(-1.0)))  # the closest neighbours decide


def test_rules_judge_prefers_the_answer_that_passes():
    data = [{"comparison_id": 1, "prompt": "2+2?", "reference": {"answer": 4},
             "completions": [{"completion_id": 1, "text": "It is 5"}, {"completion_id": 2, "text": "It is 4"}]},
            {"comparison_id": 2, "prompt": "1+1?", "reference": json.dumps({"answer": 2}),
             "completions": [{"completion_id": 3, "text": "2"}, {"completion_id": 4, "text": "2.0"}]},
            {"comparison_id": 3, "prompt": "no reference",
             "completions": [{"completion_id": 5, "text": "a"}, {"completion_id": 6, "text": "b"}]}]  # fmt: skip
    verdicts = judge_rules(data, JudgeArgs(method="rules", rules_confidence=0.9))
    assert [v["comparison_id"] for v in verdicts] == [1, 2]
    assert verdicts[0]["ranking"] == [[2], [1]] and verdicts[0]["confidence"] == pytest.approx(0.9)
    assert verdicts[1]["ranking"] == [[3, 4]] and verdicts[1]["confidence"] == 0.5


@pytest.mark.parametrize("method", ["reward", "generative"])
def test_judge_kind_runs_as_a_child(tiny, tmp_path, method):
    inputs = tmp_path / "comparisons.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows(3, k=3)))
    models = {"reward_model": str(tiny.reward)} if method == "reward" else {"base_model": str(tiny.policy)}
    spec = spec_for("judge", tmp_path / "out", prompts_path=str(inputs), params={"method": method}, **models)
    result = run_job(tmp_path, spec)
    metrics = result.done["metrics"]
    assert metrics["judge/comparisons"] == 3
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    for i, verdict in enumerate(verdicts):
        assert sorted(c for g in verdict["ranking"] for c in g) == [10 * i, 10 * i + 1, 10 * i + 2]
        assert 0.5 <= verdict["confidence"] <= 1.0 and len(verdict["pairs"]) == 3
        assert len(verdict["p_first"]) == (6 if method == "generative" else 0)  # 3 pairs x 2 orders
    assert ("judge/position_bias" in metrics) == (method == "generative")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["kind"] == "judgments" and manifest["job_kind"] == "judge"
