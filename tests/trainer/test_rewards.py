"""trainer.rewards: every verifiable rule (edge cases included), the JSON-schema subset, the reward-model reward,
building rewards from params and combining them with weights."""

from __future__ import annotations

import pytest

from trainer.rewards import (
    MultiObjectiveReward,
    build_rewards,
    completion_text,
    exact_match_score,
    extract_final_answer,
    extract_json,
    extract_number,
    json_schema_score,
    length_penalty_score,
    numeric_match_score,
    regex_score,
)
from trainer.rewards.json_schema import SchemaError, check_schema, validate
from trainer.rewards.rules import ExactMatch, JsonSchemaMatch, LengthPenalty, NumericMatch, RegexMatch

# --- text helpers ---------------------------------------------------------------------------------------------


def test_completion_text_accepts_strings_and_message_lists():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    assert (
        completion_text([{"role": "assistant", "content": [{"type": "text", "text": "blocks"}]}]) == "blocks"
    )
    with pytest.raises(TypeError):
        completion_text(42)


def test_final_answer_prefers_boxed_then_answer_marker_then_last_line():
    assert extract_final_answer("so \\boxed{12} but also 13") == "12"
    assert extract_final_answer("Let me think.\nThe answer is Paris.\nBye") == "Paris."
    assert extract_final_answer("Final answer: 3/4") == "3/4"
    assert extract_final_answer("first\n\nsecond line\n") == "second line"
    assert extract_final_answer("   ") == ""


def test_extract_number_forms_and_no_number():
    assert extract_number("The answer is 42.") == 42.0
    assert extract_number("x = -3.5e2, then 1,234 apples") == 1234.0  # the last number when no marker
    assert extract_number("The answer is -7 (not 8)") == -7.0  # the first number after the marker
    assert extract_number("3 + 4 = \\boxed{7}, check: 7 - 4 = 3") == 7.0
    assert extract_number("Answer: −2.5") == -2.5  # unicode minus
    assert extract_number("costs .5 dollars") == 0.5
    assert extract_number("abc123 is an identifier") is None  # digits inside a word are not a number
    assert extract_number("no number here") is None
    assert extract_number("") is None


# --- exact_match -----------------------------------------------------------------------------------------------


def test_exact_match_modes():
    assert exact_match_score("The answer is PARIS.", "paris") == 1.0
    assert exact_match_score("The answer is Paris", "paris", case_sensitive=True) == 0.0
    assert exact_match_score("I think it is Lyon.\nAnswer: Paris", ["Lyon", "Paris"]) == 1.0  # accepted list
    assert exact_match_score("Answer: Paris, France", "paris") == 0.0  # the final answer must equal it
    assert exact_match_score("  paris  ", "Paris", mode="full") == 1.0
    assert exact_match_score("paris is nice", "Paris", mode="full") == 0.0
    assert exact_match_score("we went to Paris today", "paris", mode="contains") == 1.0
    assert exact_match_score("we went to Parisian cafes", "paris", mode="contains") == 0.0  # whole words only
    assert exact_match_score("", "paris") == 0.0
    with pytest.raises(ValueError, match="mode"):
        exact_match_score("x", "x", mode="fuzzy")


def test_exact_match_reward_reads_the_answer_field_and_skips_rows_without_one():
    reward = ExactMatch(answer_field="answer")
    scores = reward(
        prompts=["q1", "q2", "q3"],
        completions=["Answer: 4", [{"role": "assistant", "content": "Answer: 5"}], "Answer: 6"],
        answer=["4", "4", None],
    )
    assert scores == [1.0, 0.0, None]  # None: not applicable, left out of the weighted sum
    with pytest.raises(ValueError, match="'answer'.*do not have"):
        reward(prompts=["q"], completions=["4"], topic=["x"])
    assert ExactMatch(answer="yes", answer_field=None)(prompts=["q"], completions=["Answer: yes"]) == [1.0]


# --- numeric_match ---------------------------------------------------------------------------------------------


def test_numeric_match_tolerances_and_missing_number():
    assert numeric_match_score("The answer is 3.14159", 3.14, tolerance=0.01) == 1.0
    assert numeric_match_score("The answer is 3.2", 3.14, tolerance=0.01) == 0.0
    assert numeric_match_score("about 1,000,500", "1000000", relative_tolerance=0.001) == 1.0
    assert numeric_match_score("about 1,002,000", "1000000", relative_tolerance=0.001) == 0.0
    assert numeric_match_score("\\boxed{-12}", -12) == 1.0
    assert numeric_match_score("I do not know", 5) == 0.0  # no number in the text
    assert numeric_match_score("", 5) == 0.0
    with pytest.raises(ValueError, match="not a single number"):
        numeric_match_score("5", "five")


def test_numeric_match_reward_checks_constant_answers_at_build_time():
    reward = NumericMatch(answer_field="answer", tolerance=0.5)
    assert reward(prompts=["a", "b"], completions=["= 10.4", "no idea"], answer=[10, 10]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="not a single number"):
        NumericMatch(answer="ten")
    with pytest.raises(ValueError, match=">= 0"):
        NumericMatch(tolerance=-1)


# --- regex -----------------------------------------------------------------------------------------------------


def test_regex_search_fullmatch_and_invalid_pattern():
    assert regex_score("Sure, please sit.", r"\bplease\b") == 1.0
    assert regex_score("pleased to meet you", r"\bplease\b") == 0.0
    assert regex_score("  ABC-123 ", r"[A-Z]{3}-\d+", mode="fullmatch") == 1.0
    assert regex_score("id ABC-123", r"[A-Z]{3}-\d+", mode="fullmatch") == 0.0
    assert RegexMatch(pattern="PLEASE", ignore_case=True)(prompts=["p"], completions=["please"]) == [1.0]
    per_row = RegexMatch(pattern_field="format")
    assert per_row(
        prompts=["p", "q"], completions=["2024-01-02", "yes"], format=[r"^\d{4}-\d\d-\d\d$", "^no$"]
    ) == [
        1.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="invalid pattern"):
        RegexMatch(pattern="(unclosed")
    with pytest.raises(ValueError, match="set 'pattern'"):
        RegexMatch()(prompts=["p"], completions=["x"])


# --- json_schema -----------------------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "role": {"enum": ["admin", "user"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_valid_invalid_json_and_schema_mismatch():
    assert json_schema_score('{"name": "Ada", "age": 36, "tags": ["x"], "role": "admin"}', PERSON) == 1.0
    assert json_schema_score('```json\n{"name": "Ada", "age": 36}\n```', PERSON) == 1.0  # a fenced block
    assert json_schema_score("{name: 'Ada'}", PERSON) == 0.0  # invalid JSON
    assert json_schema_score("", PERSON) == 0.0
    assert json_schema_score('{"name": "Ada"}', PERSON) == 0.0  # missing required
    assert json_schema_score('{"name": "Ada", "age": "36"}', PERSON) == 0.0  # wrong type
    assert json_schema_score('{"name": "Ada", "age": true}', PERSON) == 0.0  # a boolean is no integer
    assert json_schema_score('{"name": "Ada", "age": 1, "extra": 1}', PERSON) == 0.0  # additionalProperties
    assert json_schema_score('{"name": "Ada", "age": 1, "tags": ["a", "b", "c"]}', PERSON) == 0.0  # maxItems
    assert json_schema_score('{"name": "Ada", "age": 1, "role": "root"}', PERSON) == 0.0  # enum
    assert (
        json_schema_score('{"name": "", "age": -1}', PERSON, valid_json_score=0.25) == 0.25
    )  # partial credit
    assert json_schema_score('Here: {"name": "Ada", "age": 3} done', PERSON) == 0.0  # strict: only JSON
    assert json_schema_score('Here: {"name": "Ada", "age": 3} done', PERSON, strict=False) == 1.0
    assert json_schema_score("[1, 2]", None) == 1.0 and json_schema_score("[1, 2", None) == 0.0


def test_json_schema_validator_messages_and_unsupported_keywords():
    errors = validate({"name": 5, "age": -3, "x": 1}, PERSON)
    assert any("$.name" in e and "expected string" in e for e in errors)
    assert any("minimum" in e for e in errors) and any("unexpected property 'x'" in e for e in errors)
    assert validate(3.0, {"type": "integer"}) == []  # 3.0 is an integer in JSON
    assert validate("b", {"anyOf": [{"const": "a"}, {"pattern": "^b"}]}) == []
    assert validate("c", {"anyOf": [{"const": "a"}, {"pattern": "^b"}]}) != []
    with pytest.raises(SchemaError, match="unsupported.*oneOf"):
        check_schema({"oneOf": [{"type": "string"}]})
    with pytest.raises(SchemaError, match="unknown type"):
        check_schema({"type": "str"})
    with pytest.raises(SchemaError, match="unsupported"):
        JsonSchemaMatch(schema={"type": "object", "properties": {"a": {"$ref": "#/x"}}})


def test_json_schema_reward_with_schema_column_and_extract_json_errors():
    reward = JsonSchemaMatch(schema_field="schema")
    scores = reward(
        prompts=["a", "b", "c"],
        completions=['{"n": 1}', '{"n": "1"}', '{"n": 1}'],
        schema=[
            '{"type": "object", "properties": {"n": {"type": "number"}}}',
            {"properties": {"n": {"type": "number"}}},
            None,
        ],
    )
    assert scores == [1.0, 0.0, None]
    assert JsonSchemaMatch()(prompts=["a", "b"], completions=["{}", "nope"]) == [1.0, 0.0]  # any valid JSON
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json("{oops}")
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("plain words", strict=False)


# --- length_penalty --------------------------------------------------------------------------------------------


def test_length_penalty_units_and_shape():
    assert length_penalty_score(10, 10) == 0.0
    assert length_penalty_score(15, 10) == pytest.approx(-0.5)
    assert length_penalty_score(100, 10) == -1.0  # bounded
    with pytest.raises(ValueError, match="positive"):
        length_penalty_score(1, 0)
    words = LengthPenalty(max_length=2, unit="words")
    assert words(prompts=["p", "p"], completions=["one two", "one two three"]) == [0.0, pytest.approx(-0.5)]
    chars = LengthPenalty(max_length=4, unit="chars")
    assert chars(prompts=["p"], completions=["abcdef"]) == [pytest.approx(-0.5)]
    tokens = LengthPenalty(max_length=2, unit="tokens")
    assert tokens(prompts=["p"], completions=["x"], completion_ids=[[5, 6, 7]]) == [pytest.approx(-0.5)]
    with pytest.raises(ValueError, match="completion_ids"):
        tokens(prompts=["p"], completions=["x"])
    with pytest.raises(ValueError, match="unit"):
        LengthPenalty(unit="pages")


# --- building and combining ------------------------------------------------------------------------------------


def test_build_rewards_from_params_and_weighted_sum():
    rewards = build_rewards(
        [
            {"name": "exact_match", "weight": 0.5, "answer_field": "answer"},
            {"name": "regex", "weight": 1.0, "pattern": "please", "label": "polite"},
            {"name": "length_penalty", "weight": 2.0, "max_length": 3, "unit": "words"},
        ]
    )
    assert [(r.label, r.weight) for r in rewards] == [
        ("exact_match", 0.5),
        ("polite", 1.0),
        ("length_penalty", 2.0),
    ]
    assert [r.func.__name__ for r in rewards] == [
        "exact_match",
        "polite",
        "length_penalty",
    ]  # TRL's metric names
    combined = MultiObjectiveReward(rewards)
    totals = combined(
        prompts=["q"] * 3,
        completions=["Answer: 4", "please, Answer: 5", "please say it in many more words"],
        answer=["4", "4", None],
    )
    # row 1: 0.5*1 + 0 + 0; row 2: 0.5*0 + 1 + 0; row 3: exact_match n/a, 1 + 2*(-1)
    assert totals == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(-1.0)]
    assert combined.last_components["exact_match"] == [1.0, 0.0, None]


def test_build_rewards_errors_are_clear():
    with pytest.raises(ValueError, match="no reward"):
        build_rewards(None)
    with pytest.raises(ValueError, match="unknown reward 'bleu'"):
        build_rewards([{"name": "bleu"}])
    with pytest.raises(ValueError, match=r"rewards\[0\].*tolerence"):
        build_rewards([{"name": "numeric_match", "tolerence": 0.1}])
    with pytest.raises(ValueError, match="appear twice"):
        build_rewards([{"name": "regex", "pattern": "a"}, {"name": "regex", "pattern": "b"}])
    with pytest.raises(ValueError, match="no reward_model"):
        build_rewards([{"name": "reward_model"}])
    with pytest.raises(ValueError, match="'name'"):
        build_rewards([{"weight": 1.0}])


# --- reward model as a reward ----------------------------------------------------------------------------------


def test_reward_model_reward_scores_like_the_model_and_appends_eos(tiny):
    import torch

    from trainer.models import load_reward, load_tokenizer

    [reward] = build_rewards(None, reward_model_path=tiny.reward, policy_eos_token_id=2)
    func = reward.func
    assert reward.label == "reward_model" and func.__name__ == "reward_model"
    eos = func.tokenizer.eos_token
    texts = func.texts(["Say hi.\n", "Say hi.\n"], ["hello", "hello"], completion_ids=[[7, 2], [7, 8]])
    assert texts == ["Say hi.\nhello" + eos, "Say hi.\nhello"]  # EOS only where the completion ended with it
    chat = func.texts(
        [[{"role": "user", "content": "Say hi."}]], [[{"role": "assistant", "content": "hello"}]]
    )
    assert chat[0] == func.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hello"}], tokenize=False
    )

    scores = func(prompts=["Say hi.\n", "Tell me more.\n"], completions=["hello there", "no"])
    tokenizer = load_tokenizer(tiny.reward)
    model = load_reward(tiny.reward, tokenizer=tokenizer).eval()
    with torch.no_grad():
        for text, score in zip(["Say hi.\nhello there", "Tell me more.\nno"], scores, strict=True):
            direct = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
            assert score == pytest.approx(float(direct), abs=1e-4)  # batching and padding change nothing
