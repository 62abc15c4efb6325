"""The endpoint client's bounds, against the fault server: at most max_concurrency requests in flight, request
starts spaced by requests_per_minute; Retry-After read as seconds or as an HTTP date."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from app.registry.endpoint_client import EndpointClient, EndpointConfig, retry_after_seconds


def config(server, **limits) -> EndpointConfig:
    return EndpointConfig(name="faulty", base_url=server.url, model=server.model, timeout_seconds=10, **limits)


def test_at_most_max_concurrency_requests_in_flight(fault_server):
    fault_server.reset()
    with EndpointClient(config(fault_server, max_concurrency=2)) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.chat([{"role": "user", "content": f"bound [slow] {i}"}]), range(8)))
    assert len(answers) == 8 and all(a.text.startswith("echo") for a in answers)
    assert fault_server.most_in_flight == 2


def test_requests_per_minute_space_the_starts(fault_server):
    fault_server.reset()
    with EndpointClient(config(fault_server, max_concurrency=4, requests_per_minute=300)) as client, \
            ThreadPoolExecutor(4) as pool:  # fmt: skip
        list(pool.map(lambda i: client.chat([{"role": "user", "content": f"paced {i}"}]), range(5)))
    starts = sorted(r["at"] for r in fault_server.asked("paced"))
    assert len(starts) == 5 and starts[-1] - starts[0] >= 4 * 0.2 * 0.95  # 300 a minute: one each 0.2 s


def test_retry_after_as_seconds_or_a_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("100000") == 300.0  # capped
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
