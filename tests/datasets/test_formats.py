"""Export row builders: pair expansion, vote aggregation, KTO labels, aggregate rankings, SFT, splits."""

import random

import pytest

from app.datasets.formats import (
    JudgedComparison,
    JudgmentVote,
    aggregate_ranking,
    export_rows,
    kto_rows,
    pair_rows,
    ranking_rows,
    sft_rows,
    split_for_prompt,
)
from app.imports.parsers import parse_import
from tests.conftest import SHARED_DATA

OASST_FILE = SHARED_DATA / "oasst_en_100_trees.jsonl"

COMPLETIONS = {
    "a": ("answer A", "model-1"),
    "b": ("answer B", "model-2"),
    "c": ("answer C", None),
    "d": ("answer D", "model-1"),
}


def comparison(*judgments, prompt="Why is the sky blue?", completions=None, is_gold=False):
    return JudgedComparison(
        comparison_id=11,
        prompt_id=5,
        prompt=prompt,
        completions=completions or COMPLETIONS,
        is_gold=is_gold,
        judgments=list(judgments),
    )


def vote(ranking, rater=1, weight=1.0, flags=()):
    return JudgmentVote(rater_id=rater, ranking=ranking, weight=weight, flags=list(flags))


def by_pair(rows):
    return {(row["chosen_id"], row["rejected_id"]): row for row in rows}


# ----------------------------------------------------------------------------------------------------
# pairs


def test_one_ranking_expands_to_pairs_with_group_distance_margins_and_no_tie_pairs():
    rows = by_pair(pair_rows(comparison(vote([["a"], ["b", "c"], ["d"]])), conversational=False))
    assert {pair: row["margin"] for pair, row in rows.items()} == {
        ("a", "b"): 1.0,
        ("a", "c"): 1.0,
        ("a", "d"): 2.0,
        ("b", "d"): 1.0,
        ("c", "d"): 1.0,
    }
    row = rows[("a", "c")]
    assert row["prompt"] == "Why is the sky blue?"
    assert (row["chosen"], row["rejected"]) == ("answer A", "answer C")
    assert (row["chosen_model"], row["rejected_model"]) == ("model-1", None)
    assert (row["comparison_id"], row["prompt_id"], row["agreement"], row["n_votes"], row["weight"]) == (
        11,
        5,
        1.0,
        1,
        1.0,
    )


def test_votes_aggregate_to_the_majority_direction():
    jc = comparison(
        vote([["a"], ["b"]], rater=1), vote([["a"], ["b"]], rater=2), vote([["b"], ["a"]], rater=3)
    )
    (row,) = pair_rows(jc, conversational=False)
    assert (row["chosen_id"], row["rejected_id"]) == ("a", "b")
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["n_votes"] == 3


def test_rater_weight_can_outvote_a_headcount_majority():
    jc = comparison(
        vote([["a"], ["b"]], rater=1, weight=0.9),
        vote([["b"], ["a"]], rater=2, weight=0.2),
        vote([["b"], ["a"]], rater=3, weight=0.3),
    )
    (row,) = pair_rows(jc, conversational=False)
    assert row["chosen_id"] == "a"
    assert row["agreement"] == pytest.approx(0.9 / 1.4)
    assert row["weight"] == pytest.approx(0.9)


def test_an_exact_tie_of_votes_gives_no_row():
    jc = comparison(vote([["a"], ["b"]], rater=1), vote([["b"], ["a"]], rater=2))
    assert list(pair_rows(jc, conversational=False)) == []


def test_a_tie_judgment_counts_as_a_voter_backing_neither_side():
    jc = comparison(vote([["a"], ["b"]], rater=1), vote([["a", "b"]], rater=2))
    (row,) = pair_rows(jc, conversational=False)
    assert (row["chosen_id"], row["n_votes"], row["agreement"]) == ("a", 2, 0.5)


def test_margin_and_weight_are_means_over_the_majority_voters():
    jc = comparison(
        vote([["a"], ["b"]], rater=1, weight=1.0),  # margin 1
        vote([["a"], ["c"], ["b"]], rater=2, weight=0.5),  # margin 2
        vote([["b"], ["a"]], rater=3, weight=0.25),  # minority: not in the means
    )
    row = by_pair(pair_rows(jc, conversational=False))[("a", "b")]
    assert row["margin"] == pytest.approx(1.5)
    assert row["weight"] == pytest.approx(0.75)


def test_min_votes_and_min_agreement_filter_aggregated_rows():
    jc = comparison(
        vote([["a"], ["b"], ["c"]], rater=1),
        vote([["a"], ["c"], ["b"]], rater=2),
        vote([["a"], ["b"], ["c"]], rater=3),
    )
    rows = by_pair(pair_rows(jc, conversational=False, min_agreement=0.9))
    assert set(rows) == {("a", "b"), ("a", "c")}  # b over c has 2/3 agreement
    assert list(pair_rows(jc, conversational=False, min_votes=4)) == []


def test_row_order_is_deterministic_whatever_the_judgment_order():
    judgments = [
        vote(random.Random(seed).sample([["a"], ["b"], ["c"], ["d"]], 4), rater=seed) for seed in range(7)
    ]
    expected = list(pair_rows(comparison(*judgments), conversational=True))
    for seed in range(5):
        shuffled = judgments[:]
        random.Random(seed).shuffle(shuffled)
        assert list(pair_rows(comparison(*shuffled), conversational=True)) == expected


def test_conversational_rows_use_message_lists():
    (row,) = pair_rows(comparison(vote([["b"], ["a"]])), conversational=True)
    assert row["prompt"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "answer B"}]
    assert row["rejected"] == [{"role": "assistant", "content": "answer A"}]
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    (row,) = pair_rows(comparison(vote([["b"], ["a"]]), prompt=chat), conversational=True)
    assert row["prompt"] == chat


def test_standard_rows_need_a_plain_prompt():
    single = [{"role": "user", "content": "Hi"}]
    (row,) = pair_rows(comparison(vote([["b"], ["a"]]), prompt=single), conversational=False)
    assert row["prompt"] == "Hi"
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match="conversational=True"):
        list(pair_rows(comparison(vote([["b"], ["a"]]), prompt=chat), conversational=False))


def test_bad_judgments_are_refused():
    with pytest.raises(ValueError, match="unknown completion 'z'"):
        list(pair_rows(comparison(vote([["a"], ["z"]])), conversational=False))
    with pytest.raises(ValueError, match="twice"):
        list(pair_rows(comparison(vote([["a"], ["a", "b"]])), conversational=False))
    with pytest.raises(ValueError, match="weight"):
        list(pair_rows(comparison(vote([["a"], ["b"]], weight=-1.0)), conversational=False))


def test_no_judgments_no_rows():
    jc = comparison()
    for build in (pair_rows, kto_rows, ranking_rows, sft_rows):
        assert list(build(jc)) == []


# ----------------------------------------------------------------------------------------------------
# kto


def labels(rows):
    return {row["completion_id"]: row["label"] for row in rows}


def test_kto_top_group_is_desirable_bottom_undesirable_middle_gives_nothing():
    rows = list(kto_rows(comparison(vote([["a", "b"], ["c"], ["d"]]))))
    assert labels(rows) == {"a": True, "b": True, "d": False}
    row = rows[0]
    assert (row["prompt"], row["completion"], row["model"], row["comparison_id"], row["prompt_id"]) == (
        "Why is the sky blue?",
        "answer A",
        "model-1",
        11,
        5,
    )


def test_kto_all_bad_flag_makes_every_option_undesirable():
    rows = list(kto_rows(comparison(vote([["a"], ["b"], ["c"], ["d"]], flags=["all_bad"]))))
    assert labels(rows) == dict.fromkeys("abcd", False)


def test_kto_labels_aggregate_by_weighted_majority():
    jc = comparison(
        vote([["a"], ["b"]], rater=1),
        vote([["a"], ["b"]], rater=2),
        vote([["b"], ["a"]], rater=3),
        completions={k: COMPLETIONS[k] for k in "ab"},
    )
    rows = {row["completion_id"]: row for row in kto_rows(jc)}
    assert (rows["a"]["label"], rows["b"]["label"]) == (True, False)
    assert rows["a"]["agreement"] == pytest.approx(2 / 3)
    assert rows["a"]["n_votes"] == 3
    tied = comparison(vote([["a"], ["b"]], rater=1), vote([["b"], ["a"]], rater=2))
    assert list(kto_rows(tied)) == []


def test_kto_conversational_completion_is_one_assistant_message():
    (row, _) = kto_rows(comparison(vote([["a"], ["b"]])), conversational=True)
    assert row["completion"] == [{"role": "assistant", "content": "answer A"}]
    assert row["prompt"] == [{"role": "user", "content": "Why is the sky blue?"}]


# ----------------------------------------------------------------------------------------------------
# rankings and sft


def test_ranking_row_aggregates_by_borda_with_ties():
    jc = comparison(
        vote([["a"], ["b"], ["c"], ["d"]], rater=1),
        vote([["b"], ["a"], ["c", "d"]], rater=2),
    )
    (row,) = ranking_rows(jc)
    assert row["completion_ids"] == ["a", "b", "c", "d"]
    assert row["completions"] == ["answer A", "answer B", "answer C", "answer D"]
    assert row["models"] == ["model-1", "model-2", None, "model-1"]
    # Borda (below - above): a = 3 + 1, b = 1 + 3, c = -1 - 2, d = -3 - 2
    assert row["ranking"] == [[0, 1], [2], [3]]
    assert row["n_votes"] == 2
    assert 0 < row["agreement"] < 1


def test_unanimous_ranking_has_full_agreement_and_all_tied_gives_no_row():
    jc = comparison(vote([["c"], ["a"], ["b", "d"]], rater=1), vote([["c"], ["a"], ["b", "d"]], rater=2))
    (row,) = ranking_rows(jc, min_agreement=1.0)
    assert row["ranking"] == [[2], [0], [1, 3]]
    assert row["agreement"] == 1.0
    assert aggregate_ranking(comparison(vote([["a", "b", "c", "d"]]))) is None
    assert list(ranking_rows(comparison(vote([["a"], ["b"]], rater=1), vote([["b"], ["a"]], rater=2)))) == []


def test_sft_gives_the_best_ranked_completion():
    jc = comparison(vote([["c"], ["a"], ["b"]], rater=1), vote([["c"], ["b"], ["a"]], rater=2))
    (row,) = sft_rows(jc, conversational=True)
    assert (row["completion_id"], row["model"]) == ("c", None)
    assert row["completion"] == [{"role": "assistant", "content": "answer C"}]


def test_sft_gives_every_completion_tied_for_best():
    rows = list(sft_rows(comparison(vote([["b", "d"], ["a", "c"]]))))
    assert [row["completion_id"] for row in rows] == ["b", "d"]


def test_sft_skips_comparisons_mostly_flagged_all_bad():
    jc = comparison(vote([["a"], ["b"]], rater=1, flags=["all_bad"]), vote([["a"], ["b"]], rater=2))
    assert list(sft_rows(jc)) == []
    jc.judgments.append(vote([["a"], ["b"]], rater=3))
    assert [row["completion_id"] for row in sft_rows(jc)] == ["a"]


# ----------------------------------------------------------------------------------------------------
# splits and export_rows


def test_split_is_deterministic_by_prompt_and_honours_the_fraction():
    sides = [split_for_prompt(prompt_id, seed=3, test_fraction=0.2) for prompt_id in range(10_000)]
    assert sides == [split_for_prompt(prompt_id, seed=3, test_fraction=0.2) for prompt_id in range(10_000)]
    assert 0.17 < sides.count("test") / len(sides) < 0.23
    other_seed = [split_for_prompt(prompt_id, seed=4, test_fraction=0.2) for prompt_id in range(10_000)]
    assert other_seed != sides
    assert {split_for_prompt(p, seed=0, test_fraction=0.0) for p in range(1000)} == {"train"}
    assert {split_for_prompt(p, seed=0, test_fraction=1.0) for p in range(1000)} == {"test"}
    with pytest.raises(ValueError):
        split_for_prompt(1, seed=0, test_fraction=1.5)


def test_export_rows_never_puts_a_prompt_on_both_sides():
    comparisons = [
        JudgedComparison(
            comparison_id=comparison_id,
            prompt_id=comparison_id % 40,  # several comparisons share each prompt
            prompt=f"prompt {comparison_id % 40}",
            completions=COMPLETIONS,
            judgments=[vote([["a"], ["b"], ["c", "d"]])],
        )
        for comparison_id in range(200)
    ]
    sides_of_prompt = {}
    for split, row in export_rows(comparisons, "pairs", test_fraction=0.3, seed=1):
        sides_of_prompt.setdefault(row["prompt_id"], set()).add(split)
    assert len(sides_of_prompt) == 40
    assert all(len(sides) == 1 for sides in sides_of_prompt.values())
    assert {side for sides in sides_of_prompt.values() for side in sides} == {"train", "test"}
    with pytest.raises(ValueError, match="unknown export format"):
        list(export_rows(comparisons, "csv"))


def test_every_turn_of_a_conversation_lands_on_one_side():
    """Comparisons at several turns of one conversation (an Open-Assistant tree, a chat compared turn by turn) are
    different prompts: split by prompt, a held-out conversation's earlier turns would be trained on."""
    comparisons = []
    for conversation in range(60):
        history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {conversation}"}]
        for turn in range(3):
            comparisons.append(JudgedComparison(
                comparison_id=len(comparisons), prompt_id=len(comparisons), prompt=[dict(m) for m in history],
                completions=COMPLETIONS, judgments=[vote([["a"], ["b"]])]))  # fmt: skip
            history += [{"role": "assistant", "content": f"answer {turn}"}, {"role": "user", "content": f"more {turn}"}]
    sides = {}
    for split, row in export_rows(comparisons, "kto", conversational=True, test_fraction=0.3, seed=2):
        sides.setdefault(row["conversation"], set()).add(split)
    assert len(sides) == 60 and all(len(s) == 1 for s in sides.values())
    assert {side for s in sides.values() for side in s} == {"train", "test"}


@pytest.mark.skipif(not OASST_FILE.is_file(), reason=f"reference data not found at {OASST_FILE}")
def test_real_oasst_rankings_become_pairs_that_follow_the_human_ranks():
    records = parse_import(OASST_FILE.read_bytes(), "oasst")
    expected_pairs = produced_pairs = 0
    for index, record in enumerate(records):
        ids = [c["metadata"]["message_id"] for c in record.completions]
        jc = JudgedComparison(
            comparison_id=index,
            prompt_id=record.external_id,
            prompt=record.prompt,
            completions={
                cid: (c["text"], c["model"]) for cid, c in zip(ids, record.completions, strict=True)
            },
            judgments=[
                JudgmentVote("oasst", [[ids[i] for i in g] for g in record.ranking], source="imported")
            ],
        )
        ranks = {cid: c["metadata"]["rank"] for cid, c in zip(ids, record.completions, strict=True)}
        rows = list(pair_rows(jc, conversational=True))
        produced_pairs += len(rows)
        for row in rows:
            assert ranks[row["chosen_id"]] < ranks[row["rejected_id"]]
            assert row["prompt"] == record.prompt
        expected_pairs += sum(1 for x in ranks.values() for y in ranks.values() if x < y)
        assert len(list(ranking_rows(jc, conversational=True))) == 1
    assert produced_pairs == expected_pairs > len(records)
