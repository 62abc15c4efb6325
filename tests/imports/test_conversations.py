"""Conversation imports (OpenAI chat with tools, Hugging Face messages, ShareGPT), the message shape they share
(app.imports.messages), Open-Assistant siblings, and the conversational pairs export of what they import."""

import json

import pytest

from app.errors import ImportValidationError
from app.imports.messages import CONTINUATION_KEY
from app.imports.parsers import FORMATS, parse_import
from tests.imports.test_parsers import OASST_FILE, jsonl, needs_shared_data

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What's the weather in Paris?"},
]


def openai_line(city: str, answer: str, **extra) -> dict:
    """A conversation whose continuation calls the weather tool (arguments as OpenAI writes them: a JSON string)."""
    call = {"id": f"call_{city}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}  # fmt: skip
    return {
        "messages": [
            *HISTORY,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{city}", "content": '{"temp_c": 18}'},
            {"role": "assistant", "content": answer},
        ],
        "tools": [WEATHER_TOOL],
        **extra,
    }


def errors_of(data: bytes, fmt: str) -> list[tuple[int, str]]:
    with pytest.raises(ImportValidationError) as caught:
        parse_import(data, fmt)
    return [(error.line, error.message) for error in caught.value.errors]


def test_the_new_formats_are_in_the_one_list_of_import_formats():
    assert {"openai-chat", "hf-messages", "sharegpt"} <= set(FORMATS)


def test_openai_lines_sharing_a_history_become_one_comparison_with_tool_calls_kept():
    records = parse_import(jsonl(openai_line("Paris", "18 °C in Paris."), openai_line("paris", "It is mild.")),
                           "openai-chat")  # fmt: skip
    [record] = records
    assert record.prompt == HISTORY
    assert record.metadata == {"lines": [1, 2], "tools": [WEATHER_TOOL]}
    assert [c["text"] for c in record.completions] == ["18 °C in Paris.", "It is mild."]
    continuation = record.completions[0]["metadata"][CONTINUATION_KEY]
    assert [m["role"] for m in continuation] == ["assistant", "tool", "assistant"]
    # Arguments are stored parsed (a JSON object), the call keeps its id, the result names it.
    assert continuation[0]["tool_calls"] == [
        {"id": "call_Paris", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert continuation[0]["content"] == ""
    assert continuation[1] == {"role": "tool", "content": '{"temp_c": 18}', "tool_call_id": "call_Paris"}
    assert record.ranking is None


def test_same_final_answer_by_different_tool_calls_are_two_options():
    [record] = parse_import(jsonl(openai_line("Paris", "Mild."), openai_line("Lyon", "Mild.")), "openai-chat")
    assert len(record.completions) == 2


def test_a_history_with_one_continuation_refuses_the_whole_file():
    data = jsonl(openai_line("Paris", "A"), openai_line("Paris", "B"), {"messages": [*HISTORY[:2],
                 {"role": "assistant", "content": "alone"}]})  # fmt: skip
    [(line, message)] = errors_of(data, "openai-chat")
    assert line == 3 and "only continuation of its history" in message


@pytest.mark.parametrize(
    ("bad_message", "expected"),
    [
        ({"role": "wizard", "content": "x"}, "messages[1].role is 'wizard'"),
        ({"role": "assistant", "content": None,
          "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}]},
         "arguments is not valid JSON"),  # fmt: skip
        ({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "f",
          "arguments": "[1, 2]"}}]}, "arguments must be a JSON object"),  # fmt: skip
        ({"role": "tool", "content": "42", "tool_call_id": "nobody"}, "answers no earlier tool call"),
        ({"role": "user", "content": "x" * 200_001}, "the limit is 200,000"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "unknown field(s) tool_call_id"),
    ],
)
def test_bad_messages_are_refused_with_their_line(bad_message, expected):
    good = openai_line("Paris", "A")
    bad = {"messages": [HISTORY[1], bad_message, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}]}  # fmt: skip
    errors = errors_of(jsonl(good, openai_line("Paris", "B"), bad), "openai-chat")
    assert errors[0][0] == 3 and expected in errors[0][1], errors


def test_openai_developer_role_reads_as_system():
    rows = [{"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": answer}]} for answer in ("4", "four")]  # fmt: skip
    [record] = parse_import(jsonl(*rows), "openai-chat")
    assert record.prompt[0] == {"role": "system", "content": "Be brief."}


def test_hf_messages_keep_reasoning_apart_from_the_answer():
    rows = [
        {"messages": [{"role": "user", "content": "2+2?"},
                      {"role": "assistant", "reasoning_content": thought, "content": answer}], "model": model}
        for thought, answer, model in (("2 and 2 make 4", "4", "m1"), ("count up", "5", "m2"))
    ]  # fmt: skip
    [record] = parse_import(jsonl(*rows), "hf-messages")
    first = record.completions[0]
    assert first["text"] == "4" and first["model"] == "m1"
    assert first["metadata"][CONTINUATION_KEY] == [{"role": "assistant", "content": "4", "reasoning": "2 and 2 make 4"}]


def test_plain_continuations_store_no_messages():
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": a}]} for a in "ab"]
    [record] = parse_import(jsonl(*rows), "hf-messages")
    assert all(CONTINUATION_KEY not in c["metadata"] for c in record.completions)


def sharegpt_line(city: str, answer: str) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
            {"from": "observation", "value": '{"temp_c": 18}'},
            {"from": "gpt", "value": answer},
        ],
        "system": "Use tools.",
        "tools": json.dumps([WEATHER_TOOL]),
    }


def test_sharegpt_function_calls_and_observations_become_tool_calls_and_results():
    [record] = parse_import(jsonl(sharegpt_line("Paris", "18 °C"), sharegpt_line("Lyon", "I checked Lyon")),
                            "sharegpt")  # fmt: skip
    assert record.prompt == [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"}]
    call, result, answer = record.completions[0]["metadata"][CONTINUATION_KEY]
    assert call["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert answer == {"role": "assistant", "content": "18 °C"}
    assert record.metadata["tools"] == [WEATHER_TOOL]


def test_sharegpt_bad_lines_are_all_reported_by_line_number():
    unknown_speaker = {"conversations": [{"from": "narrator", "value": "x"}]}
    orphan_observation = {"conversations": [{"from": "human", "value": "x"}, {"from": "observation", "value": "1"}]}
    bad_call = sharegpt_line("Paris", "A")
    bad_call["conversations"][1]["value"] = "not json"
    data = jsonl(sharegpt_line("Paris", "A"), unknown_speaker, orphan_observation, bad_call, sharegpt_line("Paris", "B"))
    errors = errors_of(data, "sharegpt")
    assert [line for line, _ in errors] == [2, 3, 4]
    assert "'narrator'" in errors[0][1]
    assert "no function call before it" in errors[1][1]
    assert "not valid JSON" in errors[2][1]


@needs_shared_data
def test_oasst_sibling_replies_are_the_options_of_one_comparison_at_that_turn():
    replies_of: dict[str, list[str]] = {}
    parent_path_of: dict[str, list[str]] = {}
    for line in OASST_FILE.read_bytes().splitlines():
        stack = [(json.loads(line)["prompt"], [])]
        while stack:
            message, path = stack.pop()
            if message.get("deleted"):
                continue
            path = [*path, message["text"]]
            parent_path_of[message["message_id"]] = path
            replies_of[message["message_id"]] = [r["message_id"] for r in message.get("replies") or []
                                                 if not r.get("deleted") and r.get("rank") is not None]  # fmt: skip
            stack.extend((reply, path) for reply in message.get("replies") or [])
    records = parse_import(OASST_FILE.read_bytes(), "oasst")
    assert records
    for record in records:
        siblings = [c["metadata"]["message_id"] for c in record.completions]
        assert siblings == replies_of[record.external_id]  # every ranked reply of that message, and only those
        assert [m["content"] for m in record.prompt] == parent_path_of[record.external_id]  # the history to that turn


# ----------------------------------------------------------------------------------------------------
# Export: the full history and the continuation's tool calls reach a conversational pairs row


def test_conversational_pairs_keep_history_and_tool_calls_through_the_database(db):
    from app.datasets.formats import export_rows
    from app.datasets.service import iter_judged_comparisons, parse_spec, rater_weights
    from app.imports.service import import_records
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name="conversations"), actor=None)
    [record] = parse_import(jsonl(openai_line("Paris", "18 °C in Paris."), openai_line("Lyon", "Mild.")),
                            "openai-chat")  # fmt: skip
    record.ranking = [[0], [1]]  # the Paris continuation is preferred (an imported judgment)
    import_records(db, project, [record])
    db.flush()
    spec = parse_spec({"format": "pairs", "conversational": True, "split": {"test_fraction": 0.0}})
    rows = [row for _, row in export_rows(iter_judged_comparisons(db, project, spec, rater_weights(db, project)),
                                         "pairs", conversational=True)]  # fmt: skip
    [row] = rows
    assert row["prompt"] == HISTORY
    assert [m["role"] for m in row["chosen"]] == ["assistant", "tool", "assistant"]
    assert row["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert row["rejected"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Lyon"}
    assert row["chosen"][-1]["content"] == "18 °C in Paris."
    assert json.loads(row["tools"]) == [WEATHER_TOOL]  # TRL's tools column (a JSON string)


# ----------------------------------------------------------------------------------------------------
# Through the API: the formats are registered where `?format=` reads them, a bad file is refused whole


def hf_line(answer: str) -> dict:
    return {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize(
    ("fmt", "lines"),
    [("openai-chat", [openai_line("Paris", "A"), openai_line("Lyon", "B")]),
     ("hf-messages", [hf_line("hi"), hf_line("hello")]),
     ("sharegpt", [sharegpt_line("Paris", "A"), sharegpt_line("Paris", "B")])],
)  # fmt: skip
def test_each_conversation_format_imports_through_the_api_and_bad_files_are_refused_whole(users, client, db, fmt,
                                                                                          lines):  # fmt: skip
    from sqlalchemy import func, select

    from app.models import Completion, Prompt
    from tests.helpers import import_lines, make_project

    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    refused = import_lines(client, admin, project["id"], jsonl(*lines, {"messages": "nope", "conversations": 3}), fmt)
    assert refused.status_code == 422, refused.text
    assert [error["line"] for error in refused.json()["detail"]["errors"]] == [3]
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Prompt)) == 0  # nothing of the good lines either

    response = import_lines(client, admin, project["id"], jsonl(*lines), fmt)
    assert response.status_code == 200, response.text
    assert (response.json()["prompts_created"], response.json()["completions_created"]) == (1, 2)
    db.rollback()
    prompt = db.scalar(select(Prompt))
    assert prompt.messages == parse_import(jsonl(*lines), fmt)[0].prompt  # every field stored as parsed
    if fmt != "hf-messages":
        stored = db.scalars(select(Completion).order_by(Completion.id)).all()
        assert stored[0].meta[CONTINUATION_KEY][0]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_a_snapshot_of_tool_call_pairs_writes_jsonl_and_parquet_with_the_same_rows(users, client):
    """The fixed Arrow schema describes plain messages only; rows with tool calls still give a snapshot whose Parquet
    holds the JSONL's rows (columns inferred)."""
    import io

    import pyarrow.parquet as pq

    from app.db import session_scope
    from app.imports.service import import_records
    from app.models import Project
    from tests.datasets.test_export_api import _export
    from tests.helpers import make_project

    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    [record] = parse_import(jsonl(openai_line("Paris", "18 °C in Paris."), openai_line("Lyon", "Mild.")),
                            "openai-chat")  # fmt: skip
    record.ranking = [[0], [1]]
    with session_scope(write=True) as session:
        import_records(session, session.get(Project, project["id"]), [record])
    dataset, job = _export(client, admin, project["id"], {"format": "pairs", "split": {"test_fraction": 0.0}})
    assert job["status"] == "succeeded", job
    files = {name: client.get(f"/api/v1/datasets/{dataset['id']}/files/train.{name}", headers=admin["headers"])
             for name in ("jsonl", "parquet")}  # fmt: skip
    [row] = [json.loads(line) for line in files["jsonl"].text.splitlines()]
    assert row["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    [parquet_row] = pq.read_table(io.BytesIO(files["parquet"].content)).to_pylist()
    assert parquet_row["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert parquet_row["prompt"][1]["content"] == row["prompt"][1]["content"] == "Hi"
    assert parquet_row["tools"] == row["tools"]


@pytest.mark.parametrize("export_format", ["kto", "sft", "ratings"])
def test_kto_sft_and_ratings_rows_carry_the_continuation_whole(export_format):
    from app.datasets.formats import JudgedComparison, JudgmentVote, export_rows

    [record] = parse_import(jsonl(openai_line("Paris", "18 °C in Paris."), openai_line("Lyon", "Mild.")), "openai-chat")
    continuations = {i: c["metadata"][CONTINUATION_KEY] for i, c in enumerate(record.completions)}
    comparison = JudgedComparison(
        comparison_id=1, prompt_id=1, prompt=record.prompt,
        completions={i: (c["text"], None) for i, c in enumerate(record.completions)}, continuations=continuations,
        judgments=[JudgmentVote(rater_id=1, ranking=[[0], [1]], attributes={"helpful": {"0": 5.0, "1": 2.0}})],
        scales=[{"name": "helpful", "min": 1, "max": 7}],
    )  # fmt: skip
    rows = [row for _, row in export_rows([comparison], export_format, conversational=True, test_fraction=0.0)]
    assert rows
    for row in rows:
        assert row["completion"] == continuations[row["completion_id"]]
        assert row["prompt"] == HISTORY


# ----------------------------------------------------------------------------------------------------
# swe-agent: SWE-agent .traj trajectories, one a line; lines with the same task compare whole trajectories


def swe_traj(actions: list[str], exit_status: str = "submitted", **extra) -> dict:
    """A .traj file as SWE-agent writes it (trimmed): the history's system and instance messages, the steps, info."""
    return {
        "environment": "swe_main",
        "history": [
            {"role": "system", "content": "SETTING: you are an autonomous programmer.", "agent": "primary"},
            {"role": "user", "content": "ISSUE: fields.TimeDelta rounds 345 ms down to 344.", "agent": "primary"},
            {"role": "assistant", "content": "Let me look.", "agent": "primary"},
        ],
        "trajectory": [{"response": f"thinking {i}\n```\n{a}\n```", "thought": f"thinking {i}", "action": a,
                        "observation": f"output of {a}", "state": "{}"} for i, a in enumerate(actions)],  # fmt: skip
        "info": {"exit_status": exit_status, "submission": "diff --git a/f.py b/f.py\n+fixed\n"},
        "replay_config": json.dumps({"agent": {"model": {"name": "gpt-4o"}}}),
        **extra,
    }


def test_swe_agent_trajectories_become_conversations_whose_assistant_turns_are_steps():
    data = jsonl(swe_traj(["ls -F", "open src/fields.py 1474", "submit"]),
                 swe_traj(["find_file fields.py", "submit"], exit_status="exit_cost"))  # fmt: skip
    [record] = parse_import(data, "swe-agent")
    assert [m["role"] for m in record.prompt] == ["system", "user"]
    assert record.prompt[1]["content"].startswith("ISSUE: fields.TimeDelta")
    first, second = (c["metadata"][CONTINUATION_KEY] for c in record.completions)
    assert [m["role"] for m in first] == ["assistant", "tool"] * 3 + ["assistant"]
    step = first[2]
    assert step["reasoning"] == "thinking 1"
    assert step["tool_calls"][0]["function"] == {"name": "open", "arguments": {"command": "open src/fields.py 1474"}}
    assert first[3] == {"role": "tool", "content": "output of open src/fields.py 1474", "tool_call_id": "step_1"}
    assert record.completions[0]["text"].startswith("Exit status: submitted")
    assert "```diff" in record.completions[0]["text"]
    assert record.completions[1]["metadata"]["exit_status"] == "exit_cost"
    assert record.completions[0]["model"] == "gpt-4o"
    assert record.completions[0]["metadata"]["steps"] == 3
    assert "history" not in record.completions[0]["metadata"]  # the raw file is not copied into metadata


def test_swe_agent_problem_statement_wins_and_bad_lines_refuse_the_file_with_their_numbers():
    good = jsonl(swe_traj(["ls"], problem_statement={"text": "Fix the bug."}),
                 swe_traj(["pwd"], problem_statement="Fix the bug."))  # fmt: skip
    [record] = parse_import(good, "swe-agent")
    assert record.prompt[-1] == {"role": "user", "content": "Fix the bug."}
    bad = jsonl(swe_traj(["ls"]), swe_traj(["pwd"]), {"history": []}, swe_traj([]),
                swe_traj(["ls"], history=[{"role": "system", "content": "s"}]),
                {"trajectory": [{"thought": "no action"}], "problem_statement": "x"})  # fmt: skip
    errors = errors_of(bad, "swe-agent")
    assert [line for line, _ in errors] == [3, 4, 5, 6]
    assert "missing field 'trajectory'" in errors[0][1]
    assert "no steps" in errors[1][1]
    assert "no task" in errors[2][1]
    assert "action" in errors[3][1]


def test_a_trajectory_is_rendered_as_steps_by_the_conversation_partial():
    from app.conversation_view import message_views
    from app.web import templates

    [record] = parse_import(jsonl(swe_traj(["ls -F", "submit"]), swe_traj(["pwd"])), "swe-agent")
    views = message_views(record.completions[0]["metadata"][CONTINUATION_KEY], "option-1")
    html = templates.env.from_string(
        '{% from "_conversation.html" import continuation %}{{ continuation(views, "/full/", as_steps=True) }}'
    ).render(views=views)
    assert html.count('class="step"') == 3  # two actions with their observations, then the outcome
    assert "<code class=\"tool-name\">ls</code>" in html and "&#34;command&#34;: &#34;ls -F&#34;" in html
    assert 'hx-get="/full/option-1-' not in html  # short texts are not clipped
