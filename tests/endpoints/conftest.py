"""Endpoint fixtures, built once per session: a real `transformers serve` on a tiny local checkpoint (offline, a
free port), and a small in-test ASGI server that only injects faults (429 with Retry-After, 500s, stalls past the
timeout, malformed JSON, a missing `usage`) or answers a judge's question by a fixed rule.

The fault server decides by markers in the last user message: [429] (the first request gets 429 + Retry-After: 1),
[500] (always 500), [500once] (the first request gets 500), [stall] (sleeps past any test timeout), [badjson]
(a 200 whose body is not JSON), [nousage] (an answer without usage), [slow] (answers after 0.2 s). A judge question (the default template) is
answered by the rule "the response holding 'please' wins", as JSON when response_format asks for it, with
log-probabilities when asked for them, and unparseably when the prompt holds [mumble]; a rubric question on the
attribute "Brevity" by "the shorter response wins", on "Mumble" unparseably. [nologprobs]: no log-probabilities
even when asked; [coin]: every third answer to the same question goes the other way.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.conftest import free_port

FAULT_MODEL = "faulty-model"
SECRET = "sk-test-NEVER-SHOWN-4f1c9a7e2b"
"""An API key no response, page, export or log line may ever contain."""


@dataclass
class Served:
    url: str
    model: str
    path: Path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from trainer.tiny import build_tiny_policy, default_texts, train_tokenizer

    root = tmp_path_factory.mktemp("served")
    return build_tiny_policy(root / "policy", train_tokenizer(default_texts(200), vocab_size=400), seed=0)


@pytest.fixture(scope="session")
def served(tiny_checkpoint, tmp_path_factory):
    """`transformers serve` on the tiny checkpoint (the same command `rankforge models serve` runs)."""
    from app.errors import EndpointError
    from app.registry.local_serving import start_server, wait_until_serving

    port = free_port()
    log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    process = start_server(str(tiny_checkpoint), port=port, device="cpu", log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, str(tiny_checkpoint), process, timeout=240)
    except EndpointError as error:
        process.kill()
        pytest.fail(f"transformers serve did not start: {error}\n{log_path.read_text()[-3000:]}")
    yield Served(url=url, model=str(tiny_checkpoint), path=tiny_checkpoint)
    process.terminate()
    try:
        process.wait(15)
    except Exception:  # noqa: BLE001 - a server that ignores SIGTERM is killed
        process.kill()
    log.close()


@dataclass
class FaultServer:
    url: str
    model: str = FAULT_MODEL
    requests: list[dict] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    stall_seconds: float = 5.0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.seen.clear()
            self.most_in_flight = 0

    def asked(self, marker: str = "") -> list[dict]:
        with self.lock:
            return [r for r in self.requests if marker in r["content"]]


def _last_user(body: dict) -> str:
    messages = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(messages[-1].get("content", "")) if messages else ""


def _judge_answer(content: str) -> str:
    a = content.split("Response A:", 1)[1].split("Response B:", 1)[0].strip()
    b = content.split("Response B:", 1)[1].split("\n\n", 1)[0].strip()
    if "Attribute: Brevity" in content:  # rubric judging: on brevity the shorter response wins
        return "A" if len(a) < len(b) else "B"
    return "A" if "please" in a else "B"


def fault_app(state: FaultServer) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models(request: Request):
        state.requests.append({"path": "models", "content": "", "auth": request.headers.get("authorization"),
                               "at": time.monotonic()})  # fmt: skip
        return {"object": "list", "data": [{"id": state.model, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        with state.lock:
            state.in_flight += 1
            state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            return await answer(request)
        finally:
            with state.lock:
                state.in_flight -= 1

    async def answer(request: Request):
        body = await request.json()
        content = _last_user(body)
        with state.lock:
            count = state.seen.get(content, 0)
            state.seen[content] = count + 1
            state.requests.append({"path": "chat", "content": content, "at": time.monotonic(), "body": body,
                                   "auth": request.headers.get("authorization")})  # fmt: skip
        if "[429]" in content and count == 0:
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "1"})
        if "[500]" in content or ("[500once]" in content and count == 0):
            return JSONResponse({"error": "boom"}, status_code=500)
        if "[stall]" in content:
            await asyncio.sleep(state.stall_seconds)
        if "[slow]" in content:
            await asyncio.sleep(0.2)
        if "[badjson]" in content:
            return PlainTextResponse('{"choices": [ not json', media_type="application/json")
        usage = None if "[nousage]" in content else {"prompt_tokens": len(content.split()), "completion_tokens": 3,
                                                     "total_tokens": len(content.split()) + 3}  # fmt: skip
        logprobs = None
        if "Which response is better" in content:
            mumble = "[mumble]" in content or "Attribute: Mumble" in content
            label = "mumble mumble" if mumble else _judge_answer(content)
            if "[coin]" in content and count % 3 == 2 and label in ("A", "B"):  # every third answer the other way
                label = "B" if label == "A" else "A"
            if body.get("logprobs") and label in ("A", "B") and "[nologprobs]" not in content:
                other = "B" if label == "A" else "A"
                logprobs = {"content": [{"token": label, "logprob": -0.105, "top_logprobs": [
                    {"token": label, "logprob": -0.105}, {"token": other, "logprob": -2.303}]}]}  # fmt: skip
            text = json.dumps({"verdict": label}) if body.get("response_format") and label in ("A", "B") else label
        else:
            text = f"echo {content[:40]}"
        if body.get("stream"):
            async def chunks():
                for word in text.split(" "):
                    yield "data: " + json.dumps({"choices": [{"delta": {"content": word + " "}, "index": 0}]}) + "\n\n"
                    await asyncio.sleep(0.01)
                yield "data: " + json.dumps({"choices": [{"delta": {}, "index": 0, "finish_reason": "stop"}],
                                             "usage": usage}) + "\n\n"  # fmt: skip
                yield "data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if logprobs:
            choice["logprobs"] = logprobs
        answer = {"id": "x", "object": "chat.completion", "model": state.model, "choices": [choice]}
        if usage:
            answer["usage"] = usage
        return answer

    return app


@pytest.fixture(scope="session")
def fault_server():
    port = free_port()
    state = FaultServer(url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(fault_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield state
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def fast_retries(monkeypatch):
    """Retries that keep a test short: three attempts, 50 ms first backoff."""
    from app.config import get_settings

    monkeypatch.setenv("RANKFORGE_ENDPOINTS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RANKFORGE_ENDPOINTS_RETRY_BASE_SECONDS", "0.05")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
