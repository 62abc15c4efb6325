"""Endpoint generation on a conversation with tools (issue 24, point 5): the request sends the whole history with its
tool calls and results and the prompt's `tools`, and an answer that calls a tool is stored as the conversation data
model keeps it (the completion's metadata.messages: one assistant message whose tool call's arguments are parsed).

`transformers serve` on a tiny checkpoint does not call tools, so the server here is a small real HTTP server of the
test's own (the standard library's http.server in a thread) that records each request and answers by the last user
message: "[tool]" a tool call (its arguments differ per request), "[badargs]" a tool call whose arguments are not
JSON, "[think]" a plain answer with reasoning_content, else a plain text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from app.worker import run_one
from tests.endpoints.test_generate import add_endpoint, generate, job_of
from tests.helpers import import_lines, make_project

MODEL = "tool-model"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city on a day.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "day": {"type": "string"}},
                                               "required": ["city"]}}}]  # fmt: skip
CALL = {"id": "call_paris", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}  # fmt: skip


def conversation(question: str) -> list[dict]:
    """A chat whose history holds a tool call and its result, then a new user question."""
    return [{"role": "system", "content": "You plan trips."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_paris", "content": '{"temp_c": 18}'},
            {"role": "assistant", "content": "It is 18 °C in Paris."},
            {"role": "user", "content": question}]  # fmt: skip


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.bodies: list[dict] = []
        self.url = ""

    def answer(self, body: dict) -> dict:
        last = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
        with self.lock:
            self.bodies.append(body)
            count = sum(1 for b in self.bodies if b["messages"][-1]["content"] == last)
        message: dict = {"role": "assistant", "content": f"plain answer {count}"}
        finish = "stop"
        if "[tool]" in last or "[badargs]" in last:
            arguments = "{not json" if "[badargs]" in last else json.dumps({"city": "Paris", "day": f"day {count}"})
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{count}", "type": "function", "function": {"name": "get_weather",
                                                                          "arguments": arguments}}]}  # fmt: skip
            finish = "tool_calls"
        elif "[think]" in last:
            message["reasoning_content"] = f"thinking {count}"
        return {"id": f"r{count}", "object": "chat.completion", "model": MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}  # fmt: skip


@pytest.fixture
def tool_server():
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, data: dict) -> None:
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):  # noqa: N802 - http.server's name
            self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(recorder.answer(body))

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield recorder
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def world(users, client, tool_server):
    staff = {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer")}
    project = make_project(client, staff["admin"], name="Tools")
    answers = ([{"role": "assistant", "content": "Sunny."}], [{"role": "assistant", "content": "Rainy."}])
    lines = [json.dumps({"messages": conversation(q) + a, "tools": TOOLS})
             for q in ("And tomorrow? [tool]", "And Sunday? [badargs]") for a in answers]
    lines += [json.dumps({"messages": conversation("Why? [think]") + a}) for a in answers]  # no tools offered
    response = import_lines(client, staff["admin"], project["id"], "\n".join(lines).encode(), fmt="openai-chat")
    assert response.status_code == 200, response.text
    add_endpoint(client, staff["engineer"], name="tools", base_url=tool_server.url, model=MODEL)
    return staff | {"pid": project["id"]}


def test_a_conversation_with_tools_is_sent_whole_and_a_tool_call_comes_back_stored(client, world, tool_server, db):
    from app.conversation_view import continuation_of, message_views
    from app.judgments.identical import IDENTICAL
    from app.models import Comparison, Completion, Prompt

    job_id = generate(client, world["engineer"], world["pid"], "tools", num_completions=2, max_new_tokens=32)
    assert run_one("w1") == job_id
    job = job_of(client, world["engineer"], job_id)
    assert job["status"] == "succeeded", job

    # the request: the whole history with its tool call (arguments a JSON string) and result, and the tools
    asked = {b["messages"][-1]["content"]: b for b in tool_server.bodies}
    tool_body = asked["And tomorrow? [tool]"]
    sent = tool_body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert sent[3] == {"role": "tool", "content": '{"temp_c": 18}', "tool_call_id": "call_paris"}
    assert tool_body["tools"] == TOOLS and tool_body["model"] == MODEL and tool_body["max_tokens"] == 32
    assert "tools" not in asked["Why? [think]"]  # a prompt that offers no tools sends none

    # the answers: each tool call stored as a continuation of one assistant message, its arguments parsed
    db.rollback()
    prompts = {p.messages[-1]["content"]: p.id for p in db.scalars(select(Prompt).where(Prompt.project_id == world["pid"]))}
    new = list(db.scalars(select(Completion).where(Completion.id.in_(job["result"]["completion_ids"]))))
    called = [c for c in new if c.prompt_id == prompts["And tomorrow? [tool]"]]
    assert len(called) == 2
    for completion in called:
        assert completion.text == "" and completion.meta["finish_reason"] == "tool_calls"
        [message] = completion.meta["messages"]
        assert message["role"] == "assistant" and message["content"] == ""
        [call] = message["tool_calls"]
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert call["function"]["name"] == "get_weather" and call["function"]["arguments"]["city"] == "Paris"
        views = message_views(continuation_of(completion.text, completion.meta), "o")  # what the rating page shows
        assert views[0]["tool_calls"][0]["name"] == "get_weather" and views[0]["empty"]
    assert {c.meta["messages"][0]["tool_calls"][0]["function"]["arguments"]["day"] for c in called} == {"day 1", "day 2"}
    # two different tool calls with no text are two answers, not one: their comparison is served
    [comparison] = db.scalars(select(Comparison).where(Comparison.id.in_(job["result"]["comparison_ids"]),
                                                       Comparison.prompt_id == prompts["And tomorrow? [tool]"]))  # fmt: skip
    assert IDENTICAL not in (comparison.meta or {}) and comparison.required > 0

    # reasoning kept apart from the answer; a plain answer stays plain text
    thought = [c for c in new if c.prompt_id == prompts["Why? [think]"]]
    assert {c.text for c in thought} == {"plain answer 1", "plain answer 2"}
    assert all(c.meta["messages"][0]["reasoning"].startswith("thinking") for c in thought)

    # a tool call whose arguments are not JSON is that prompt's failure, with its reason; nothing half-stored
    [failed] = job["result"]["failed_prompts"]
    assert failed["prompt_id"] == prompts["And Sunday? [badargs]"] and failed["answered"] == 0
    assert "arguments is not valid JSON" in failed["reason"]
    assert not [c for c in new if c.prompt_id == prompts["And Sunday? [badargs]"]]
