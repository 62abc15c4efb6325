"""Talking to an OpenAI-compatible endpoint over plain HTTP (httpx): no torch, so the worker process itself and the
web process may call it.

    EndpointClient(config).chat(messages, params) -> Answer          one answer, retried as below
    EndpointClient(config).stream_chat(messages, params) -> chunks  an answer as it is written (server-sent events)
    astream_chat(config, messages, params) -> async chunks          the same from asyncio, one attempt (live battles)

Every request is bounded three ways: at most `max_concurrency` in flight per client, at most
`requests_per_minute` started per minute, and `timeout_seconds` each. A 429 waits what its `Retry-After` says
(else the backoff); a 5xx, a timeout, a dropped connection or an answer that is not the JSON it should be is
retried with exponential backoff and full jitter, up to RANKFORGE_ENDPOINTS_MAX_ATTEMPTS attempts. Any other 4xx
fails at once (asking again would get the same answer). A failure carries its reason, never the request's headers:
the API key appears in no message, log line or error.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from app.config import get_settings

MAX_RETRY_AFTER_SECONDS = 300.0
"""A Retry-After longer than this is capped (a server asking for an hour is treated as asking for five minutes)."""
REASON_CHARS = 300


@dataclass(frozen=True)
class EndpointConfig:
    """Everything needed to call one endpoint, read from its row once (threads never touch the ORM)."""

    name: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    sampling: dict = field(default_factory=dict)
    max_concurrency: int = 4
    requests_per_minute: int | None = None
    timeout_seconds: float = 60.0
    price_input: float | None = None
    price_output: float | None = None
    json_output: bool = False

    def url(self, path: str) -> str:
        return f"{self.base_url}/v1/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def cost(self, usage: dict | None) -> float | None:
        """The price of one answer's usage, when the endpoint has prices (per million tokens)."""
        if not usage or (self.price_input is None and self.price_output is None):
            return None
        return ((usage.get("prompt_tokens") or 0) * (self.price_input or 0.0)
                + (usage.get("completion_tokens") or 0) * (self.price_output or 0.0)) / 1e6  # fmt: skip


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    usage: dict | None
    """The server's token counts ({prompt_tokens, completion_tokens}); None when it sent none."""
    logprobs: list | None
    """choices[0].logprobs.content: per token {token, logprob, top_logprobs}, when the server gave them."""
    attempts: int = 1
    tool_calls: list | None = None
    """choices[0].message.tool_calls as the server sent them (OpenAI's shape: arguments a JSON string), if any."""
    reasoning: str | None = None
    """choices[0].message.reasoning_content (vLLM, SGLang) or .reasoning, when the server keeps thinking apart."""


class EndpointFailure(Exception):
    """A request that failed for good (after its retries, or at once for a 4xx); `reason` says why."""

    def __init__(self, reason: str, *, status: int | None = None, attempts: int = 1):
        self.reason, self.status, self.attempts = reason, status, attempts
        super().__init__(reason)


class _Retry(Exception):
    def __init__(self, reason: str, *, status: int | None = None, wait: float | None = None):
        self.reason, self.status, self.wait = reason, status, wait
        super().__init__(reason)


class Cancelled(Exception):
    """The caller's cancel event was set while a request waited."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


class _RateLimiter:
    """At most `per_minute` request starts per minute, evenly spaced, shared by every thread of a client."""

    def __init__(self, per_minute: int | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def delay(self) -> float:
        """Reserve the next start; how long the caller must wait for it."""
        if not self.interval:
            return 0.0
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
            return start - now


class EndpointClient:
    """One endpoint's HTTP client, safe to share between threads. Use as a context manager (or close())."""

    def __init__(self, config: EndpointConfig, *, cancel: threading.Event | None = None):
        settings = get_settings()
        self.config = config
        self.cancel = cancel or threading.Event()
        self.max_attempts = max(1, settings.endpoints_max_attempts)
        self.retry_base = max(0.0, settings.endpoints_retry_base_seconds)
        self.slots = threading.BoundedSemaphore(max(1, config.max_concurrency))
        self.limiter = _RateLimiter(config.requests_per_minute)
        limits = httpx.Limits(max_connections=max(1, config.max_concurrency) + 2)
        self.http = httpx.Client(timeout=httpx.Timeout(config.timeout_seconds), limits=limits, headers=config.headers(),
                                 follow_redirects=False)  # fmt: skip

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- waiting ----------------------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.cancel.wait(seconds):
            raise Cancelled()
        if self.cancel.is_set():
            raise Cancelled()

    def _attempts(self) -> Iterator[int]:
        """Attempt numbers 1, 2, ... without end, each after the rate limiter's delay (the caller stops)."""
        attempt = 0
        while True:
            attempt += 1
            self._sleep(self.limiter.delay())
            yield attempt

    def _give_up_or_wait(self, retry: _Retry, attempt: int) -> None:
        """After a retryable failure: EndpointFailure on the last attempt, else wait as the server or the
        backoff says."""
        if attempt >= self.max_attempts:
            raise EndpointFailure(f"{retry.reason} (gave up after {attempt} attempts)", status=retry.status,
                                  attempts=attempt) from None  # fmt: skip
        self._sleep(retry.wait if retry.wait is not None else self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, base * 2^(attempt-1)], at least a tenth of the base."""
        ceiling = self.retry_base * (2 ** (attempt - 1))
        return max(self.retry_base / 10, random.uniform(0, ceiling))

    # --- one request with its retries -------------------------------------------------------------------------

    def body(self, messages: list[dict], params: dict | None, *, stream: bool = False) -> dict:
        body = {"model": self.config.model, "messages": messages} | dict(self.config.sampling) | dict(params or {})
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def chat(self, messages: list[dict], params: dict | None = None) -> Answer:
        """One chat completion (POST /v1/chat/completions), retried as the module says."""
        body = self.body(messages, params)
        for attempt in self._attempts():
            try:
                with self.slots:
                    answer = self._chat_once(body)
                answer.attempts = attempt
                return answer
            except _Retry as retry:
                self._give_up_or_wait(retry, attempt)
            except EndpointFailure as failure:
                failure.attempts = attempt
                raise

    def _chat_once(self, body: dict) -> Answer:
        try:
            response = self.http.post(self.config.url("chat/completions"), json=body)
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {self.config.timeout_seconds:g} s (timeout)") from None
        except httpx.TransportError as error:
            raise _Retry(f"connection failed: {_short(type(error).__name__ + ' ' + str(error))}") from None
        self._check_status(response)
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError("content is not text")
            tool_calls = message.get("tool_calls") or None
            if tool_calls is not None and not isinstance(tool_calls, list):
                raise TypeError("tool_calls is not a list")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise _Retry(f"malformed answer ({type(error).__name__}): {_short(response.text)}") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else None
        reasoning = next((message[k] for k in ("reasoning_content", "reasoning") if isinstance(message.get(k), str)
                          and message[k]), None)  # fmt: skip
        return Answer(text=text, finish_reason=choice.get("finish_reason"), usage=_usage(usage),
                      logprobs=(logprobs or {}).get("content"), tool_calls=tool_calls, reasoning=reasoning)  # fmt: skip

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            raise _Retry("rate limited (HTTP 429)", status=429,
                         wait=retry_after_seconds(response.headers.get("retry-after")))  # fmt: skip
        if status >= 500 or status == 408:
            raise _Retry(f"HTTP {status}: {_short(response.text)}", status=status,
                         wait=retry_after_seconds(response.headers.get("retry-after")) if status == 503 else None)  # fmt: skip
        if status >= 400:
            raise EndpointFailure(f"HTTP {status}: {_short(response.text)}", status=status)

    # --- streaming --------------------------------------------------------------------------------------------

    def stream_chat(self, messages: list[dict], params: dict | None = None) -> Iterator[dict]:
        """An answer as the server writes it: {"delta": text} events, then one {"done": True, "finish_reason",
        "usage"}. Connecting is retried like chat(); once text has arrived a failure is final (EndpointFailure):
        a half-shown answer cannot be taken back."""
        body = self.body(messages, params, stream=True)
        for attempt in self._attempts():
            try:
                with self.slots:
                    yield from self._stream_once(body)
                return
            except _Retry as retry:
                self._give_up_or_wait(retry, attempt)

    def _stream_once(self, body: dict) -> Iterator[dict]:
        reader = StreamReader()
        try:
            with self.http.stream("POST", self.config.url("chat/completions"), json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check_status(response)
                for line in response.iter_lines():
                    for text in reader.read(line):
                        yield {"delta": text}
                    if reader.ended:
                        break
        except httpx.TimeoutException:
            if reader.started:
                raise EndpointFailure(f"the answer stalled (no text within {self.config.timeout_seconds:g} s)") from None
            raise _Retry(f"no answer within {self.config.timeout_seconds:g} s (timeout)") from None
        except httpx.TransportError as error:
            reason = f"connection failed: {_short(type(error).__name__ + ' ' + str(error))}"
            if reader.started:
                raise EndpointFailure(reason) from None
            raise _Retry(reason) from None
        yield reader.done()


class StreamReader:
    """Reads the lines of an OpenAI chat stream (server-sent events): the text pieces as they come, then the finish
    reason and usage. Shared by the blocking client and `astream_chat`."""

    def __init__(self):
        self.started = False
        self.ended = False
        self.finish_reason: str | None = None
        self.usage: dict | None = None

    def read(self, line: str) -> list[str]:
        """The text pieces of one line (none for comments, keep-alives and the final [DONE], which sets `ended`)."""
        if not line.startswith("data:"):
            return []
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.ended = True
            return []
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise EndpointFailure(f"malformed stream chunk: {_short(payload)}") from None
        if not isinstance(chunk, dict):
            raise EndpointFailure(f"malformed stream chunk: {_short(payload)}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        pieces = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            text = (choice.get("delta") or {}).get("content") if isinstance(choice.get("delta"), dict) else None
            if isinstance(text, str) and text:
                self.started = True
                pieces.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return pieces

    def done(self) -> dict:
        return {"done": True, "finish_reason": self.finish_reason, "usage": self.usage}


async def astream_chat(config: EndpointConfig, messages: list[dict], params: dict | None = None) -> AsyncIterator[dict]:
    """`stream_chat`'s events from an asyncio caller (the web process's live battles): one attempt, no retries (a
    person is waiting; a battle side that fails is void), every failure an EndpointFailure with its reason. Each
    read waits at most the endpoint's timeout; the caller bounds the whole answer."""
    body = {"model": config.model, "messages": messages} | dict(config.sampling) | dict(params or {})
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    reader = StreamReader()
    try:
        async with (httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_seconds), headers=config.headers(),
                                      follow_redirects=False) as http,
                    http.stream("POST", config.url("chat/completions"), json=body) as response):  # fmt: skip
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                raise EndpointFailure(f"HTTP {response.status_code}: {_short(text)}", status=response.status_code)
            async for line in response.aiter_lines():
                for text in reader.read(line):
                    yield {"delta": text}
                if reader.ended:
                    break
    except httpx.TimeoutException:
        raise EndpointFailure(f"no text within {config.timeout_seconds:g} s (timeout)") from None
    except httpx.TransportError as error:
        raise EndpointFailure(f"connection failed: {_short(type(error).__name__ + ' ' + str(error))}") from None
    yield reader.done()


def _usage(usage: dict | None) -> dict | None:
    if not usage:
        return None
    out = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens") if isinstance(usage.get(k), int)}
    return out or None


def list_models(config: EndpointConfig, *, timeout: float | None = None) -> list[str]:
    """The model names GET /v1/models lists (no retries: this is the check a person waits for)."""
    try:
        response = httpx.get(config.url("models"), headers=config.headers(), follow_redirects=False,
                             timeout=timeout or min(config.timeout_seconds, 15.0))  # fmt: skip
    except httpx.TimeoutException:
        raise EndpointFailure(f"{config.base_url} did not answer GET /v1/models in time") from None
    except httpx.TransportError as error:
        raise EndpointFailure(f"{config.base_url} is unreachable ({_short(type(error).__name__ + ' ' + str(error))})") from None
    if response.status_code in (401, 403):
        raise EndpointFailure(f"{config.base_url} refused the API key (HTTP {response.status_code} on GET /v1/models)",
                              status=response.status_code)  # fmt: skip
    if response.status_code != 200:
        raise EndpointFailure(f"GET {config.base_url}/v1/models answered HTTP {response.status_code}",
                              status=response.status_code)  # fmt: skip
    try:
        return [str(m["id"]) for m in response.json()["data"] if isinstance(m, dict) and "id" in m]
    except (ValueError, KeyError, TypeError):
        raise EndpointFailure(f"GET {config.base_url}/v1/models did not answer an OpenAI-style model list") from None
