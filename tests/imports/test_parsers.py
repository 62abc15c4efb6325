"""Import parsers: every format, every way a file is rejected, and the real third-party files."""

import json
import re

import pytest

from app.imports.parsers import (
    FORMATS,
    ImportValidationError,
    hh_transcript,
    parse_import,
)
from tests.conftest import SHARED_DATA

OASST_FILE = SHARED_DATA / "oasst_en_100_trees.jsonl"
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_2000.jsonl"
needs_shared_data = pytest.mark.skipif(
    not (OASST_FILE.is_file() and HH_FILE.is_file()),
    reason=f"reference data not found in {SHARED_DATA} (set RANKFORGE_SHARED_DATA to the shared/data folder)",
)


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def native_row(**overrides):
    row = {
        "prompt": "Write a haiku about rain.",
        "completions": [
            {"text": "Rain on the tin roof", "model": "m1"},
            {"text": "Clouds weep", "model": "m2"},
        ],
    }
    row.update(overrides)
    return row


def rejection(data: bytes, fmt: str = "native", **kwargs) -> ImportValidationError:
    with pytest.raises(ImportValidationError) as caught:
        parse_import(data, fmt, **kwargs)
    return caught.value


# ----------------------------------------------------------------------------------------------------
# native: accepted input


def test_native_rows_parse_with_line_numbers_blank_lines_and_bom():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    data = (
        "\ufeff"
        + json.dumps(native_row(external_id="a", ranking=[[1], [0]], metadata={"topic": "poetry"}))
        + "\n\n   \n"
        + json.dumps(
            native_row(prompt=chat, completions=[{"text": "Hello"}, {"text": "Hey", "metadata": {"t": 1}}])
        )
        + "\r\n"
    ).encode()
    first, second = parse_import(data, "native")
    assert (first.line, first.external_id, first.ranking, first.metadata) == (
        1,
        "a",
        [[1], [0]],
        {"topic": "poetry"},
    )
    assert first.prompt == "Write a haiku about rain."
    assert first.completions[0] == {"text": "Rain on the tin roof", "model": "m1", "metadata": {}}
    assert (second.line, second.external_id, second.ranking) == (4, None, None)
    assert second.prompt == chat
    assert second.completions[1] == {"text": "Hey", "model": None, "metadata": {"t": 1}}


def test_native_ranking_with_ties_is_kept():
    row = native_row(completions=[{"text": "a"}, {"text": "b"}, {"text": "c"}], ranking=[[2], [0, 1]])
    (record,) = parse_import(jsonl(row), "native")
    assert record.ranking == [[2], [0, 1]]


# ----------------------------------------------------------------------------------------------------
# rejections (one test per kind of bad input)


def test_malformed_json_names_the_line():
    data = jsonl(native_row()) + b'{"prompt": "x", "completions": [\n' + jsonl(native_row(prompt="y"))
    error = rejection(data)
    assert [e.line for e in error.errors] == [2]
    assert "malformed JSON" in error.errors[0].message
    assert "line 2" in str(error)


def test_non_object_line_is_rejected():
    error = rejection(jsonl(native_row(), ["not", "an", "object"]))
    assert error.errors[0].line == 2
    assert "expected a JSON object, got array" in error.errors[0].message


def test_missing_field_is_rejected():
    row = native_row()
    del row["completions"]
    error = rejection(jsonl(row))
    assert error.errors[0].line == 1
    assert "missing field 'completions'" in error.errors[0].message


def test_missing_completion_text_is_rejected():
    error = rejection(jsonl(native_row(completions=[{"text": "a"}, {"model": "m"}])))
    assert "missing field 'text' in completions[1]" in error.errors[0].message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"completions": "a, b"}, "completions must be an array, got string"),
        ({"prompt": 42}, "prompt must be a string or a list of messages, got number"),
        ({"prompt": [{"role": "user", "content": 3}]}, "prompt[0].content must be a string, got number"),
        ({"prompt": [{"role": "robot", "content": "hi"}]}, "prompt[0].role is 'robot'"),
        ({"external_id": 7}, "external_id must be a string, got number"),
        ({"ranking": [[True], [0]]}, "entries must be an integer, got boolean"),
        ({"metadata": ["x"]}, "metadata must be an object, got array"),
    ],
)
def test_wrong_type_is_rejected(overrides, expected):
    error = rejection(jsonl(native_row(**overrides)))
    assert expected in error.errors[0].message


def test_empty_prompt_is_rejected():
    assert "prompt must not be empty" in rejection(jsonl(native_row(prompt="  "))).errors[0].message


def test_unknown_native_field_is_rejected():
    error = rejection(jsonl(native_row(ranknig=[[0], [1]])))
    assert "unknown field(s) ranknig" in error.errors[0].message


def test_fewer_than_two_completions_is_rejected():
    error = rejection(jsonl(native_row(completions=[{"text": "only one"}])))
    assert "needs at least 2 completions, got 1" in error.errors[0].message


def test_duplicate_completion_texts_are_rejected():
    error = rejection(jsonl(native_row(completions=[{"text": "same"}, {"text": "other"}, {"text": "same"}])))
    assert "completions 0 and 2 have the same text" in error.errors[0].message


@pytest.mark.parametrize(
    "ranking",
    [[[0]], [[0], [0, 1]], [[0], [2]], [[0], []], [[0, 1, 2]], [[-1], [0, 1]]],
    ids=["missing-index", "repeated-index", "out-of-range", "empty-group", "too-many", "negative"],
)
def test_ranking_that_is_not_a_permutation_is_rejected(ranking):
    error = rejection(jsonl(native_row(ranking=ranking)))
    assert "ranking" in error.errors[0].message


def test_unknown_format_lists_the_formats():
    error = rejection(jsonl(native_row()), fmt="csv")
    assert error.errors[0].line == 0
    message = str(error)
    assert "unknown import format 'csv'" in message
    assert all(name in message for name in FORMATS)


@pytest.mark.parametrize(
    "data", [b"", b"\n\n  \n", b"\xef\xbb\xbf"], ids=["empty", "blank-lines", "bom-only"]
)
def test_empty_file_is_rejected(data):
    error = rejection(data)
    assert "file is empty" in str(error)


def test_file_larger_than_max_bytes_is_rejected():
    data = jsonl(native_row(), native_row(prompt="another"))
    error = rejection(data, max_bytes=len(data) - 1)
    assert "larger than the limit" in str(error)
    assert len(parse_import(data, "native", max_bytes=len(data))) == 2


def test_duplicate_external_id_names_both_lines():
    data = jsonl(native_row(external_id="x"), native_row(external_id="y"), native_row(external_id="x"))
    error = rejection(data)
    assert [e.line for e in error.errors] == [3]
    assert "duplicate external_id 'x' (first seen on line 1)" in error.errors[0].message


def test_invalid_utf8_names_the_line():
    data = jsonl(native_row()) + b'{"prompt": "caf\xe9", "completions": []}\n'
    error = rejection(data)
    assert error.errors[0].line == 2
    assert "invalid UTF-8" in error.errors[0].message


def test_nan_is_not_json():
    data = b'{"prompt": "x", "completions": [{"text": "a"}, {"text": "b"}], "metadata": {"score": NaN}}\n'
    assert "malformed JSON" in rejection(data).errors[0].message


def test_errors_are_capped_at_100_with_a_total():
    data = b"".join(b"{broken\n" for _ in range(150))
    error = rejection(data)
    assert error.total == 150
    assert len(error.errors) == 100
    assert "and 50 more" in str(error)


def test_one_bad_line_rejects_the_whole_file():
    rows = [native_row(prompt=f"p{i}") for i in range(20)]
    rows[13] = native_row(completions=[{"text": "x"}])
    error = rejection(jsonl(*rows))
    assert error.total == 1 and error.errors[0].line == 14


# ----------------------------------------------------------------------------------------------------
# trl


def test_trl_standard_row():
    row = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "score_chosen": 9.0}
    (record,) = parse_import(jsonl(row), "trl")
    assert record.prompt == "2+2?"
    assert [c["text"] for c in record.completions] == ["4", "5"]
    assert record.ranking == [[0], [1]]
    assert record.metadata == {"score_chosen": 9.0}


def test_trl_conversational_row():
    prompt = [{"role": "user", "content": "2+2?"}]
    row = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
        "external_id": "q1",
    }
    (record,) = parse_import(jsonl(row), "trl")
    assert (record.prompt, record.external_id) == (prompt, "q1")
    assert [c["text"] for c in record.completions] == ["4", "5"]


def test_trl_implicit_prompt_is_the_shared_prefix():
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ]
    row = {
        "chosen": [*shared, {"role": "assistant", "content": "4"}],
        "rejected": [*shared, {"role": "assistant", "content": "5"}],
    }
    (record,) = parse_import(jsonl(row), "trl")
    assert record.prompt == shared
    assert [c["text"] for c in record.completions] == ["4", "5"]


def test_trl_rows_without_prompt_need_message_lists():
    error = rejection(jsonl({"chosen": "4", "rejected": "5"}), fmt="trl")
    assert "missing field 'prompt'" in error.errors[0].message


def test_trl_implicit_prompt_must_share_messages():
    row = {
        "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "4"}],
        "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "5"}],
    }
    assert "share no leading messages" in rejection(jsonl(row), fmt="trl").errors[0].message


def test_trl_conversational_completion_must_be_one_assistant_message():
    row = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}, {"role": "user", "content": "ok"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
    assert "exactly one assistant message" in rejection(jsonl(row), fmt="trl").errors[0].message


def test_trl_chosen_equal_to_rejected_is_rejected():
    error = rejection(jsonl({"prompt": "p", "chosen": "same", "rejected": "same"}), fmt="trl")
    assert "same text" in error.errors[0].message


# ----------------------------------------------------------------------------------------------------
# hh-rlhf (hand-made rows; the real file is checked below)


def test_hh_splits_the_shared_prompt_into_chat_turns():
    prompt = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?"
    row = {"chosen": prompt + "\n\nAssistant: 4", "rejected": prompt + "\n\nAssistant: 5"}
    (record,) = parse_import(jsonl(row), "hh-rlhf")
    assert record.prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ]
    assert [c["text"] for c in record.completions] == ["4", "5"]
    assert record.ranking == [[0], [1]]
    assert hh_transcript(record.prompt, "4") == row["chosen"]


def test_hh_empty_final_reply_is_kept():
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: ", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"}
    (record,) = parse_import(jsonl(row), "hh-rlhf")
    assert [c["text"] for c in record.completions] == ["", "Go away"]
    assert hh_transcript(record.prompt, "") == row["chosen"]


def test_hh_extra_assistant_turn_makes_a_multi_turn_completion():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me"
    row = {
        "chosen": shared + "\n\nAssistant: Sure\n\nAssistant: Here you go",
        "rejected": shared + "\n\nAssistant: No",
    }
    (record,) = parse_import(jsonl(row), "hh-rlhf")
    assert record.prompt[-1] == {"role": "user", "content": "Help me"}
    assert [c["text"] for c in record.completions] == ["Sure\n\nAssistant: Here you go", "No"]
    assert record.metadata == {"hh_multi_turn_completion": True}
    for completion, transcript in zip(record.completions, (row["chosen"], row["rejected"]), strict=True):
        assert hh_transcript(record.prompt, completion["text"]) == transcript


def test_hh_transcript_must_start_with_human():
    row = {"chosen": "Human: Hi\n\nAssistant: a", "rejected": "Human: Hi\n\nAssistant: b"}
    assert "must start with" in rejection(jsonl(row), fmt="hh-rlhf").errors[0].message


def test_hh_identical_transcripts_are_rejected():
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: a", "rejected": "\n\nHuman: Hi\n\nAssistant: a"}
    assert "identical" in rejection(jsonl(row), fmt="hh-rlhf").errors[0].message


# ----------------------------------------------------------------------------------------------------
# oasst (a hand-made tree; the real file is checked below)


def message(message_id, role, text, rank=None, replies=(), **extra):
    return {
        "message_id": message_id,
        "role": role,
        "text": text,
        "rank": rank,
        "replies": list(replies),
        **extra,
    }


def test_oasst_tree_gives_one_record_per_ranked_prompter_message():
    tree = {
        "message_tree_id": "t1",
        "prompt": message(
            "p1",
            "prompter",
            "Root question",
            lang="en",
            replies=[
                message(
                    "a1",
                    "assistant",
                    "Best answer",
                    rank=0,
                    replies=[
                        message(
                            "p2",
                            "prompter",
                            "Follow-up",
                            replies=[
                                message("a3", "assistant", "tie one", rank=1),
                                message("a4", "assistant", "tie two", rank=1),
                                message("a5", "assistant", "winner", rank=0),
                            ],
                        ),
                    ],
                ),
                message("a2", "assistant", "Worse answer", rank=1, model_name="bot-7"),
                message("a6", "assistant", "Deleted answer", rank=2, deleted=True),
                message("a7", "assistant", "Unranked answer"),
            ],
        ),
    }
    root, follow_up = parse_import(jsonl(tree), "oasst")
    assert (root.external_id, root.line) == ("p1", 1)
    assert root.prompt == [{"role": "user", "content": "Root question"}]
    assert [c["text"] for c in root.completions] == ["Best answer", "Worse answer"]
    assert root.completions[1]["model"] == "bot-7"
    assert root.completions[0]["metadata"]["message_id"] == "a1"
    assert root.ranking == [[0], [1]]
    assert root.metadata == {"message_tree_id": "t1", "lang": "en"}
    assert follow_up.external_id == "p2"
    assert follow_up.prompt == [
        {"role": "user", "content": "Root question"},
        {"role": "assistant", "content": "Best answer"},
        {"role": "user", "content": "Follow-up"},
    ]
    assert follow_up.ranking == [[2], [0, 1]]


def test_oasst_tree_without_prompt_is_rejected():
    assert (
        "missing field 'prompt'" in rejection(jsonl({"message_tree_id": "t"}), fmt="oasst").errors[0].message
    )


def test_oasst_repeated_tree_is_a_duplicate_external_id():
    tree = {
        "prompt": message(
            "p",
            "prompter",
            "Q",
            replies=[message("a", "assistant", "x", rank=0), message("b", "assistant", "y", rank=1)],
        )
    }
    error = rejection(jsonl(tree, tree), fmt="oasst")
    assert "duplicate external_id 'p' (first seen on line 1)" in error.errors[0].message


# ----------------------------------------------------------------------------------------------------
# the real third-party files


def count_ranked_groups(tree_root):
    """Independent walk of an OASST tree: sizes of ranked assistant sibling groups (2 or more)."""
    sizes = []
    for reply in tree_root.get("replies", []):
        sizes.extend(count_ranked_groups(reply))
    ranked = [r for r in tree_root.get("replies", []) if r.get("rank") is not None and not r.get("deleted")]
    if tree_root["role"] == "prompter" and len(ranked) >= 2:
        sizes.append(len(ranked))
    return sizes


@needs_shared_data
def test_real_oasst_file_gives_212_ranked_groups():
    data = OASST_FILE.read_bytes()
    records = parse_import(data, "oasst")
    trees = [json.loads(line) for line in data.splitlines()]

    assert len(records) == 212 == sum(len(count_ranked_groups(tree["prompt"])) for tree in trees)
    sizes = [len(record.completions) for record in records]
    assert (min(sizes), max(sizes)) == (2, 9)
    assert sorted(sizes) == sorted(s for tree in trees for s in count_ranked_groups(tree["prompt"]))
    # Every message the records use is one of the file's 1,167 messages, each completion used once.
    all_message_ids = set(re.findall(r'"message_id": "([^"]+)"', data.decode()))
    assert len(all_message_ids) == 1167
    completion_ids = [c["metadata"]["message_id"] for r in records for c in r.completions]
    assert len(completion_ids) == len(set(completion_ids))
    assert set(completion_ids) <= all_message_ids
    assert {r.external_id for r in records} <= all_message_ids
    for record in records:
        assert record.prompt[-1]["role"] == "user"
        assert [m["role"] for m in record.prompt] == ["user", "assistant"] * (len(record.prompt) // 2) + [
            "user"
        ]
        ranks = [c["metadata"]["rank"] for c in record.completions]
        best = [record.completions[i]["metadata"]["rank"] for i in record.ranking[0]]
        assert best == [min(ranks)] * len(best)
        assert sorted(i for group in record.ranking for i in group) == list(range(len(record.completions)))


@needs_shared_data
def test_real_hh_file_rebuilds_every_transcript_exactly():
    data = HH_FILE.read_bytes()
    records = parse_import(data, "hh-rlhf")
    rows = [json.loads(line) for line in data.splitlines()]

    assert len(records) == len(rows) == 2000
    for record, row in zip(records, rows, strict=True):
        chosen, rejected = record.completions
        assert hh_transcript(record.prompt, chosen["text"]) == row["chosen"]
        assert hh_transcript(record.prompt, rejected["text"]) == row["rejected"]
        assert record.ranking == [[0], [1]]
        assert record.prompt[0]["role"] == "user"
    empty_replies = [r.line for r in records if any(c["text"] == "" for c in r.completions)]
    multi_turn = [r.line for r in records if r.metadata.get("hh_multi_turn_completion")]
    # README: 4 rows have an empty final reply, and 4 do not share the text up to the last "Assistant:".
    assert len(empty_replies) == 4
    assert len(multi_turn) == 4
    unshared = [
        i
        for i, row in enumerate(rows, start=1)
        if row["chosen"][: row["chosen"].rfind("\n\nAssistant:")]
        != row["rejected"][: row["rejected"].rfind("\n\nAssistant:")]
    ]
    assert multi_turn == unshared
