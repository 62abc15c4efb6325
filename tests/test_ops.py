"""Operations endpoints: health check, Prometheus metrics, OpenAPI docs."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from tests.helpers import import_lines, make_project, native_lines

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """Strictly parse Prometheus text exposition: (metric family -> type, (name, labels) -> value)."""
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP "), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE line before it"
        key = (name, frozenset(LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client, scraper: dict) -> tuple[dict, dict]:
    """/metrics as a monitoring system reads it: with a staff API token (an anonymous scrape is refused)."""
    response = client.get("/metrics", headers=scraper["headers"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_prometheus(response.text)


# ---------------------------------------------------------------------------------------------------
# health


def test_healthz_reports_the_database_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("unreachable", ["sqlite-missing-dir", "postgresql-closed-port"])
def test_healthz_is_503_when_the_database_is_unreachable(monkeypatch, tmp_path, unreachable):
    from app.main import create_app

    url = (f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'rankforge.db'}" if unreachable.startswith("sqlite")
           else "postgresql+psycopg://postgres@127.0.0.1:9/rankforge?connect_timeout=3")  # fmt: skip
    monkeypatch.setenv("RANKFORGE_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            response = client.get("/healthz")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body == {"status": "unavailable", "database": "unavailable"}  # nothing about why (host, port, driver)


# ---------------------------------------------------------------------------------------------------
# metrics


def test_metrics_count_requests_with_a_latency_histogram(client, users):
    scraper = users.create("prom", "engineer")
    _, before = scrape(client, scraper)
    for _ in range(3):
        client.get("/healthz")
    client.get("/api/v1/projects")  # anonymous: 401
    types, after = scrape(client, scraper)

    assert types["rankforge_http_requests_total"] == "counter"
    assert types["rankforge_http_request_duration_seconds"] == "histogram"
    ok = {"method": "GET", "route": "/healthz", "status": "200"}
    assert (
        value(after, "rankforge_http_requests_total", **ok)
        - value(before, "rankforge_http_requests_total", **ok)
        == 3
    )
    refused = {"method": "GET", "route": "/api/v1/projects", "status": "401"}
    assert value(after, "rankforge_http_requests_total", **refused) - value(
        before, "rankforge_http_requests_total", **refused) == 1  # fmt: skip

    route = {"method": "GET", "route": "/healthz"}
    count = value(after, "rankforge_http_request_duration_seconds_count", **route)
    assert count - value(before, "rankforge_http_request_duration_seconds_count", **route) == 3
    assert value(after, "rankforge_http_request_duration_seconds_bucket", **route, le="+Inf") == count
    assert value(after, "rankforge_http_request_duration_seconds_sum", **route) > 0
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (name, labels), v in after.items()
        if name == "rankforge_http_request_duration_seconds_bucket" and dict(labels)["route"] == "/healthz"
    )  # fmt: skip
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "histogram buckets must be cumulative"
    # Unmatched paths share one label: a scanner cannot blow up the number of series.
    client.get("/no/such/path/12345")
    _, scanned = scrape(client, scraper)
    assert not any("12345" in dict(labels).get("route", "") for _, labels in scanned)


def test_metrics_gauges_follow_judgments_and_open_comparisons(client, users):
    admin, rater = users.create("alice", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], native_lines(3, ranking=False)).status_code == 200
    types, before = scrape(client, admin)
    assert types["rankforge_judgments"] == "gauge" and types["rankforge_open_comparisons"] == "gauge"
    assert value(before, "rankforge_judgments") == 0
    assert value(before, "rankforge_open_comparisons") == 3

    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    ids = [o["id"] for o in task["options"]]
    submitted = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                            json={"ranking": [[ids[0]], [ids[1]]]}, headers=rater["headers"])  # fmt: skip
    assert submitted.status_code == 201
    _, after = scrape(client, admin)
    assert value(after, "rankforge_judgments") == 1
    assert value(after, "rankforge_open_comparisons") == 2
    counter = "rankforge_judgments_submitted_total"
    assert value(after, counter) - value(before, counter) == 1


def test_imported_judgments_are_not_counted_as_human(client, users):
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(2, ranking=True))
    _, samples = scrape(client, admin)
    assert value(samples, "rankforge_judgments") == 0


# ---------------------------------------------------------------------------------------------------
# OpenAPI

CONTRACT = [
    ("post", "/api/v1/projects"), ("get", "/api/v1/projects"), ("get", "/api/v1/projects/{}"),
    ("get", "/api/v1/projects/{}/stats"), ("post", "/api/v1/projects/{}/import"),
    ("get", "/api/v1/projects/{}/tasks/next"), ("post", "/api/v1/assignments/{}/judgment"),
    ("post", "/api/v1/assignments/{}/skip"), ("post", "/api/v1/projects/{}/datasets"),
    ("get", "/api/v1/datasets/{}"), ("get", "/api/v1/datasets/{}/files/{}"), ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{}"), ("get", "/api/v1/jobs/{}/metrics"), ("post", "/api/v1/jobs/{}/cancel"),
    ("get", "/api/v1/models"), ("get", "/api/v1/projects/{}/leaderboard"), ("get", "/healthz"), ("get", "/metrics"),
]  # fmt: skip


@pytest.fixture(scope="module")
def openapi_operations() -> set[tuple[str, str]]:
    from app.main import create_app

    with TestClient(create_app()) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    return {
        (method, re.sub(r"\{[^}]+\}", "{}", path)) for path, item in spec["paths"].items() for method in item
    }


@pytest.mark.parametrize(("method", "path"), CONTRACT, ids=[f"{m} {p}" for m, p in CONTRACT])
def test_openapi_lists_the_contract(openapi_operations, method, path):
    assert (method, path) in openapi_operations


def test_docs_page_is_served():
    from app.main import create_app

    with TestClient(create_app()) as client:
        docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text
