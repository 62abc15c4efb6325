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
    assert tie["labels"] == [True] and tie["first_error"] is None  # a tie is contested: the row ends before it
    clean = next(stepwise_rows(_trajectory(([g, n, g, g], None),)))
    assert clean["labels"] == [True] * 4 and clean["first_error"] is None
    assert list(stepwise_rows(_trajectory(([g, n, g, g], None),), min_votes=2)) == []
    assert list(stepwise_rows(_trajectory())) == []


def test_stepwise_rows_first_error_needs_every_voter_and_contested_steps_end_the_row():
    g, b = ("good", []), ("bad", [])
    # one rater's early false bad (step 1) ends only their labels: the two others carry the row to the true error
    row = next(stepwise_rows(_trajectory(([g, b], 1), ([g, g, b], 2), ([g, g, b], 2))))
    assert row["labels"] == [True, True, False] and row["first_error"] == 2 and row["n_votes"] == 3
    # a bad majority that someone disputes is contested, not a first error: the row keeps the steps before it
    disputed = next(stepwise_rows(_trajectory(([g, b], 1), ([g, b], 1), ([g, g, g, g], None))))
    assert disputed["completions"] == ["s0"] and disputed["labels"] == [True] and disputed["first_error"] is None
    # contested at the first step: nothing agreed, no row
    assert list(stepwise_rows(_trajectory(([b], 0), ([g, g, g, g], None)))) == []
    # every voter on the step says bad (the third rater stopped earlier, outvoted): the first error
    row = next(stepwise_rows(_trajectory(([g, b], 1), ([g, g, b], 2), ([g, g, b], 2), ([g, g, g, g], None))))
    assert row["labels"] == [True, True]  # 2 bad, 1 good at step 2 (the fourth rater): contested
    # one rater alone: their labels are the verdicts, their first bad the first error
    assert next(stepwise_rows(_trajectory(([g, g, b], 2),)))["labels"] == [True, True, False]


def test_stepwise_rows_recover_a_planted_error_from_noisy_raters():
    """Three raters right 85% of the time per step (each stopping at their first "bad", as the protocol asks) on
    trajectories with a known truth: the aggregated rows are almost always right, where a plain per-step majority
    (a tie False) ends a third of the rows at a good step. Seeded: the same draws every run."""
    import random

    rng = random.Random(24)
    rows = wrong_steps = steps = false_errors = found = planted = 0
    for number in range(600):
        n_steps = rng.randint(4, 7)
        error = rng.randrange(n_steps - 1) if number % 2 else None
        votes = []
        for _rater in range(3):
            labels, first = [], None
            for index in range(n_steps):
                right = rng.random() < 0.85
                said_bad = (index == error) == right
                labels.append(("bad" if said_bad else "good", []))
                if said_bad:
                    first = index
                    labels += [(None, [])] * (n_steps - index - 1)
                    break
            votes.append((labels, first))
        trajectory = LabelledTrajectory(completion_id=number, prompt_id=number, prompt="p",
                                        steps=[f"s{i}" for i in range(n_steps)],
                                        votes=[StepVote(i, [{"label": x, "tags": t} for x, t in v[0]], v[1])
                                               for i, v in enumerate(votes)])  # fmt: skip
        planted += error is not None
        for row in stepwise_rows(trajectory):
            rows += 1
            steps += len(row["labels"])
            wrong_steps += sum(label != (i != error) for i, label in enumerate(row["labels"]))
            false_errors += row["first_error"] is not None and row["first_error"] != error
            found += error is not None and row["first_error"] == error
    assert rows > 500 and steps > 1500
    assert wrong_steps / steps < 0.03  # a per-step majority with ties False: about 13%
    assert false_errors < 0.05 * rows
    assert found > 0.5 * planted  # most planted errors are agreed on (the rest are contested, not mislabelled)
