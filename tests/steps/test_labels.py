"""The step vocabulary (app.steps.labels) and the stepwise rows (app.datasets.stepwise): pure, no database."""

import pytest

from app.datasets.stepwise import LabelledTrajectory, StepVote, stepwise_rows
from app.steps.labels import (
    StepLabelError,
    check_labels,
    counted_labels,
    prompt_text,
    step_text,
    steps_of,
    trajectory_messages,
)
from tests.steps.trajectories import trajectory_line

TAGS = ["wrong tool", "wrong arguments"]


def test_steps_are_assistant_messages_with_their_results():
    messages = trajectory_line("a", 3)["messages"][2:]
    steps = steps_of(messages)
    assert [len(s.observations) for s in steps] == [1, 1, 0]
    assert step_text(steps[0]) == ('Step 0 of a: I will look it up.\ncall: get_weather({"city": "City0"})\n'
                                   'result: {"temp_c": 10}')  # fmt: skip
    assert steps_of(trajectory_messages("plain answer", {})) [0].content == "plain answer"
    assert prompt_text([{"role": "user", "content": "hi"}]) == "hi"
    assert prompt_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "system: s\n\nuser: u"


def test_check_labels_rules():
    good = {"label": "good", "tags": []}
    labels, first = check_labels([good, {"label": None, "tags": ["wrong tool"]}, None], 1, 3, TAGS)
    assert first == 1 and labels[1]["label"] == "bad" and labels[2]["label"] is None  # after error: no label needed
    _, first = check_labels([good, {"label": "bad"}, {"label": "good"}], None, 3, TAGS)
    assert first == 1  # unmarked: the first bad step is the first error
    with pytest.raises(StepLabelError, match="step 2 has no label"):
        check_labels([good, None, good], None, 3, TAGS)
    with pytest.raises(StepLabelError, match="unknown tag"):
        check_labels([{"label": "good", "tags": ["nope"]}], None, 1, TAGS)
    with pytest.raises(StepLabelError, match="labels must be a list of 2"):
        check_labels([good], None, 2, TAGS)
    with pytest.raises(StepLabelError, match="first_error"):
        check_labels([good, good], 5, 2, TAGS)
    with pytest.raises(StepLabelError, match="its label is bad"):
        check_labels([good, good], 1, 2, TAGS)
    with pytest.raises(StepLabelError, match="bad before the first error"):
        check_labels([{"label": "bad"}, {"label": "bad"}], 1, 2, TAGS)
    assert counted_labels([{"label": "good"}, {"label": "bad"}, {"label": "good"}], 1) == ["good", "bad"]


def _trajectory(*votes):
    return LabelledTrajectory(completion_id=7, prompt_id=3, prompt="p", steps=["s0", "s1", "s2", "s3"],
                              votes=[StepVote(i, [{"label": x, "tags": t} for x, t in v[0]], v[1])
                                     for i, v in enumerate(votes)])  # fmt: skip


def test_stepwise_rows_majority_cut_at_first_error():
    g, b, n = ("good", []), ("bad", ["wrong tool"]), ("neutral", [])
    row = next(stepwise_rows(_trajectory(([g, g, b, g], 2), ([g, n, b, (None, [])], 2), ([g, b, g, g], 1))))
    # step 1: good, neutral, bad -> True; step 2: bad, bad (third rater is after their error) -> False; cut there
    assert row["completions"] == ["s0", "s1", "s2"] and row["labels"] == [True, True, False]
    assert row["first_error"] == 2 and row["n_votes"] == 3 and row["n_steps"] == 4
    assert row["tags"] == [[], [], ["wrong tool"]]  # a tag needs half the step's voters
    assert row["agreement"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    tie = next(stepwise_rows(_trajectory(([g, g, g, g], None), ([g, b, g, g], 1))))
    assert tie["labels"] == [True, False]  # a tie is False
    clean = next(stepwise_rows(_trajectory(([g, n, g, g], None),)))
    assert clean["labels"] == [True] * 4 and clean["first_error"] is None
    assert list(stepwise_rows(_trajectory(([g, n, g, g], None),), min_votes=2)) == []
    assert list(stepwise_rows(_trajectory())) == []
