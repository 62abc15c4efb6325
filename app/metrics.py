"""Prometheus text exposition without a client library: request counts and latency histograms
kept in this process, plus gauges read from the database at scrape time."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_requests: dict[tuple[str, str, int], int] = defaultdict(int)
_latency_buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
_latency_sum: dict[tuple[str, str], float] = defaultdict(float)
_counters: dict[str, int] = defaultdict(int)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    with _lock:
        _requests[(method, route, status)] += 1
        buckets = _latency_buckets[(method, route)]
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        buckets[-1] += 1
        _latency_sum[(method, route)] += seconds


def inc(name: str, amount: int = 1) -> None:
    with _lock:
        _counters[name] += amount


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(gauges: dict[str, tuple[str, float]]) -> str:
    lines = [
        "# HELP rankforge_http_requests_total HTTP requests handled by this process.",
        "# TYPE rankforge_http_requests_total counter",
    ]
    with _lock:
        for (method, route, status), n in sorted(_requests.items()):
            lines.append(
                f'rankforge_http_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP rankforge_http_request_duration_seconds HTTP request latency.",
            "# TYPE rankforge_http_request_duration_seconds histogram",
        ]
        for (method, route), buckets in sorted(_latency_buckets.items()):
            labels = f'method="{method}",route="{_escape(route)}"'
            for bound, n in zip(BUCKETS, buckets, strict=False):
                lines.append(f'rankforge_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
            lines.append(f'rankforge_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {buckets[-1]}')
            lines.append(f"rankforge_http_request_duration_seconds_sum{{{labels}}} {_latency_sum[(method, route)]:.6f}")
            lines.append(f"rankforge_http_request_duration_seconds_count{{{labels}}} {buckets[-1]}")
        for name, n in sorted(_counters.items()):
            lines += [f"# TYPE rankforge_{name} counter", f"rankforge_{name} {n}"]
    for name, (help_text, value) in sorted(gauges.items()):
        lines += [f"# HELP rankforge_{name} {help_text}", f"# TYPE rankforge_{name} gauge", f"rankforge_{name} {value}"]
    return "\n".join(lines) + "\n"
