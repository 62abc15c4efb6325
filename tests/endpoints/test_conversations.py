"""Rounds and judges on conversations (issue 24, point 5), against the fault server: an endpoint generate job
continues a conversation (its whole history, tool calls and results included, sent as OpenAI messages), and an
endpoint judge's question holds the history and each response's tool calls."""

from __future__ import annotations

import json

import pytest

from app.worker import run_one
from tests.endpoints.test_generate import add_endpoint, generate, job_of
from tests.endpoints.test_judge import add_judge
from tests.helpers import import_lines, make_project
from tests.imports.test_conversations import HISTORY

CALL = {"id": "call_paris", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}  # fmt: skip
CONVERSATION = [
    *HISTORY,
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_paris", "content": '{"temp_c": 18}'},
    {"role": "assistant", "content": "It is 18 °C in Paris."},
    {"role": "user", "content": "And tomorrow? [conv]"},
]
CONTINUATIONS = [
    [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_tomorrow", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "day": "tomorrow"})}}]},
     {"role": "tool", "tool_call_id": "call_tomorrow", "content": '{"temp_c": 21}'},
     {"role": "assistant", "content": "please expect 21 °C tomorrow."}],
    [{"role": "assistant", "content": "No idea."}],
]  # fmt: skip


@pytest.fixture
def world(users, client):
    staff = {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer")}
    project = make_project(client, staff["admin"], name="Conversations")
    lines = "".join(json.dumps({"messages": CONVERSATION + c}) + "\n" for c in CONTINUATIONS).encode()
    response = import_lines(client, staff["admin"], project["id"], lines, fmt="openai-chat")
    assert response.status_code == 200, response.text
    return staff | {"pid": project["id"]}


def test_endpoint_generation_continues_the_conversation_with_its_tool_calls(client, world, fault_server):
    add_endpoint(client, world["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model)
    fault_server.reset()
    job_id = generate(client, world["engineer"], world["pid"], "faulty", num_completions=1)
    assert run_one("w1") == job_id
    assert job_of(client, world["engineer"], job_id)["status"] == "succeeded"
    [asked] = fault_server.asked("[conv]")
    sent = asked["body"]["messages"]
    assert [m["role"] for m in sent] == [m["role"] for m in CONVERSATION]  # the whole history, in order
    call_turn, result = sent[4], sent[5]
    assert call_turn["content"] is None
    assert call_turn["tool_calls"] == [{"id": "call_paris", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]  # OpenAI's shape: arguments as a JSON string
    assert result == {"role": "tool", "content": '{"temp_c": 18}', "tool_call_id": "call_paris"}
    assert sent[-1] == {"role": "user", "content": "And tomorrow? [conv]"}


def test_an_endpoint_judge_sees_the_history_and_the_responses_tool_calls(client, world, fault_server):
    add_endpoint(client, world["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model)
    judge = add_judge(client, world, world["pid"], "conv-judge", "faulty")
    fault_server.reset()
    response = client.post("/api/v1/jobs", json={"kind": "judge", "project_id": world["pid"],
                                                 "params": {"judge": judge, "scope": "open"}},
                           headers=world["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    assert run_one("w1") == response.json()["id"]
    job = job_of(client, world["engineer"], response.json()["id"])
    assert job["status"] == "succeeded", job
    questions = [r["content"] for r in fault_server.asked("Which response is better")]
    assert len(questions) == 2  # both orders
    question = questions[0]
    assert "user: Hi" in question and "assistant: Hello! How can I help?" in question  # the earlier turns
    assert 'assistant: (calls get_weather {"city": "Paris"})' in question  # the history's tool call
    assert 'tool (get_weather): {"temp_c": 18}' in question  # and its result
    assert "user: And tomorrow? [conv]" in question
    assert '(calls get_weather {"city": "Paris", "day": "tomorrow"})' in question  # a response's own tool call
    assert "tool (get_weather): {\"temp_c\": 21}" in question
    # The fault server's rule ("please" wins) read the whole continuation: the tool-calling response won.
    assert job["result"]["stored"] == 1
